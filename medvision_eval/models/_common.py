"""Helpers shared by the real backends: typed ``--model-args``, message conversion, timing."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..schema import GenerationSettings, ImagePart, Message, Request, Response, TextPart
from .base import ModelAdapter, PerceivedGeometry
from .errors import ModelArgsError, ModelUnavailableError
from .geometry import GeometrySpec, named, perceive

S = TypeVar("S", bound="AdapterSettings")


class AdapterSettings(BaseModel):
    """Base of every adapter's ``--model-args``: strings are cast, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Decoding (greedy by default, as the paper ran).
    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    # Optional system message put before the task's messages.
    system_prompt: str | None = None
    # Perceived-geometry family name (models/geometry.py NAMED); None = adapter default.
    geometry: str | None = None
    # Message order: image parts before text parts (ModelAdapter.image_first).
    image_first: bool = False
    # Resize every slice to HxW before the model sees it (official reshape_image_hw; ModelAdapter.input_hw).
    reshape_image_hw: str | None = None

    @field_validator("reshape_image_hw")
    @classmethod
    def _valid_hw(cls, v: str | None) -> str | None:
        from .base import parse_hw

        hw = parse_hw(v)
        return None if hw is None else f"{hw[0]}x{hw[1]}"

    @field_validator("geometry")
    @classmethod
    def _known_geometry(cls, v: str | None) -> str | None:
        if v is not None:
            named(v)
        return v

    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)

    def geometry_spec(self) -> GeometrySpec | None:
        return named(self.geometry) if self.geometry else None


def parse_settings(cls: type[S], adapter: str, kwargs: dict[str, Any]) -> S:
    """Validate ``--model-args`` into ``cls``; clear errors naming the adapter and valid keys."""
    valid = sorted(cls.model_fields)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ModelArgsError(
            f"unknown model argument(s) for {adapter!r}: {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    try:
        return cls(**kwargs)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ModelArgsError(f"bad model argument(s) for {adapter!r}: {msgs}") from None


def json_arg(v: Any) -> Any:
    """``--model-args`` values arrive as strings; JSON-decode dicts/lists given as text."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError as e:
            raise ValueError(f"expected JSON, got {v!r}: {e}") from None
    return v


def with_system(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    msgs = list(messages)
    if system_prompt and not any(m.role == "system" for m in msgs):
        msgs.insert(0, Message(role="system", content=[TextPart(text=system_prompt)]))
    return msgs


def require_image(part: ImagePart) -> Any:
    if part.image is None:
        raise ValueError(f"image {part.ref!r} has no pixels attached")
    return part.image.convert("RGB") if getattr(part.image, "mode", "RGB") != "RGB" else part.image


def png_base64(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def to_chat(messages: Sequence[Message], image_entry: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as role/content dicts, order kept; ``image_entry(pil_image)`` renders an image."""
    out = []
    for m in messages:
        content = [
            {"type": "text", "text": p.text} if isinstance(p, TextPart) else image_entry(require_image(p))
            for p in m.content
        ]
        out.append({"role": m.role, "content": content})
    return out


def to_hf_chat(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """HF chat-template content lists: {"type": "text"|"image", ...}."""
    return to_chat(messages, lambda image: {"type": "image", "image": image})


def to_openai_chat(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """OpenAI chat messages; images as base64 PNG data URLs."""
    return to_chat(
        messages, lambda image: {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png_base64(image)}"}}
    )


def images_of(request: Request) -> list[Any]:
    return [require_image(p) for m in request.messages for p in m.content if isinstance(p, ImagePart)]


@contextmanager
def timer() -> Iterator[list[float]]:
    box = [0.0]
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - t0


def short_error(e: BaseException, limit: int = 500) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


class SettingsAdapter(ModelAdapter):
    """An adapter configured by an :class:`AdapterSettings` model (``self.settings``): its decoding
    settings and the geometry it perceives come from there."""

    settings: AdapterSettings

    def generation_settings(self) -> GenerationSettings:
        return self.settings.generation()

    def perceived_geometry(self, width: int, height: int) -> PerceivedGeometry:
        spec = self.settings.geometry_spec()
        return perceive(spec, width, height) if spec else PerceivedGeometry.identity(width, height)


class RemoteAdapter(SettingsAdapter):
    """An adapter for a remote endpoint: a batch's requests go out concurrently (``concurrency``),
    and a failure threshold (``failure_threshold``: a count of consecutive failures when >= 1,
    else a failed fraction after 10 requests) turns a failing endpoint into
    :class:`ModelUnavailableError`, which carries the batch's answers so the runner keeps them.

    Subclasses create ``self._lock`` (a ``threading.Lock``) in ``__init__`` and implement
    ``_answer(request) -> Response`` (never raising) and ``_unavailable_message()``.
    """

    _lock: threading.Lock

    _answered = 0
    _failed = 0
    _consecutive = 0
    _last_error = ""

    def _answer(self, request: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def _unavailable_message(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        results: list[Response | None] = [None] * len(requests)
        stop = threading.Event()

        def one(i: int) -> None:
            if stop.is_set():
                return
            results[i] = self._answer(requests[i])
            self._account(results[i], stop)

        with ThreadPoolExecutor(max_workers=max(1, self.settings.concurrency)) as pool:
            futures = [pool.submit(one, i) for i in range(len(requests))]
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                f.result()
        if stop.is_set():
            err = ModelUnavailableError(self._unavailable_message())
            err.responses = results  # type: ignore[attr-defined]  # answered ones (None = not sent)
            raise err
        return [r if r is not None else Response(error="not sent") for r in results]

    def _account(self, r: Response | None, stop: threading.Event) -> None:
        if r is None:
            return
        th = self.settings.failure_threshold
        with self._lock:
            self._answered += 1
            if r.error is None:
                self._consecutive = 0
                return
            self._failed += 1
            self._consecutive += 1
            self._last_error = r.error
            if th >= 1:
                tripped = self._consecutive >= th
            else:
                tripped = self._answered >= 10 and self._failed / self._answered >= th
            if tripped:
                stop.set()

    def _failure_summary(self) -> str:
        return (
            f"{self._failed} of {self._answered} requests failed, {self._consecutive} in a row "
            f"(failure_threshold={self.settings.failure_threshold:g}); last error: {self._last_error}. "
            "Stored answers are kept; re-run to resume."
        )
