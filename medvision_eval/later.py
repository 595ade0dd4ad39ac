"""Facts of the later official MedVision code (after the paper's commit c221615), each with the
commit of YongchengYAO/MedVision it was read from. Used by the MedVision-V0-7B preset and the
LLM-judge re-parse (:mod:`medvision_eval.judge`); docs/tasks.md lists them with the differences.
"""

from __future__ import annotations

# -- generation budgets (docs/model-token-budget.md @ be2ab7e, audited on 09206a2) -------------
# Launchers default max_new_tokens to 4096 for local models and 16000 for API models.
LATER_MAX_NEW_TOKENS_LOCAL = 4096
LATER_MAX_NEW_TOKENS_API = 16000
LATER_BUDGET_COMMIT = "be2ab7e"

# -- MedVision-V0-7B (src/medvision_bm/benchmark/eval__medvision-model-rft.py @ 742c484,
#    src/medvision_bm/rft/verl/rft_prompts.py @ f1102c5, the V0 launchers: reshape 512x512,
#    batch 10 per GPU, --use_system_prompt) --------------------------------------------------
MEDVISION_V0_HUB_ID = "YongchengYAO/MedVision-V0-7B"
MEDVISION_V0_INPUT_HW = "512x512"
MEDVISION_V0_COMMITS = {"eval__medvision-model-rft.py": "742c484", "rft_prompts.py": "f1102c5"}
# The verl RFT system prompt (exact official string, rft_prompts.SYSTEM_PROMPT).
RFT_SYSTEM_PROMPT = (
    "A conversation between a User and an Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks through the reasoning process internally, then provides the User with the answer. "
    "The reasoning process and the final answer must be enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively. For example: <think> reasoning process here </think> <answer> answer here </answer>. "
    "Within the <think> </think> tags, report the reasoning process for each step inside <step-k-reasoning> "
    "</step-k-reasoning> tags, followed by the intermediate results in <step-k-answer> </step-k-answer> tags. "
    "For example: <think> <step-1-reasoning> reasoning for step 1 </step-1-reasoning> <step-1-answer> "
    "intermediate result from step 1 </step-1-answer> </think>."
)

# -- LLM-judge re-parse (script/llm-parsing/*.py @ 2f20f64) -------------------------------------
JUDGE_COMMIT = "2f20f64"
JUDGE_DEFAULT_MODEL = "google/gemma-4-31B-it"  # judge_config.JUDGE_MODELS["gemma-4-31b"]
JUDGE_TEMPERATURE = 0.0
JUDGE_TOP_P = 1.0
JUDGE_SEED = 1024
JUDGE_MAX_TOKENS = 4096  # DEFAULT_JUDGE_MAX_TOKENS, every task
RESPONSE_WINDOW_TRIGGER = 8000  # characters; longer responses are shown head + tail
RESPONSE_WINDOW_HEAD = 2000
RESPONSE_WINDOW_TAIL = 6000
MAX_ANSWER_SPAN_CHARS = 200
MIN_SPAN_CONTEXT_CHARS = 12


# -- the later parser (parse_utils.extract_last_k_nums_within_answer_tag and _NUM_RE; the judge's
#    judge_io.py @ 2f20f64 mirrors both byte for byte): the last k numbers inside the first
#    <answer>...</answer> block; a number may carry a sign, thousands separators (stripped), a
#    decimal part and an exponent; values are np.float32 as v1 converted them.
import re as _re

ANSWER_BLOCK = _re.compile(r"<answer>(.*?)</answer>", _re.DOTALL)
NUM_RE = _re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def find_numbers(text: str | None) -> list[str]:
    return [m.replace(",", "") for m in NUM_RE.findall(text or "")]


def parse_answer_last_k(text: str | None, k: int):
    """The later official strict parser as a :class:`~medvision_eval.schema.Prediction`."""
    import numpy as np

    from .schema import ParseStatus, Prediction

    from .tasks.parsing import answer_body, overflows

    if not text or not text.strip():
        return Prediction(status=ParseStatus.missing, detail="empty answer")
    body = answer_body(text, ignore_case=False)  # = ANSWER_BLOCK.search, in linear time
    if body is None:
        return Prediction(status=ParseStatus.malformed, detail="no <answer>...</answer> block")
    numbers = find_numbers(body)
    if len(numbers) < k:
        return Prediction(status=ParseStatus.malformed, detail=f"{len(numbers)} numbers in <answer>, {k} needed")
    with np.errstate(over="ignore"):
        values = tuple(float(np.float32(n)) for n in numbers[-k:])
    if any(overflows(v) for v in values):  # float32 inf would be "ok" and poison every mean
        return Prediction(status=ParseStatus.malformed, detail="number overflows float32")
    return Prediction(status=ParseStatus.ok, values=values)
