"""Remote adapters under failure: one settings model and one retry policy; Gemini's one client
under concurrency and its transport errors retried; secrets never reach a file or the console."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from loopback import LoopbackServer, QuietHandler
from tiny_vlms import make_request as _make_request

from medvision_eval.models._common import RemoteSettings, backoff_delay, is_transport_error, retry_policy
from medvision_eval.models.gemini import GeminiAdapter, GeminiSettings
from medvision_eval.models.openai_compat import OpenAIAdapter, OpenAISettings

GEMINI_KEY = "AIzaQx7-ECHOED-gemini-5551234567"


def test_both_remote_backends_share_one_settings_model_and_retry_policy():
    assert issubclass(OpenAISettings, RemoteSettings) and issubclass(GeminiSettings, RemoteSettings)
    shared = {"base_url", "api_key_env", "concurrency", "timeout", "max_retries", "backoff_base", "backoff_max",
              "failure_threshold"}
    assert shared <= set(OpenAISettings.model_fields) and shared <= set(GeminiSettings.model_fields)
    for bad in ({"concurrency": "0"}, {"max_retries": "-1"}, {"failure_threshold": "0"}, {"timeout": "-2"}):
        with pytest.raises(ValueError):
            OpenAIAdapter(model="m", **bad)
        with pytest.raises(ValueError):
            GeminiAdapter(**bad)
    s = RemoteSettings(backoff_base=1.0, backoff_max=8.0)
    for attempt in range(6):
        d = backoff_delay(s, attempt, None)
        cap = min(8.0, 2.0**attempt)
        assert cap / 2 <= d <= cap  # exponential, capped, jittered in the upper half
    assert backoff_delay(s, 0, 5.0) == 5.0  # Retry-After honoured
    assert backoff_delay(s, 0, 500.0) == 8.0  # but capped


def test_retry_policy_is_bounded_and_reraises():
    from medvision_eval.models._common import FatalError, RetryableError

    calls, slept = [], []

    def flaky():
        calls.append(1)
        raise RetryableError("HTTP 503", retry_after=0.25)

    with pytest.raises(RetryableError):
        retry_policy(RemoteSettings(max_retries=3, backoff_base=0.01), slept.append, "t")(flaky)
    assert len(calls) == 4 and len(slept) == 3 and all(x >= 0.25 for x in slept)

    def fatal():
        calls.append(2)
        raise FatalError("HTTP 400")

    with pytest.raises(FatalError):
        retry_policy(RemoteSettings(max_retries=3), slept.append, "t")(fatal)
    assert calls.count(2) == 1


class _Gemini:
    """Gemini REST on loopback: ``MODE:reset`` resets the connection on the first attempt,
    ``MODE:hang`` outlasts the client timeout on the first attempt; then it answers."""

    def __init__(self, delay: float = 0.0) -> None:
        self.count: dict[str, int] = {}
        self.served = 0
        self.lock = threading.Lock()
        outer = self

        class H(QuietHandler):
            def do_POST(self):
                body = json.loads(self.read_body())
                text = "".join(p.get("text", "") for c in body["contents"] for p in c["parts"])
                with outer.lock:
                    n = outer.count.get(text, 0)
                    outer.count[text] = n + 1
                if "MODE:reset" in text and n == 0:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if "MODE:hang" in text and n == 0:
                    time.sleep(1.5)
                    self.close_connection = True
                    return
                time.sleep(delay)
                with outer.lock:
                    outer.served += 1
                parts = [{"text": json.dumps({"Thought": "t", "Answer": "12.5, 3.0"})}]
                self.reply(200, {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]})

        self.server = LoopbackServer(H)
        self.url = self.server.url


@pytest.fixture
def gemini_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)


def make_request(**kw):
    r = _make_request(**kw)
    return r.model_copy(update={"generation": GeminiAdapter().generation_settings()})


def test_gemini_creates_one_client_under_concurrency(gemini_key, monkeypatch):
    from google import genai

    created = []
    real = genai.Client

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):
            time.sleep(0.05)  # widen the window two threads could both create one
            super().__init__(*a, **kw)
            created.append(self)

    monkeypatch.setattr(genai, "Client", Counting)
    srv = _Gemini(delay=0.05)
    try:
        ad = GeminiAdapter(base_url=srv.url, concurrency="16", max_retries="0", failure_threshold="100")
        out = ad.generate([make_request(text=f"q{i}", sample_id=f"s{i}") for i in range(16)])
        assert [r.error for r in out] == [None] * 16
        assert all(r.text.startswith("Thought\n: t") for r in out)
        assert srv.served == 16 and len(created) == 1
        ad.close()
    finally:
        srv.server.close()


def test_gemini_retries_connection_resets_and_timeouts(gemini_key):
    srv = _Gemini()
    try:
        ad = GeminiAdapter(base_url=srv.url, timeout="0.5", backoff_base="0.01", max_retries="2", concurrency="2")
        ad.delays = []
        ad.sleep = ad.delays.append
        out = ad.generate([make_request(text="MODE:reset a", sample_id="a"), make_request(text="MODE:hang b", sample_id="b")])
        assert [r.error for r in out] == [None, None], [r.error for r in out]
        assert srv.count == {"MODE:reset a": 2, "MODE:hang b": 2}
        assert len(ad.delays) == 2
    finally:
        srv.server.close()


def test_transport_errors_are_recognised_whichever_library_raised_them():
    import httpx

    class RemoteProtocolError(Exception):  # the SDK's vendored httpx names its classes alike
        pass

    class TransportError(Exception):
        pass

    class Vendored(RemoteProtocolError, TransportError):
        pass

    assert is_transport_error(httpx.ConnectError("refused"))
    assert is_transport_error(ConnectionResetError(104, "reset"))
    assert is_transport_error(Vendored("Server disconnected"))
    wrapped = RuntimeError("request failed")
    wrapped.__cause__ = TimeoutError("read")
    assert is_transport_error(wrapped)
    assert not is_transport_error(ValueError("bad json"))


# ----------------------------------------------------------------- secrets end to end
ECHO_KEY = "Qz9kX1-" + "f3c2a8d4e5b6" * 3


class _EchoServer:
    """OpenAI-compatible; echoes the bearer key inside long bodies: a 500 whose key straddles the
    200-character cut, a 401 straddling the 300 cut, and an answer that quotes it."""

    def __init__(self) -> None:
        outer = self
        self.n = 0

        class H(QuietHandler):
            def do_POST(self):
                self.read_body()
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                outer.n += 1
                kind = outer.n % 3
                if kind == 1:
                    code, body = 500, "e" * 195 + f" key={key} " + "z" * 2000
                elif kind == 2:
                    code, body = 401, "u" * 290 + f" invalid api key {key} " + "z" * 2000
                else:
                    code, body = 200, json.dumps({"choices": [{"message": {"content": f"12.5, 3.0 (your key: {key})"}}]})
                self.reply(code, body)

        self.server = LoopbackServer(H, "/v1")


def test_an_echoed_key_leaves_no_prefix_in_the_run_directory_or_console(demo_root, tmp_path, monkeypatch, capfd):
    from medvision_eval.cli import main

    monkeypatch.setenv("ECHO_TEST_SECRET_VAR", ECHO_KEY)
    srv = _EchoServer()
    try:
        run_dir = tmp_path / "run"
        main(["--tasks", "tl_size", "--model", "openai", "--model-args",
              f"model=m,base_url={srv.server.url},api_key_env=ECHO_TEST_SECRET_VAR,max_retries=0,"
              "failure_threshold=1000,concurrency=1", "--data", str(demo_root), "--output", str(run_dir),
              "--limit", "3"])
    finally:
        srv.server.close()
    console = capfd.readouterr()
    assert srv.n >= 6  # every kind of echo was sent back
    files = [p for p in Path(run_dir).rglob("*") if p.is_file()]
    assert any(p.name == "responses.jsonl" for p in files)
    prefix = ECHO_KEY[:6]
    for p in files:
        assert prefix not in p.read_text(encoding="utf-8", errors="replace"), p.name
    assert prefix not in console.out and prefix not in console.err
    rows = [json.loads(x) for x in (run_dir / "responses.jsonl").read_text().splitlines()]
    errors = [r["response"]["error"] for r in rows if r["response"]["error"]]
    assert any("HTTP 500" in e for e in errors) and any("HTTP 401" in e for e in errors)
    answers = [r["response"]["text"] for r in rows if r["response"]["text"]]
    assert answers and all(a.endswith("(your key: ***)") for a in answers)


class _OddTextServer:
    """OpenAI-compatible; answers with a lone surrogate, control characters, or 1 MB of text."""

    def __init__(self) -> None:
        outer = self
        self.n = 0

        class H(QuietHandler):
            def do_POST(self):
                self.read_body()
                outer.n += 1
                content = ["12.5, 3.0\ud800", "\x00\x1b[31m12.5,\x07 3.0\x7f", "12.5, 3.0 " + "\udfff" * 10 + "x" * (1 << 20)][outer.n % 3]
                self.reply(200, json.dumps({"choices": [{"message": {"content": content}}]}))  # \\ud800 escapes

        self.server = LoopbackServer(H, "/v1")


def test_odd_answers_are_stored_scored_and_never_resent(demo_root, tmp_path, capsys):
    from medvision_eval.cli import main
    from medvision_eval.store import load_responses

    srv = _OddTextServer()
    run_dir = tmp_path / "run"
    args = ["--tasks", "tl_size", "--model", "openai", "--model-args", f"model=m,base_url={srv.server.url},concurrency=2",
            "--data", str(demo_root), "--output", str(run_dir), "--limit", "6", "--quiet"]
    try:
        assert main(args) == 0, capsys.readouterr().out
        sent = srv.n
        assert main(args) == 0  # the rerun finds every answer stored
        assert srv.n == sent
    finally:
        srv.server.close()
    rows = [json.loads(x) for x in (run_dir / "samples_tl_size.jsonl").read_text().splitlines()]
    assert len(rows) == sent and all(r["status"] == "ok" and r["values"] == [12.5, 3.0] for r in rows)
    originals = {r.original_text() for r in load_responses(run_dir).values()}
    assert "12.5, 3.0\ud800" in originals and "\x00\x1b[31m12.5,\x07 3.0\x7f" in originals
    import orjson

    for p in run_dir.iterdir():
        if p.suffix in (".json", ".jsonl"):
            for line in p.read_bytes().splitlines():
                orjson.loads(line) if p.suffix == ".jsonl" else None
            if p.suffix == ".json":
                orjson.loads(p.read_bytes())
