"""medvision-sft: LoRA fine-tuning on MedVision with the harness's own data, tasks and protocol.

Checkpoints load back into ``medvision-eval`` as ``--model lora:PATH``.
"""

from __future__ import annotations

__version__ = "0.1.0"
