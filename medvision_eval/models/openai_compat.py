"""``openai`` backend: any OpenAI-compatible chat-completions server.

``vllm serve``, ``transformers serve``, SGLang, hosted APIs. Requests go out concurrently
(bounded thread pool); each is retried under the shared policy of ``_common.retry_policy``
(tenacity: exponential backoff with jitter, ``Retry-After`` honoured, at most ``max_retries``
retries) on 408/409/429, 5xx, timeouts, connection errors and malformed bodies; other 4xx
fail at once. A failure threshold stops the run with :class:`ModelUnavailableError`.

The API key is read from the environment variable named by ``api_key_env`` at request time;
it is never stored on the adapter, in its identity, info, responses or logs, and a server
echoing it back is masked before any error text is cut short.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import field_validator

from .. import secrets
from ..schema import Request, Response, Usage
from ._common import (  # noqa: F401 - RetryableError, FatalError, parse_retry_after: public here too
    FatalError,
    RemoteAdapter,
    RemoteSettings,
    RetryableError,
    is_transport_error,
    json_arg,
    package_version,
    parse_retry_after,
    parse_settings,
    short_error,
    to_openai_chat,
    with_system,
)

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429}


class OpenAISettings(RemoteSettings):
    model: str
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    extra_body: dict[str, Any] | None = None  # merged into every request body

    _json = field_validator("extra_body", mode="before")(classmethod(lambda cls, v: json_arg(v)))


class OpenAIAdapter(RemoteAdapter):
    backend: ClassVar[str] = "openai"
    label: ClassVar[str] = "openai"
    settings: OpenAISettings

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
        try:
            body = self._body(request)
        except Exception as e:
            return Response(error=short_error(e))
        return self._with_retries(lambda: self._post(body))

    def _scrub(self, text: str) -> str:
        return secrets.mask(text)

    def _post(self, body: dict[str, Any]) -> tuple[str, Usage]:
        import httpx

        s = self.settings
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(s.api_key_env)
        if key:
            secrets.register(key)
            headers["Authorization"] = f"Bearer {key}"
        url = s.base_url.rstrip("/") + "/chat/completions"
        with self._lock:
            self.attempts += 1
        try:
            resp = self.client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as e:
            raise RetryableError(f"timeout after {s.timeout:g}s ({type(e).__name__})") from None
        except Exception as e:
            if is_transport_error(e):
                raise RetryableError(f"connection error: {type(e).__name__}: {e}") from None
            raise
        code = resp.status_code
        # mask before cutting: a server echoing the key across the cut must not leave its prefix
        if code in RETRY_STATUS or code >= 500:
            raise RetryableError(f"HTTP {code}: {secrets.truncate(resp.text, 200)}",
                                 parse_retry_after(resp.headers.get("retry-after")))
        if code >= 400:
            raise FatalError(f"HTTP {code}: {secrets.truncate(resp.text, 300)}")
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError(f"message.content is {type(text).__name__}")
        except Exception as e:
            raise RetryableError(
                f"malformed response body ({type(e).__name__}: {secrets.truncate(str(e), 200)}): "
                f"{secrets.truncate(resp.text, 120)!r}"
            ) from None
        u = data.get("usage") or {}
        return text, Usage(prompt_tokens=u.get("prompt_tokens"), completion_tokens=u.get("completion_tokens"))
