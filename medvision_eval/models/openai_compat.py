"""``openai`` backend: any OpenAI-compatible chat-completions server.

``vllm serve``, ``transformers serve``, SGLang, hosted APIs. Requests go out concurrently
(bounded thread pool); each is retried with exponential backoff and jitter on 408/409/429,
5xx, timeouts, connection errors and malformed bodies, honouring ``Retry-After``; other 4xx
fail at once. A failure threshold stops the run with :class:`ModelUnavailableError`.

The API key is read from the environment variable named by ``api_key_env`` at request time;
it is never stored on the adapter, in its identity, info, responses or logs.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import field_validator

from ..schema import Request, Response, Usage
from ._common import (
    AdapterSettings,
    RemoteAdapter,
    json_arg,
    package_version,
    parse_settings,
    short_error,
    to_openai_chat,
    with_system,
)

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429}


class OpenAISettings(AdapterSettings):
    model: str
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 120.0  # seconds per HTTP request
    max_retries: int = 6
    backoff_base: float = 1.0  # seconds; delay n is base * 2**n (with jitter), capped at backoff_max
    backoff_max: float = 60.0
    # >= 1: this many consecutive failed requests stop the run;
    # in (0, 1): this fraction of failed requests (once at least 10 were answered) stops it.
    failure_threshold: float = 10
    extra_body: dict[str, Any] | None = None  # merged into every request body

    _json = field_validator("extra_body", mode="before")(classmethod(lambda cls, v: json_arg(v)))

    @field_validator("failure_threshold")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0 (a count >= 1 or a fraction < 1)")
        return v


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    pass


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


class OpenAIAdapter(RemoteAdapter):
    backend: ClassVar[str] = "openai"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = parse_settings(OpenAISettings, "openai", kwargs)
        self.default_batch_size = max(1, self.settings.concurrency) * 2  # type: ignore[misc]
        self._client: Any = None
        self._lock = threading.Lock()
        self._consecutive = 0
        self._answered = 0
        self._failed = 0
        self.sleep: Callable[[float], None] = time.sleep  # tests replace it to record delays
        self.attempts = 0  # HTTP requests sent (for tests and info)

    # -------------------------------------------------------------- contract
    def identity(self) -> dict[str, Any]:
        s = self.settings
        return {
            "adapter": "openai",
            "base_url": s.base_url.rstrip("/"),
            "model": s.model,
            "system_prompt": s.system_prompt,
            "extra_body": s.extra_body,
        }

    def info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "backend": "openai",
            "httpx": package_version("httpx"),
            "base_url": s.base_url,
            "model": s.model,
            "concurrency": s.concurrency,
            "batch_size": self.default_batch_size,
            "timeout": s.timeout,
            "max_retries": s.max_retries,
            "http_requests": self.attempts,
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -------------------------------------------------------------- internals
    def _unavailable_message(self) -> str:
        s = self.settings
        return f"model endpoint {s.base_url} (model {s.model!r}) is failing: " + self._failure_summary()

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.settings.timeout)
        return self._client

    def _body(self, request: Request) -> dict[str, Any]:
        s, g = self.settings, request.generation
        body: dict[str, Any] = {
            "model": s.model,
            "messages": to_openai_chat(with_system(request.messages, s.system_prompt)),
            "max_tokens": g.max_new_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
        }
        if g.seed is not None:
            body["seed"] = g.seed
        if s.extra_body:
            body.update(s.extra_body)
        return body

    def _answer(self, request: Request) -> Response:
        s = self.settings
        t0 = time.perf_counter()
        try:
            body = self._body(request)
        except Exception as e:
            return Response(error=short_error(e))
        last = ""
        for attempt in range(s.max_retries + 1):
            try:
                text, usage = self._post(body)
                return Response(text=text, usage=usage, latency_s=time.perf_counter() - t0)
            except FatalError as e:
                return Response(error=self._scrub(str(e)), latency_s=time.perf_counter() - t0)
            except RetryableError as e:
                last = str(e)
                if attempt == s.max_retries:
                    break
                delay = min(s.backoff_max, s.backoff_base * 2**attempt)
                delay = delay / 2 + random.uniform(0, delay / 2)
                if e.retry_after is not None:
                    delay = min(s.backoff_max, max(delay, e.retry_after))
                log.info("openai: %s; retry %d/%d in %.2fs", last, attempt + 1, s.max_retries, delay)
                self.sleep(delay)
        return Response(
            error=self._scrub(f"gave up after {s.max_retries + 1} attempts: {last}"),
            latency_s=time.perf_counter() - t0,
        )

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.settings.api_key_env)
        return text.replace(key, "***") if key else text

    def _post(self, body: dict[str, Any]) -> tuple[str, Usage]:
        import httpx

        s = self.settings
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(s.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = s.base_url.rstrip("/") + "/chat/completions"
        with self._lock:
            self.attempts += 1
        try:
            resp = self.client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as e:
            raise RetryableError(f"timeout after {s.timeout:g}s ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise RetryableError(f"connection error: {type(e).__name__}: {e}") from None
        code = resp.status_code
        if code in RETRY_STATUS or code >= 500:
            raise RetryableError(f"HTTP {code}: {resp.text[:200]}", parse_retry_after(resp.headers.get("retry-after")))
        if code >= 400:
            raise FatalError(f"HTTP {code}: {resp.text[:300]}")
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError(f"message.content is {type(text).__name__}")
        except Exception as e:
            raise RetryableError(f"malformed response body ({type(e).__name__}: {e}): {resp.text[:120]!r}") from None
        u = data.get("usage") or {}
        return text, Usage(prompt_tokens=u.get("prompt_tokens"), completion_tokens=u.get("completion_tokens"))
