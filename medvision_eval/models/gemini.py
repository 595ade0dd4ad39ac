"""``gemini`` backend (google-genai SDK), with the paper's two variants.

* ``variant=no_tool`` - JSON structured output ``{Thought, Answer}`` rendered as the v1 code
  did (``"Thought\\n: ...\\nAnswer\\n: ...\\n"``), dynamic thinking (budget -1).
* ``variant=tool``    - Gemini's built-in code-execution tool; the answer is the v1
  concatenation of ``Text Block i`` / ``Code Block i`` (code ignored) / ``Code Result Block i``
  parts, and the v1 prompt suffix (typo included) is appended to the last text part.

The key comes from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY`` (or the variable named by
``api_key_env``) and lives only inside the SDK client: never in settings, identity, info,
responses or log messages. ``base_url`` points the SDK at another endpoint (tests, proxies).
Generation settings the v1 code did not send (temperature, max output tokens) are left to
the provider unless given.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ValidationError

from .. import secrets
from ..schema import GenerationSettings, ImagePart, Request, Response, TextPart, Usage
from ._common import (
    RemoteAdapter,
    RemoteSettings,
    RetryableError,
    is_transport_error,
    package_version,
    parse_retry_after,
    parse_settings,
    png_base64,
    require_image,
)
from .errors import BackendNotInstalledError, ModelArgsError

log = logging.getLogger(__name__)

# v1 gemini__2_5.py: question = contexts + "\n\Please put the final answer after 'Answer:'\n\n"
TOOL_PROMPT_SUFFIX = "\n\\Please put the final answer after 'Answer:'\n\n"
KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


class ThoughtAnswer(BaseModel):
    Thought: str
    Answer: str


class GeminiSettings(RemoteSettings):
    model: str = "gemini-2.5-flash"
    variant: Literal["no_tool", "tool"] = "no_tool"
    thinking_budget: int = -1
    ignore_code: bool = True
    max_new_tokens: int = 0  # 0 = provider default (v1 sent none)
    temperature: float = -1.0  # < 0 = provider default (v1 sent none)
    api_key_env: str | None = None  # default: GEMINI_API_KEY, then GOOGLE_API_KEY
    concurrency: int = 1  # v1 ran batch 1
    timeout: float = 300.0
    max_retries: int = 9  # v1: backoff.expo, max_tries=10

    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)


# The retryable error of the shared policy (kept under its old name for callers).
_Retry = RetryableError


def render_no_tool(answer: ThoughtAnswer | dict[str, Any]) -> str:
    get = answer.get if isinstance(answer, dict) else (lambda k, d: getattr(answer, k, d))
    return f"Thought\n: {get('Thought', '<not provided>')}\nAnswer\n: {get('Answer', '<not provided>')}\n"


def render_tool(parts: Sequence[Any], ignore_code: bool = True) -> str:
    out, n_text, n_code, n_res = "", 0, 0, 0
    for p in parts:
        if getattr(p, "thought", None):
            continue
        if p.text is not None:
            n_text += 1
            out += f"Text Block {n_text}:\n{p.text}\n"
        if p.executable_code is not None:
            n_code += 1
            code = "<code block ignored>" if ignore_code else p.executable_code.code
            out += f"Code Block {n_code}:\n{code}\n"
        if p.code_execution_result is not None:
            n_res += 1
            out += f"Code Result Block {n_res}:\n{p.code_execution_result.output}\n"
    return out


class GeminiAdapter(RemoteAdapter):
    backend: ClassVar[str] = "gemini"
    label: ClassVar[str] = "gemini"
    settings: GeminiSettings

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = parse_settings(GeminiSettings, "gemini", kwargs)
        self.default_batch_size = max(1, self.settings.concurrency)  # type: ignore[misc]
        self._client: Any = None
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()  # one client, created once even under concurrency
        self._consecutive = self._answered = self._failed = 0
        self._last_error = ""
        self.sleep: Callable[[float], None] = time.sleep
        self.attempts = 0

    # -------------------------------------------------------------- contract
    def identity(self) -> dict[str, Any]:
        s = self.settings
        return {
            "adapter": "gemini",
            "model": s.model,
            "variant": s.variant,
            "thinking_budget": s.thinking_budget,
            "ignore_code": s.ignore_code,
            "system_prompt": s.system_prompt,
            "base_url": s.base_url,
        }

    def info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "backend": "gemini",
            "google-genai": package_version("google-genai"),
            "model": s.model,
            "variant": s.variant,
            "thinking_budget": s.thinking_budget,
            "batch_size": self.default_batch_size,
            "api_requests": self.attempts,
        }

    def _unavailable_message(self) -> str:
        return f"Gemini model {self.settings.model!r} is failing: " + self._failure_summary()

    def _endpoint(self) -> str:
        return self.settings.base_url or "https://generativelanguage.googleapis.com"

    def _require_key(self) -> None:
        self._key()

    def _key(self) -> str:
        names = (self.settings.api_key_env,) if self.settings.api_key_env else KEY_ENVS
        for n in names:
            if os.environ.get(n):
                secrets.register(os.environ[n])
                return os.environ[n]
        raise ModelArgsError(f"no Gemini API key: set {' or '.join(names)} in the environment")

    @property
    def client(self) -> Any:
        """The one SDK client, created under a lock: two threads creating one each made the first
        one unreferenced, and its finaliser closed it under the other thread ("client has been closed")."""
        if self._client is not None:
            return self._client
        with self._client_lock:
            if self._client is not None:
                return self._client
            try:
                from google import genai
                from google.genai import types
            except ImportError as e:
                raise BackendNotInstalledError("the gemini backend needs google-genai: pip install 'medvision-eval[gemini]'") from e
            s = self.settings
            opts: dict[str, Any] = {"timeout": int(s.timeout * 1000), "retry_options": types.HttpRetryOptions(attempts=1)}
            if s.base_url:
                opts["base_url"] = s.base_url
            self._client = genai.Client(api_key=self._key(), http_options=types.HttpOptions(**opts))
            return self._client

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing is best effort
                pass

    def _contents(self, request: Request) -> list[Any]:
        from google.genai import types

        parts: list[Any] = []
        for m in request.messages:
            if m.role != "user":
                continue
            parts.extend(m.content)
        if self.settings.variant == "tool":
            last = max((i for i, p in enumerate(parts) if isinstance(p, TextPart)), default=None)
            if last is not None:
                parts[last] = TextPart(text=parts[last].text + TOOL_PROMPT_SUFFIX)
        out = []
        for p in parts:
            if isinstance(p, ImagePart):
                import base64

                out.append(types.Part.from_bytes(data=base64.b64decode(png_base64(require_image(p))), mime_type="image/png"))
            else:
                out.append(types.Part.from_text(text=p.text))
        return [types.Content(role="user", parts=out)]

    def _config(self, request: Request) -> Any:
        from google.genai import types

        s, g = self.settings, request.generation
        kw: dict[str, Any] = {"thinking_config": types.ThinkingConfig(thinking_budget=s.thinking_budget)}
        if s.variant == "tool":
            kw["tools"] = [types.Tool(code_execution=types.ToolCodeExecution())]
            kw["response_mime_type"] = "text/plain"
        else:
            kw["response_mime_type"] = "application/json"
            kw["response_schema"] = ThoughtAnswer
        if s.system_prompt:
            kw["system_instruction"] = s.system_prompt
        if g.max_new_tokens > 0:
            kw["max_output_tokens"] = g.max_new_tokens
        if g.temperature >= 0:
            kw["temperature"] = g.temperature
        return types.GenerateContentConfig(**kw)

    def _once(self, request: Request) -> tuple[str, Usage]:
        from google.genai import errors

        with self._lock:
            self.attempts += 1
        try:
            resp = self.client.models.generate_content(
                model=self.settings.model, contents=self._contents(request), config=self._config(request)
            )
        except errors.APIError as e:
            code = int(getattr(e, "code", 0) or 0)
            if code in (408, 409, 429) or code >= 500:
                ra = None
                headers = getattr(getattr(e, "response", None), "headers", None)
                if headers is not None:
                    ra = parse_retry_after(headers.get("retry-after"))
                raise _Retry(f"HTTP {code}: {secrets.truncate(getattr(e, 'message', '') or '', 300)}", ra) from None
            raise
        except Exception as e:
            # The SDK raises its vendored HTTP library's exceptions (httpx2): match by kind, not class.
            if is_transport_error(e):
                raise _Retry(f"connection error: {type(e).__name__}: {secrets.truncate(str(e), 300)}") from None
            raise
        um = getattr(resp, "usage_metadata", None)
        usage = Usage(
            prompt_tokens=getattr(um, "prompt_token_count", None),
            completion_tokens=getattr(um, "candidates_token_count", None),
        )
        if not resp.candidates or resp.candidates[0].content is None or not resp.candidates[0].content.parts:
            raise _Retry("response without candidates/parts")
        if self.settings.variant == "tool":
            return render_tool(resp.candidates[0].content.parts, self.settings.ignore_code), usage
        text = resp.text or ""
        try:
            parsed = ThoughtAnswer.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as e:
            raise _Retry(f"malformed JSON answer ({type(e).__name__}): {secrets.truncate(text, 120)!r}") from None
        return render_no_tool(parsed), usage

    def _answer(self, request: Request) -> Response:
        return self._with_retries(lambda: self._once(request))

    def _scrub(self, text: str) -> str:
        return secrets.mask(text)
