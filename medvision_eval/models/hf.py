"""``hf`` backend: transformers image-text-to-text models, batched greedy generation.

``AutoProcessor`` (through :func:`processors.load_processor`, which keeps Qwen-family image
processors working without torchvision) + ``AutoModelForImageTextToText``, the model's own
chat template, left padding, only the new tokens decoded.

Data parallel: under ``accelerate launch`` the runner gives each rank its share of samples;
this adapter puts its copy of the model on the local rank's device (``accelerate.PartialState``,
falling back to ``LOCAL_RANK``). ``device_map=auto`` instead spreads one copy over all visible
GPUs (model parallel, one process).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..schema import Request, Response, Usage
from ._common import (
    AdapterSettings,
    SettingsAdapter,
    package_version,
    parse_settings,
    short_error,
    timer,
    to_hf_chat,
    with_system,
)
from ..schema import PerceivedGeometry
from .errors import BackendNotInstalledError, ModelArgsError, ModelUnavailableError
from .geometry import GeometrySpec, perceive, spec_from_hf

_FULL_HASH_LIMIT = 64 * 2**20  # hash files up to 64 MiB fully, larger ones by name and size


class HFSettings(AdapterSettings):
    pretrained: str
    revision: str | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device_map: str | None = None  # e.g. "auto" to spread one model over all GPUs
    device: str | None = None  # explicit device ("cpu", "cuda:1"); default: local rank's device
    attn_implementation: str | None = None  # "sdpa", "flash_attention_2", "eager"
    batch_size: int = 1
    trust_remote_code: bool = False


def local_fingerprint(path: str) -> str | None:
    """Content hash of a local model folder (configs, tokenizer, template, weights)."""
    root = Path(path)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        if size <= _FULL_HASH_LIMIT:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def resolve_device(explicit: str | None) -> str:
    """Device for this process's model copy: explicit, accelerate's local rank, else cuda/cpu."""
    if explicit:
        return explicit
    import torch

    if os.environ.get("LOCAL_RANK") is not None or os.environ.get("ACCELERATE_DYNAMO_BACKEND") is not None:
        try:
            from accelerate import PartialState

            return str(PartialState().device)
        except ImportError:  # pragma: no cover - accelerate is a dependency of the hf extra
            if torch.cuda.is_available():
                return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_folder_exists(pretrained: str) -> None:
    """``pretrained`` written as a path (``/``, ``./``, ``../``, ``~``) must be an existing folder."""
    if pretrained.startswith(("/", "./", "../", "~")) and not Path(pretrained).expanduser().exists():
        raise ModelArgsError(f"pretrained={pretrained}: no such folder; give an existing model folder "
                             "or a hub id (e.g. Qwen/Qwen2.5-VL-7B-Instruct)")


class HFAdapter(SettingsAdapter):
    backend: ClassVar[str] = "hf"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = parse_settings(HFSettings, "hf", kwargs)
        self.default_batch_size = self.settings.batch_size  # type: ignore[misc]
        self._processor: Any = None
        self._model: Any = None
        self._config: Any = None
        self._device: str | None = None
        self._fingerprint = local_fingerprint(self.settings.pretrained)
        self._load_error: BaseException | None = None  # loading failed once: never retried per batch

    # -------------------------------------------------------------- preflight
    def preflight(self) -> None:
        """Load config, processor and weights once, before any sample is sent. A missing local
        folder is a ModelArgsError; any loading failure a ModelUnavailableError with the real error."""
        s = self.settings
        path = Path(s.pretrained).expanduser()
        check_folder_exists(s.pretrained)
        try:
            if not path.exists():  # a hub id: reach the hub (or its cache) before importing torch
                try:
                    from huggingface_hub import hf_hub_download
                except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
                    pass
                else:
                    hf_hub_download(s.pretrained, "config.json", revision=s.revision)
            self.processor  # noqa: B018 - loads config and processor
            self.model  # noqa: B018 - loads the weights
        except (BackendNotInstalledError, ModelUnavailableError):
            raise
        except Exception as e:
            self._load_error = e
            offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v, "").lower() in ("1", "true", "yes")]
            hint = f" ({'='.join((offline[0], os.environ[offline[0]]))}: only the local hub cache is used)" if offline else ""
            raise ModelUnavailableError(f"could not load {s.pretrained}: {short_error(e, 2000)}{hint}") from e

    def _check_loadable(self) -> None:
        error = getattr(self, "_load_error", None)  # subclasses may build their own state
        if error is not None:
            raise ModelUnavailableError(f"{self.settings.pretrained} failed to load earlier: {short_error(error, 2000)}")

    # -------------------------------------------------------------- loading
    def _load_config(self) -> Any:
        if self._config is None:
            self._check_loadable()
            try:
                from transformers import AutoConfig
            except ImportError as e:  # pragma: no cover
                raise BackendNotInstalledError("the hf backend needs transformers: pip install 'medvision-eval[hf]'") from e
            s = self.settings
            self._config = AutoConfig.from_pretrained(
                s.pretrained, revision=s.revision, trust_remote_code=s.trust_remote_code
            )
        return self._config

    @property
    def model_type(self) -> str:
        return str(self._load_config().model_type)

    @property
    def processor(self) -> Any:
        if self._processor is None:
            self._check_loadable()
            from .processors import load_processor

            s = self.settings
            proc = load_processor(
                s.pretrained, model_type=self.model_type, revision=s.revision, trust_remote_code=s.trust_remote_code
            )
            proc.tokenizer.padding_side = "left"
            if proc.tokenizer.pad_token is None:
                proc.tokenizer.pad_token = proc.tokenizer.eos_token
            self._processor = proc
        return self._processor

    @property
    def model(self) -> Any:
        if self._model is None:
            self._check_loadable()
            import torch
            from transformers import AutoModelForImageTextToText

            s = self.settings
            kwargs: dict[str, Any] = {"revision": s.revision, "trust_remote_code": s.trust_remote_code}
            kwargs["dtype"] = "auto" if s.dtype == "auto" else getattr(torch, s.dtype)
            if s.attn_implementation:
                kwargs["attn_implementation"] = s.attn_implementation
            if s.device_map:
                kwargs["device_map"] = s.device_map
            model = AutoModelForImageTextToText.from_pretrained(s.pretrained, **kwargs)
            if not s.device_map:
                self._device = resolve_device(s.device)
                model = model.to(self._device)
            else:
                self._device = str(getattr(model, "device", "?"))
            self._model = model.eval()
        return self._model

    def geometry_spec(self) -> GeometrySpec:
        return self.settings.geometry_spec() or spec_from_hf(self.model_type, self.processor.image_processor)

    # -------------------------------------------------------------- contract
    def identity(self) -> dict[str, Any]:
        s = self.settings
        ident: dict[str, Any] = {
            "adapter": "hf",
            "pretrained": s.pretrained,
            "revision": s.revision,
            "dtype": s.dtype,
            "system_prompt": s.system_prompt,
            "trust_remote_code": s.trust_remote_code,
        }
        if self._fingerprint:
            ident["local_content"] = self._fingerprint
        return ident

    def perceived_geometry(self, width: int, height: int) -> PerceivedGeometry:
        return perceive(self.geometry_spec(), width, height)

    def info(self) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {
            "backend": "hf",
            "transformers": package_version("transformers"),
            "torch": package_version("torch"),
            "accelerate": package_version("accelerate"),
            "pretrained": s.pretrained,
            "revision": s.revision,
            "dtype": s.dtype,
            "batch_size": s.batch_size,
            "device_map": s.device_map,
            "attn_implementation": s.attn_implementation,
        }
        if self._model is not None:
            out["device"] = self._device
            out["loaded_dtype"] = str(getattr(self._model, "dtype", ""))
        if self._processor is not None:
            out["processor"] = type(self._processor).__name__
            out["image_processor"] = type(self._processor.image_processor).__name__
            out["geometry"] = self.geometry_spec().describe()
        return out

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        out: list[Response] = []
        bs = max(1, self.settings.batch_size)
        for i in range(0, len(requests), bs):
            chunk = list(requests[i : i + bs])
            try:
                out.extend(self._generate_batch(chunk))
            except ModelUnavailableError:
                raise  # the model cannot load: stop the run, never retry per request
            except Exception as e:  # one bad request must not sink the others: retry one by one
                if len(chunk) == 1:
                    out.append(Response(error=short_error(e)))
                    continue
                for r in chunk:
                    try:
                        out.extend(self._generate_batch([r]))
                    except ModelUnavailableError:
                        raise
                    except Exception as e1:
                        out.append(Response(error=short_error(e1)))
        return out

    def _generate_batch(self, requests: list[Request]) -> list[Response]:
        import torch

        gen = requests[0].generation
        if any(r.generation != gen for r in requests):
            return [self._generate_batch([r])[0] for r in requests]
        convs = [to_hf_chat(with_system(r.messages, self.settings.system_prompt)) for r in requests]
        processor, model = self.processor, self.model
        with timer() as t:
            inputs = processor.apply_chat_template(
                convs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
                processor_kwargs={"padding": True},
            )
            inputs = inputs.to(model.device)
            if "pixel_values" in inputs and torch.is_floating_point(inputs["pixel_values"]):
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            kw: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens}
            if gen.temperature > 0:
                kw.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p)
                if gen.seed is not None:
                    torch.manual_seed(gen.seed)
            else:
                kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                seqs = model.generate(**inputs, **kw)
        n_in = inputs["input_ids"].shape[1]
        new = seqs[:, n_in:]
        texts = processor.batch_decode(new, skip_special_tokens=True)
        pad_id = processor.tokenizer.pad_token_id
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        per = t[0] / len(requests)
        out = []
        for row, text, mask in zip(new.tolist(), texts, inputs["attention_mask"]):
            n = 0
            for tok in row:
                if tok == pad_id and tok not in eos_ids:
                    break
                n += 1
                if tok in eos_ids:
                    break
            out.append(Response(text=text, latency_s=per, usage=Usage(prompt_tokens=int(mask.sum()), completion_tokens=n)))
        return out

    def close(self) -> None:
        self._model = None
        self._processor = None
