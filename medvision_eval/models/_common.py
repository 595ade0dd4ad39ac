"""Helpers shared by the real backends: typed ``--model-args``, message conversion, timing, and
for the remote backends one settings model (:class:`RemoteSettings`) and one retry policy
(:func:`retry_policy`, tenacity: exponential backoff with jitter, ``Retry-After`` honoured,
bounded attempts, secrets masked before any message is cut or logged)."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .. import secrets
from ..schema import GenerationSettings, ImagePart, Message, Request, Response, TextPart
from .base import ModelAdapter, PerceivedGeometry
from .errors import ModelArgsError, ModelUnavailableError
from .geometry import GeometrySpec, named, perceive

S = TypeVar("S", bound="AdapterSettings")
log = logging.getLogger(__name__)


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
    """``Type: message``, secrets masked first, then cut to ``limit`` characters."""
    return secrets.truncate(f"{type(e).__name__}: {e}", limit)


# ------------------------------------------------------------------ remote settings and retries
class RemoteSettings(AdapterSettings):
    """``--model-args`` every remote backend shares (openai, gemini)."""

    base_url: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key
    concurrency: int = 1  # requests in flight at once
    timeout: float = 120.0  # seconds per HTTP request
    max_retries: int = 6  # retries per request after the first attempt
    backoff_base: float = 1.0  # seconds; delay n is base * 2**n (with jitter), capped at backoff_max
    backoff_max: float = 60.0
    # >= 1: this many consecutive failed requests stop the run;
    # in (0, 1): this fraction of failed requests (once at least 10 were answered) stops it.
    failure_threshold: float = 10

    @field_validator("failure_threshold")
    @classmethod
    def _positive_threshold(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0 (a count >= 1 or a fraction < 1)")
        return v

    @field_validator("concurrency")
    @classmethod
    def _positive_concurrency(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("max_retries")
    @classmethod
    def _nonnegative_retries(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be 0 or more")
        return v

    @field_validator("timeout", "backoff_base", "backoff_max")
    @classmethod
    def _positive_seconds(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be 0 or more seconds")
        return v


class RetryableError(Exception):
    """A transient failure (429, 5xx, timeout, connection error, malformed body): retry later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(secrets.mask(message))
        self.retry_after = retry_after


class FatalError(Exception):
    """A failure retrying cannot fix (a plain 4xx)."""


TRANSPORT_ERROR_NAMES = frozenset({
    "TransportError", "TimeoutException", "RequestError", "NetworkError",  # httpx and the SDK's httpx2
    "ClientConnectionError", "ServerTimeoutError", "ClientPayloadError",  # aiohttp
    "ProtocolError", "IncompleteRead", "RemoteDisconnected",  # urllib3 / http.client
})


def is_transport_error(exc: BaseException) -> bool:
    """A connection reset, refused connection or timeout, whichever HTTP library raised it (the
    Gemini SDK raises its own vendored httpx's exceptions), including when wrapped."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        if any(c.__name__ in TRANSPORT_ERROR_NAMES for c in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(settings: RemoteSettings, attempt: int, retry_after: float | None) -> float:
    """Delay before retry ``attempt`` (0-based): ``base * 2**attempt`` capped at ``backoff_max``,
    with equal jitter (a uniform draw in its upper half); at least ``Retry-After`` (also capped)."""
    delay = min(settings.backoff_max, settings.backoff_base * 2**attempt)
    delay = delay / 2 + random.uniform(0, delay / 2)
    if retry_after is not None:
        delay = min(settings.backoff_max, max(delay, retry_after))
    return delay


def retry_policy(settings: RemoteSettings, sleep: Callable[[float], None], label: str) -> Any:
    """The one tenacity policy of every remote backend: retry :class:`RetryableError` only, at most
    ``max_retries`` times, waiting :func:`backoff_delay`; the last error is re-raised."""
    import tenacity

    def wait(state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return backoff_delay(settings, state.attempt_number - 1, getattr(exc, "retry_after", None))

    def before_sleep(state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("%s: %s; retry %d/%d in %.2fs", label, secrets.truncate(str(exc), 300), state.attempt_number,
                 settings.max_retries, state.next_action.sleep if state.next_action else 0.0)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetryableError),
        stop=tenacity.stop_after_attempt(settings.max_retries + 1),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


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
    settings: RemoteSettings
    label: ClassVar[str] = "remote"

    _answered = 0
    _failed = 0
    _consecutive = 0
    _last_error = ""

    def _answer(self, request: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def _endpoint(self) -> str:
        return self.settings.base_url or ""

    def _require_key(self) -> None:
        """Raise ModelArgsError when the backend needs a key and none is set (gemini)."""

    def preflight(self) -> None:
        """Before any sample: the key is there and the endpoint accepts connections. A refused
        connection or unknown host is a ModelUnavailableError at once (no per-request retries)."""
        import socket
        from urllib.parse import urlsplit

        self._require_key()
        url = self._endpoint()
        parts = urlsplit(url)
        if not parts.hostname:
            raise ModelArgsError(f"base_url={url!r} is not a URL (e.g. http://127.0.0.1:8000/v1)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ModelArgsError(f"base_url={url!r} has an invalid port") from None
        try:
            socket.create_connection((parts.hostname, port), timeout=min(max(self.settings.timeout, 0.1), 10.0)).close()
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
            raise ModelUnavailableError(
                f"cannot connect to {url} ({parts.hostname}:{port}): {reason}. Is the server running and the "
                "address right? No sample was sent"
            ) from None

    def _with_retries(self, attempt: Callable[[], tuple[str, Any]]) -> Response:
        """Run ``attempt`` under :func:`retry_policy`; a Response with text, or with the error
        (secrets masked before it is cut) once retries are exhausted or the error is fatal."""
        s = self.settings
        t0 = time.perf_counter()
        try:
            text, usage = retry_policy(s, self.sleep, self.label)(attempt)
        except RetryableError as e:
            error = f"gave up after {s.max_retries + 1} attempts: {e}"
        except FatalError as e:
            error = str(e)
        except Exception as e:  # never raise from a request: the runner records the error
            error = f"{type(e).__name__}: {e}"
        else:
            return Response(text=text, usage=usage, latency_s=time.perf_counter() - t0)
        return Response(error=secrets.truncate(error, 1000), latency_s=time.perf_counter() - t0)

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
            f"(failure_threshold={self.settings.failure_threshold:g}); last error: {self._last_error}"
        )
