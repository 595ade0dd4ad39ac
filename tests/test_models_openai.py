"""The openai adapter against real HTTP servers on 127.0.0.1.

* ``transformers serve`` (a separate process) serving a tiny Gemma3 built in code;
* a small fault-injecting OpenAI-compatible server (threaded ``http.server`` on loopback) that
  answers per prompt from a script: 429 with Retry-After, 500, timeouts, malformed bodies, 400.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time

import httpx
import pytest
from loopback import LoopbackServer, QuietHandler
from tiny_vlms import make_request, medical_image, tiny_model_dir

from medvision_eval.models.errors import ModelArgsError, ModelUnavailableError
from medvision_eval.models.openai_compat import OpenAIAdapter, parse_retry_after

KEY = "sk-test-SECRET-0123456789abcdef"


class FaultServer:
    """OpenAI chat-completions on loopback. A prompt containing ``SCRIPT:a,b,c`` gets behaviour
    a on its first attempt, b on the second, ... (the last one repeats)."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        outer = self

        class H(QuietHandler):
            def do_POST(self):
                body = json.loads(self.read_body())
                text = "".join(p.get("text", "") for m in body["messages"] for p in m["content"] if isinstance(p, dict))
                script = text.split("SCRIPT:")[1].split()[0].split(",") if "SCRIPT:" in text else ["ok"]
                with outer.lock:
                    n = outer.attempts.get(text, 0)
                    outer.attempts[text] = n + 1
                    outer.bodies.append(body)
                    outer.auth.append(self.headers.get("Authorization"))
                act = script[min(n, len(script) - 1)]
                if act == "ok":
                    payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"12.5, 3.0 ({text[:12]})"}}],
                               "usage": {"prompt_tokens": 42, "completion_tokens": 7}}
                    return self._send(200, json.dumps(payload).encode())
                if act == "429":
                    return self._send(429, b'{"error":"slow down"}', {"Retry-After": "7"})
                if act == "500":
                    return self._send(500, b'{"error":"boom"}')
                if act == "400":
                    return self._send(400, b'{"error":"bad image"}')
                if act == "malformed":
                    return self._send(200, b'{"choices": [ this is not json')
                if act == "nochoices":
                    return self._send(200, b'{"object": "chat.completion"}')
                if act == "timeout":
                    time.sleep(1.0)
                    return self._send(200, b"{}")
                raise AssertionError(act)

            def _send(self, code, data, headers=None):
                try:
                    self.reply(code, data, {**(headers or {}), "Content-Type": "application/json"})
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = LoopbackServer(H, "/v1")
        self.url = self._server.url

    def close(self):
        self._server.close()


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("MEDVISION_TEST_KEY", KEY)
    return KEY


def adapter(server, **kw):
    args = dict(model="tiny", base_url=server.url, api_key_env="MEDVISION_TEST_KEY", timeout="0.3",
                max_retries="5", backoff_base="0.5", backoff_max="30")
    args.update(kw)
    ad = OpenAIAdapter(**args)
    ad.delays = []
    ad.sleep = ad.delays.append  # record instead of waiting
    return ad


def test_concurrent_answers_in_order_with_images_and_key(server, key):
    ad = adapter(server, concurrency="4")
    reqs = [make_request(text=f"question {i} in mm", sample_id=f"s{i}") for i in range(6)]
    out = ad.generate(reqs)
    assert [r.text for r in out] == [f"12.5, 3.0 (question {i} i)" for i in range(6)]
    assert all(r.usage.prompt_tokens == 42 and r.usage.completion_tokens == 7 for r in out)
    assert server.auth == [f"Bearer {KEY}"] * 6
    content = server.bodies[0]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url"]  # order kept
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert server.bodies[0]["temperature"] == 0.0 and server.bodies[0]["max_tokens"] == 6


def test_retries_429_500_malformed_timeout_then_succeeds(server, key):
    ad = adapter(server)
    r = ad.generate([make_request(text="SCRIPT:429,500,malformed,timeout,nochoices,ok go")])[0]
    assert r.error is None and r.text.startswith("12.5, 3.0")
    assert ad.attempts == 6
    assert len(ad.delays) == 5
    assert ad.delays[0] >= 7  # Retry-After: 7 honoured
    assert 0.5 <= ad.delays[1] <= 1.0  # base*2**1 = 1.0 with jitter in [0.5, 1.0]
    assert 1.0 <= ad.delays[2] <= 2.0 and 2.0 <= ad.delays[3] <= 4.0


