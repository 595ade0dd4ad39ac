"""``lora`` backend: a LoRA checkpoint written by ``medvision-sft``, evaluated like any model.

``--model lora:PATH`` reads ``PATH/medvision_checkpoint.json`` (the manifest), loads the base
model the checkpoint was trained on (same hub id / folder, revision, dtype and preset settings),
applies the adapter with peft, and sends messages in the order the checkpoint was trained in
(``image_first``). Everything is checked before the first sample: the manifest and adapter
files exist and match their recorded sizes and hashes, a local base folder has the content the
checkpoint was trained on, and the base processor has the tokenizer and chat template it was
trained with. A mismatch is a :class:`CheckpointError` naming the file or the base.

``backend=vllm`` serves the adapter with vLLM's LoRA support (``enable_lora`` +
``LoRARequest``). vLLM cannot serve ``modules_to_save`` (the trained LM head and embeddings,
the default of ``medvision-sft``; vllm-project/vllm#9280): such a checkpoint needs
``medvision-sft merge`` first, and the error says so.

Checkpoints under ``$MEDVISION_CHECKPOINTS`` (a directory, or several joined with ``:``) are
listed by ``medvision-eval list models`` as ``lora:<folder name>``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..hookspecs import ModelEntry
from ..schema import Message, Request, Response, arrange_messages
from ._common import package_version, parse_settings, short_error
from .errors import BackendNotInstalledError, ModelArgsError
from .hf import HFAdapter, HFSettings, check_folder_exists, local_fingerprint

MANIFEST = "medvision_checkpoint.json"
MANIFEST_FORMAT = "medvision-lora/1"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CHECKPOINTS_ENV = "MEDVISION_CHECKPOINTS"
_HASH_LIMIT = 512 * 2**20  # files up to 512 MiB are hashed fully, larger ones checked by size


class CheckpointError(ModelArgsError):
    """A checkpoint is incomplete or does not fit its base model / processor."""


class BaseModelRecord(BaseModel):
    """The model a checkpoint was trained on, as the harness loads it on the hf backend."""

    model_config = ConfigDict(extra="allow")

    name: str  # what --model named when training (preset or "hf")
    pretrained: str  # hub id or local folder
    revision: str | None = None
    model_type: str
    local_content: str | None = None  # content hash of a local folder (hf.local_fingerprint)
    hf_args: dict[str, Any] = Field(default_factory=dict)  # HFSettings arguments (dtype, system_prompt, ...)


class Manifest(BaseModel):
    """``medvision_checkpoint.json``: what a checkpoint is and how it was made."""

    model_config = ConfigDict(extra="allow")

    format: str = MANIFEST_FORMAT
    base: BaseModelRecord
    image_first: bool
    protocol: str
    tasks: list[str]
    configs: list[str] = Field(default_factory=list)
    loss: Literal["answer", "full"] = "answer"
    processor: dict[str, str] = Field(default_factory=dict)  # tokenizer / template hashes
    files: dict[str, dict[str, Any]] = Field(default_factory=dict)  # name -> {size, sha256}
    data: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, Any] = Field(default_factory=dict)
    losses: dict[str, Any] = Field(default_factory=dict)
    modules_to_save: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------- helpers
def file_record(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    rec: dict[str, Any] = {"size": size}
    if size <= _HASH_LIMIT:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        rec["sha256"] = h.hexdigest()
    return rec


def processor_hashes(processor: Any) -> dict[str, str]:
    """Hashes of what decides the token sequence a model sees: vocabulary and chat template."""
    tok = processor.tokenizer
    vocab = sorted(tok.get_vocab().items())
    template = getattr(processor, "chat_template", None) or getattr(tok, "chat_template", None) or ""
    if isinstance(template, dict):
        template = json.dumps(template, sort_keys=True)
    return {
        "vocab": hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16],
        "chat_template": hashlib.sha256(str(template).encode()).hexdigest()[:16],
    }


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of checkpoint folder ``path``; a clear :class:`CheckpointError` otherwise."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"lora checkpoint {str(root)!r} is not a directory")
    mf = root / MANIFEST
    if not mf.is_file():
        hint = ""
        if (root / "final" / MANIFEST).is_file():
            hint = f"; did you mean {str(root / 'final')!r}?"
        raise CheckpointError(f"lora checkpoint {str(root)!r}: missing file {MANIFEST}{hint}")
    try:
        manifest = Manifest.model_validate(json.loads(mf.read_text(encoding="utf-8")))
    except ValidationError as exc:  # one line: field: problem; field: problem
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors())
        raise CheckpointError(f"lora checkpoint {str(mf)!r}: unreadable manifest: {problems}") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f"lora checkpoint {str(mf)!r}: unreadable manifest: {exc}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise CheckpointError(f"{str(mf)!r}: format {manifest.format!r}, expected {MANIFEST_FORMAT!r}")
    return manifest


def check_files(path: str | Path, manifest: Manifest) -> None:
    """Every adapter file is present and has the size (and hash) the manifest recorded."""
    root = Path(path)
    for name in ADAPTER_FILES:
        if not (root / name).is_file():
            raise CheckpointError(f"lora checkpoint {str(root)!r}: missing file {name}")
    for name, rec in manifest.files.items():
        f = root / name
        if not f.is_file():
            raise CheckpointError(f"lora checkpoint {str(root)!r}: missing file {name}")
        got = file_record(f) if rec.get("sha256") else {"size": f.stat().st_size}
        if got.get("size") != rec.get("size") or (rec.get("sha256") and got.get("sha256") != rec["sha256"]):
            raise CheckpointError(
                f"lora checkpoint {str(root)!r}: file {name} does not match its manifest "
                f"(size {got.get('size')} vs {rec.get('size')}); the checkpoint was modified or copied incompletely"
            )


def arrange(messages: Sequence[Message], image_first: bool) -> list[Message]:
    """Messages in the checkpoint's order (the harness-wide :func:`~medvision_eval.schema.arrange_messages`;
    idempotent, so requests the planner already arranged stay as they are)."""
    return arrange_messages(messages, image_first)


# ------------------------------------------------------------------------------------- adapter
class LoRASettings(HFSettings):
    path: str
    pretrained: str = ""  # default: the base recorded in the manifest
    backend: Literal["hf", "vllm"] = "hf"
    image_first: bool | None = None  # default: the order the checkpoint was trained in
    # vllm backend only
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None


# The base's recorded settings a checkpoint inherits; its message order comes from the manifest.
_BASE_ARG_KEYS = set(HFSettings.model_fields) - {"pretrained", "image_first"}


class LoRAAdapter(HFAdapter):
    """A LoRA checkpoint on the hf backend (or vLLM with ``backend=vllm``)."""

    backend: ClassVar[str] = "lora"

    def __init__(self, **kwargs: Any) -> None:
        path = kwargs.get("path")
        if not path:
            raise ModelArgsError("lora needs a checkpoint folder: --model lora:PATH")
        manifest = read_manifest(path)
        check_files(path, manifest)
        # The base model's settings as recorded (preset dtype, system prompt, geometry, ...),
        # then what the user passes now.
        base_args = {k: v for k, v in manifest.base.hf_args.items() if k in _BASE_ARG_KEYS}
        merged = {**base_args, **kwargs}
        self.args = dict(kwargs)
        self.settings = parse_settings(LoRASettings, "lora", merged)
        s = self.settings
        pretrained = s.pretrained or manifest.base.pretrained
        self.settings = s.model_copy(update={"pretrained": pretrained})
        self.manifest = manifest
        self.path = str(Path(path).resolve())
        self._image_first = manifest.image_first if s.image_first is None else bool(s.image_first)
        self.default_batch_size = s.batch_size  # type: ignore[misc]
        self._processor = None
        self._model = None
        self._config = None
        self._device = None
        self._llm: Any = None
        self._fingerprint = local_fingerprint(pretrained)
        self._check_base()

    @property
    def image_first(self) -> bool:
        """The order the checkpoint was trained in (manifest), unless ``image_first=`` overrides it."""
        return self._image_first

    # -------------------------------------------------------------- checks before any sample
    def _check_base(self) -> None:
        m, pretrained = self.manifest, self.settings.pretrained
        is_local = Path(pretrained).is_dir()
        if m.base.local_content and is_local and self._fingerprint != m.base.local_content:
            raise CheckpointError(
                f"lora checkpoint {self.path!r} was trained on base {m.base.pretrained!r} (content "
                f"{m.base.local_content}); base {pretrained!r} has content {self._fingerprint}: wrong base model"
            )
        if not is_local and m.base.local_content and pretrained == m.base.pretrained:
            raise CheckpointError(
                f"lora checkpoint {self.path!r}: its base folder {pretrained!r} does not exist here; "
                "pass the base with --model-args pretrained=PATH"
            )
        try:
            check_folder_exists(pretrained)
        except ModelArgsError as exc:
            raise CheckpointError(f"lora checkpoint {self.path!r}: base {exc}") from None
        if m.base.revision and self.settings.revision and m.base.revision != self.settings.revision:
            raise CheckpointError(
                f"lora checkpoint {self.path!r} was trained on {m.base.pretrained}@{m.base.revision}, "
                f"not revision {self.settings.revision}"
            )
        try:
            model_type = self.model_type
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"lora checkpoint {self.path!r}: cannot read base model {pretrained!r}: {exc}") from None
        if model_type != m.base.model_type:
            raise CheckpointError(
                f"lora checkpoint {self.path!r} was trained on a {m.base.model_type} model; base "
                f"{pretrained!r} is {model_type}: wrong base model"
            )
        if self.settings.backend == "hf" and m.processor:
            got = processor_hashes(self.processor)
            for key, want in m.processor.items():
                if got.get(key) != want:
                    raise CheckpointError(
                        f"lora checkpoint {self.path!r}: the processor of base {pretrained!r} differs from the one "
                        f"it was trained with ({key} hash {got.get(key)} vs {want})"
                    )
        if self.settings.backend == "vllm" and m.modules_to_save:
            raise CheckpointError(
                f"lora checkpoint {self.path!r} trains {', '.join(m.modules_to_save)} (modules_to_save), which "
                "vLLM's LoRA support cannot serve (vllm-project/vllm#9280). Merge it first: "
                f"medvision-sft merge {self.path} MERGED && medvision-eval --model vllm --model-args "
                "pretrained=MERGED,image_first=... ; or train with --no-save-embeddings"
            )

    # -------------------------------------------------------------- loading (hf)
    @property
    def model(self) -> Any:
        if self._model is None:
            base = HFAdapter.model.fget(self)  # type: ignore[attr-defined]
            try:
                from peft import PeftModel
            except ImportError as e:  # pragma: no cover - peft is in the sft/test extras
                raise BackendNotInstalledError("lora checkpoints need peft: pip install 'medvision-eval[sft]'") from e
            self._model = PeftModel.from_pretrained(base, self.path).eval()
        return self._model

    # -------------------------------------------------------------- contract
    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident.update({
            "adapter": "lora",
            "checkpoint": {k: v.get("sha256", v.get("size")) for k, v in sorted(self.manifest.files.items())},
            "base": self.manifest.base.pretrained,
            "image_first": self.image_first,
            "backend": self.settings.backend,
        })
        return ident

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update({"backend": f"lora/{self.settings.backend}", "checkpoint": self.path, "peft": package_version("peft"),
                    "image_first": self.image_first, "trained_protocol": self.manifest.protocol,
                    "trained_tasks": self.manifest.tasks})
        return out

    def _arranged(self, requests: Sequence[Request]) -> list[Request]:
        return [r.model_copy(update={"messages": arrange(r.messages, self.image_first)}) for r in requests]

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        requests = self._arranged(requests)
        if self.settings.backend == "vllm":
            return self._generate_vllm(requests)
        return super().generate(requests)

    # -------------------------------------------------------------- vLLM
    def _vllm_engine(self) -> tuple[Any, Any]:
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise BackendNotInstalledError(
                "vllm is not installed: pip install 'medvision-eval[vllm]' on a GPU machine, or use backend=hf"
            ) from e
        if self._llm is None:
            s = self.settings
            rank = int(self.manifest.hyperparameters.get("lora_r", 16))
            kw: dict[str, Any] = {
                "model": s.pretrained, "dtype": "auto" if s.dtype == "auto" else s.dtype, "enable_lora": True,
                "max_lora_rank": rank, "max_loras": 1, "tensor_parallel_size": s.tensor_parallel_size,
                "gpu_memory_utilization": s.gpu_memory_utilization, "limit_mm_per_prompt": {"image": 1},
                "trust_remote_code": s.trust_remote_code,
            }
            if s.revision:
                kw["revision"] = s.revision
            if s.max_model_len:
                kw["max_model_len"] = s.max_model_len
            self._llm = vllm.LLM(**kw)
            self._lora_request = LoRARequest(Path(self.path).name or "lora", 1, self.path)
        return vllm, self._llm

    def _generate_vllm(self, requests: Sequence[Request]) -> list[Response]:
        from .vllm import chat_in_groups

        if not requests:
            return []
        try:
            vllm, llm = self._vllm_engine()
        except Exception as e:
            return [Response(error=short_error(e)) for _ in requests]
        return chat_in_groups(vllm, llm, requests, self.settings.system_prompt, lora_request=self._lora_request)

    def close(self) -> None:
        super().close()
        self._llm = None


# ------------------------------------------------------------------------------------- registry
def checkpoint_dirs() -> list[Path]:
    """Folders named by ``$MEDVISION_CHECKPOINTS`` (``:``-separated)."""
    raw = os.environ.get(CHECKPOINTS_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def find_checkpoints(roots: Sequence[Path] | None = None, max_depth: int = 3) -> list[Path]:
    """Checkpoint folders (holding a manifest) under ``roots``, at most ``max_depth`` levels down."""
    found: list[Path] = []
    for root in checkpoint_dirs() if roots is None else roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            depth = len(Path(dirpath).relative_to(root).parts)
            if MANIFEST in filenames:
                found.append(Path(dirpath))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not d.startswith("checkpoint-"))
            if depth >= max_depth:
                dirnames[:] = []
    return sorted(set(found))


def lora_entries() -> list[ModelEntry]:
    """The ``lora`` backend plus one ``lora:<name>`` entry per checkpoint found."""
    target = "medvision_eval.models.lora:LoRAAdapter"
    out = [ModelEntry(name="lora", target=target, backend="lora", extra="sft",
                      requires=("torch", "transformers", "peft"), suffix_arg="path",
                      description=f"a medvision-sft LoRA checkpoint: lora:PATH (listed from ${CHECKPOINTS_ENV})")]
    seen: set[str] = set()
    for path in find_checkpoints():
        name = f"lora:{path.name}" if path.name not in ("final",) else f"lora:{path.parent.name}"
        if name in seen:
            name = f"lora:{path}"
        seen.add(name)
        try:
            m = read_manifest(path)
            desc = f"{path} — base {m.base.pretrained}, tasks {','.join(m.tasks)}, image_first={m.image_first}"
        except CheckpointError as exc:
            desc = f"{path} — unusable: {exc}"
        out.append(ModelEntry(name=name, target=target, backend="lora", extra="sft",
                              requires=("torch", "transformers", "peft"), defaults={"path": str(path)},
                              description=desc))
    return out
