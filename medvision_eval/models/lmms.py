"""``lmms`` bridge: any lmms-eval model class runs as a medvision-eval adapter.

``--model lmms:<lmms-eval model name>`` or ``--model lmms:pkg.module:Class``; ``--model-args``
keys the bridge does not know are passed to the lmms-eval model (``pretrained=…,device=…``). Chat-protocol classes (``is_simple = False``) receive
``(ctx, doc_to_messages, gen_kwargs, doc_id, task, split)`` requests whose messages carry the
PIL images; simple-protocol classes receive ``(ctx, gen_kwargs, doc_to_visual, doc_id, task,
split)``. The bridge puts each request in the instance's ``task_dict`` as the "doc".

Optional extra, imported lazily. Install lean (never torchvision, never a CUDA torch)::

    pip install --no-deps lmms-eval==0.7.3 evaluate loguru pytz sacrebleu tenacity
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import model_validator

from ..schema import GenerationSettings, ImagePart, Request, Response, TextPart
from ._common import (
    AdapterSettings,
    SettingsAdapter,
    package_version,
    parse_settings,
    require_image,
    short_error,
    timer,
    to_chat,
    with_system,
)
from .errors import BackendNotInstalledError

INSTALL = "pip install --no-deps lmms-eval==0.7.3 evaluate loguru pytz sacrebleu tenacity"
TASK = "medvision_eval"


class LmmsSettings(AdapterSettings):
    model: str | None = None  # lmms-eval registry name (registry_v2 / manifests)
    class_path: str | None = None  # or "package.module:Class"
    model_args: str = ""  # passed to Class.create_from_arg_string, lmms-eval style "k=v,k2=v2"
    batch_size: int = 1
    force_simple: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> LmmsSettings:
        if bool(self.model) == bool(self.class_path):
            raise ValueError("give exactly one of model=<lmms-eval model name> or class_path=<module:Class>")
        return self


class LmmsAdapter(SettingsAdapter):
    backend: ClassVar[str] = "lmms"

    def __init__(self, **kwargs: Any) -> None:
        kwargs = self._route(kwargs)
        super().__init__(**kwargs)
        self.settings = parse_settings(LmmsSettings, "lmms", kwargs)
        self.default_batch_size = self.settings.batch_size  # type: ignore[misc]
        self._lm: Any = None
        self._cls: Any = None

    @staticmethod
    def _route(kwargs: dict[str, Any]) -> dict[str, Any]:
        """``--model lmms:pkg.mod:Class`` names a class; unknown keys are the lmms model's own args.

        So ``--model lmms:qwen2_5_vl --model-args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,device=cuda``
        works although ``--model-args`` is itself a comma-separated k=v list.
        """
        kwargs = dict(kwargs)
        model = kwargs.get("model")
        if isinstance(model, str) and ":" in model and not kwargs.get("class_path"):
            kwargs["class_path"] = kwargs.pop("model")
        own = set(LmmsSettings.model_fields)
        passthrough = {k: v for k, v in kwargs.items() if k not in own}
        if passthrough:
            extra = ",".join(f"{k}={v}" for k, v in passthrough.items())
            base = kwargs.get("model_args") or ""
            kwargs = {k: v for k, v in kwargs.items() if k in own}
            kwargs["model_args"] = f"{base},{extra}" if base else extra
        return kwargs

    def _class(self) -> Any:
        if self._cls is None:
            try:
                import lmms_eval.api.model  # noqa: F401
            except ImportError as e:
                raise BackendNotInstalledError(f"the lmms bridge needs lmms-eval: {INSTALL}") from e
            s = self.settings
            if s.class_path:
                mod, _, name = s.class_path.partition(":")
                self._cls = getattr(importlib.import_module(mod), name)
            else:
                from lmms_eval.models import get_model

                self._cls = get_model(s.model, force_simple=s.force_simple)
        return self._cls

    def preflight(self) -> None:
        """Instantiate the lmms-eval model (weights loaded) once, before any sample is sent."""
        from ._common import short_error
        from .errors import BackendNotInstalledError, ModelArgsError, ModelUnavailableError

        try:
            self.lm  # noqa: B018
        except (BackendNotInstalledError, ModelArgsError, ModelUnavailableError):
            raise
        except Exception as e:
            raise ModelUnavailableError(f"lmms-eval model could not load: {short_error(e, 2000)}") from e

    @property
    def lm(self) -> Any:
        if self._lm is None:
            cls = self._class()
            self._lm = cls.create_from_arg_string(self.settings.model_args, {"batch_size": self.settings.batch_size})
        return self._lm

    @property
    def is_chat(self) -> bool:
        return not getattr(self._class(), "is_simple", True)

    def identity(self) -> dict[str, Any]:
        s = self.settings
        return {"adapter": "lmms", "model": s.model, "class_path": s.class_path, "model_args": s.model_args,
                "system_prompt": s.system_prompt, "force_simple": s.force_simple}

    def info(self) -> dict[str, Any]:
        s = self.settings
        out = {"backend": "lmms", "lmms-eval": package_version("lmms-eval"), "model": s.model,
               "class_path": s.class_path, "batch_size": s.batch_size}
        if self._cls is not None:
            out["class"] = f"{self._cls.__module__}:{self._cls.__qualname__}"
            out["protocol"] = "chat" if self.is_chat else "simple"
        return out

    # -------------------------------------------------------------- requests -> lmms-eval
    @staticmethod
    def _chat_messages(request: Request, system_prompt: str | None) -> list[dict[str, Any]]:
        """lmms-eval ``ChatMessages`` dicts: images as ``{"type": "image", "url": PIL image}``."""
        return to_chat(with_system(request.messages, system_prompt), lambda image: {"type": "image", "url": image})

    @staticmethod
    def _gen_kwargs(g: GenerationSettings) -> dict[str, Any]:
        return {"max_new_tokens": g.max_new_tokens, "temperature": g.temperature, "top_p": g.top_p,
                "do_sample": g.temperature > 0, "until": []}

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        if not requests:
            return []
        try:
            from lmms_eval.api.instance import Instance

            lm, chat = self.lm, self.is_chat
        except Exception as e:
            return [Response(error=short_error(e)) for _ in requests]
        sp = self.settings.system_prompt
        docs = {i: r for i, r in enumerate(requests)}
        lm.task_dict = {TASK: {"test": docs}}
        instances = []
        for i, r in enumerate(requests):
            gk = self._gen_kwargs(r.generation)
            ctx = "".join(p.text for m in r.messages for p in m.content if isinstance(p, TextPart))
            if chat:
                args = (ctx, lambda doc: self._chat_messages(doc, sp), gk, i, TASK, "test")
            else:
                if sp:
                    ctx = f"{sp}\n{ctx}"
                args = (ctx, gk, lambda doc: [require_image(p) for m in doc.messages for p in m.content
                                              if isinstance(p, ImagePart)], i, TASK, "test")
            instances.append(Instance(request_type="generate_until", arguments=args, idx=0,
                                      metadata={"task": TASK, "doc_id": i, "repeats": 1}))
        try:
            with timer() as t:
                texts = lm.generate_until(instances)
        except Exception as e:
            return [Response(error=short_error(e)) for _ in requests]
        if len(texts) != len(requests):
            return [Response(error=f"lmms model returned {len(texts)} answers for {len(requests)} requests")
                    for _ in requests]
        per = t[0] / len(requests)
        return [Response(text=str(x), latency_s=per) if x is not None else Response(error="no answer") for x in texts]