def test_gives_up_and_returns_an_error_not_text(server, key):
    ad = adapter(server, max_retries="2")
    r = ad.generate([make_request(text="SCRIPT:500 always")])[0]
    assert r.text is None and not r.ok
    assert "gave up after 3 attempts" in r.error and "HTTP 500" in r.error
    assert ad.attempts == 3


def test_no_retry_on_plain_4xx(server, key):
    ad = adapter(server)
    r = ad.generate([make_request(text="SCRIPT:400,ok x")])[0]
    assert r.text is None and "HTTP 400" in r.error and ad.attempts == 1 and ad.delays == []


def test_failure_threshold_stops_the_run(server, key):
    ad = adapter(server, max_retries="0", failure_threshold="3", concurrency="1")
    reqs = [make_request(text="SCRIPT:ok fine", sample_id="ok")] + [
        make_request(text=f"SCRIPT:500 n{i}", sample_id=f"b{i}") for i in range(6)
    ]
    with pytest.raises(ModelUnavailableError, match=r"3 in a row .*failure_threshold=3") as e:
        ad.generate(reqs)
    assert KEY not in str(e.value)
    assert e.value.responses[0].text.startswith("12.5")  # answered before the stop
    assert ad.attempts == 4  # stopped: requests after the third failure were never sent


def test_failure_threshold_as_fraction(server, key):
    ad = adapter(server, max_retries="0", failure_threshold="0.5", concurrency="2")
    reqs = [make_request(text=f"SCRIPT:{'500' if i % 3 else 'ok'} r{i}", sample_id=f"r{i}") for i in range(12)]
    with pytest.raises(ModelUnavailableError, match="failure_threshold=0.5"):
        ad.generate(reqs)


def test_key_never_leaves_the_environment(server, key, caplog):
    caplog.set_level(logging.DEBUG)
    ad = adapter(server, max_retries="1")
    out = ad.generate([make_request(text="SCRIPT:429,ok a"), make_request(text="SCRIPT:400 b", sample_id="b")])
    blob = json.dumps([ad.identity(), ad.info(), [r.model_dump() for r in out], ad.args, vars(ad.settings)], default=str)
    blob += "\n".join(r.getMessage() for r in caplog.records)
    assert KEY not in blob and "SECRET" not in blob
    assert "MEDVISION_TEST_KEY" in json.dumps(ad.args)  # only the variable's name


def test_arguments_are_validated(server):
    with pytest.raises(ModelArgsError, match="api_key; valid:"):
        OpenAIAdapter(model="m", api_key="sk-123")  # keys only via the environment
    with pytest.raises(ModelArgsError, match="failure_threshold"):
        OpenAIAdapter(model="m", failure_threshold="0")
    # the shared bounds hold where OpenAI overrides a default (concurrency 8), so they are validators
    for bad, field in (({"concurrency": 0}, "concurrency: .*at least 1"), ({"max_retries": -1}, "max_retries"),
                       ({"timeout": -1}, "timeout"), ({"backoff_max": -0.5}, "backoff_max")):
        with pytest.raises(ModelArgsError, match=field):
            OpenAIAdapter(model="m", **bad)
    ad = OpenAIAdapter(model="m", extra_body='{"top_k": 1}', geometry="qwen2_5_vl")
    assert ad.settings.extra_body == {"top_k": 1}
    assert ad.perceived_geometry(1935, 2400).canvas == (1932, 2408)


def test_retry_after_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1
    assert parse_retry_after("soon") is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("transformers") is None, reason="transformers CLI missing")
def test_against_transformers_serve_process(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    model = tiny_model_dir("gemma3")
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [shutil.which("transformers"), "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "serve.log").read_text()[-2000:])
            time.sleep(0.5)
        ad = OpenAIAdapter(model=model, base_url=url + "/v1", timeout="60", concurrency="2", max_retries="1")
        reqs = [make_request(text=f"Estimate lesion {i} in mm.", image=medical_image(64 + 16 * i, 80), sample_id=f"t{i}",
                             max_new_tokens=4) for i in range(2)]
        out = ad.generate(reqs)
        assert all(r.error is None and isinstance(r.text, str) for r in out), [r.error for r in out]
        assert all(r.usage.completion_tokens and r.usage.completion_tokens <= 4 for r in out)
        # the prompt carried the image: the same text alone gives fewer prompt tokens (4 image tokens + markers)
        bare = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": model, "max_tokens": 1,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Estimate lesion 0 in mm."}]}]}).json()
        assert out[0].usage.prompt_tokens >= bare["usage"]["prompt_tokens"] + 4
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
