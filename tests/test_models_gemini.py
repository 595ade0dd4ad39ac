"""The gemini adapter through the google-genai SDK against a loopback Gemini REST endpoint."""

from __future__ import annotations

import json
import logging

import pytest
from loopback import LoopbackServer, QuietHandler
from tiny_vlms import make_request as _make_request

from medvision_eval.models.errors import ModelArgsError, ModelUnavailableError
from medvision_eval.models.gemini import TOOL_PROMPT_SUFFIX, GeminiAdapter

KEY = "AIzaTEST-SECRET-KEY-9876543210"


class GeminiServer:
    """``POST /v1beta/models/<model>:generateContent``; replies by a ``MODE:`` marker in the prompt."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.keys: list[str | None] = []
        self.count: dict[str, int] = {}
        outer = self

        class H(QuietHandler):
            def do_POST(self):
                body = json.loads(self.read_body())
                outer.requests.append(body)
                outer.paths.append(self.path)
                outer.keys.append(self.headers.get("x-goog-api-key"))
                text = "".join(p.get("text", "") for c in body["contents"] for p in c["parts"])
                n = outer.count.get(text, 0)
                outer.count[text] = n + 1
                usage = {"promptTokenCount": 300, "candidatesTokenCount": 20}
                if "MODE:500" in text or ("MODE:429once" in text and n == 0):
                    code = 429 if "429" in text else 500
                    err = {"error": {"code": code, "message": "try later", "status": "UNAVAILABLE"}}
                    return self._send(code, err, {"Retry-After": "5"} if code == 429 else None)
                if "MODE:badjson" in text and n == 0:
                    parts = [{"text": "{\"Thought\": \"unterminated"}]
                elif "codeExecution" in json.dumps(body.get("tools", [])):
                    parts = [
                        {"text": "I will measure the ellipse."},
                        {"executableCode": {"language": "PYTHON", "code": "print(12.5 * 0.8)"}},
                        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "10.0\n"}},
                        {"text": "Answer: 10.0, 4.2"},
                    ]
                else:
                    parts = [{"text": json.dumps({"Thought": "The lesion spans 20 pixels.", "Answer": "12.5, 3.0"})}]
                resp = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
                        "usageMetadata": usage}
                return self._send(200, resp)

            def _send(self, code, obj, headers=None):
                self.reply(code, obj, headers)

        self._server = LoopbackServer(H, "")
        self.url = self._server.url

    def close(self):
        self._server.close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    s = GeminiServer()
    yield s
    s.close()


def make(server, **kw):
    ad = GeminiAdapter(base_url=server.url, backoff_base="0.01", **kw)
    ad.delays = []
    ad.sleep = ad.delays.append
    return ad


def make_request(**kw):
    """As the runner does: the request carries the adapter's generation settings."""
    r = _make_request(**kw)
    return r.model_copy(update={"generation": GeminiAdapter().generation_settings()})


def test_no_tool_variant_json_rendered_as_v1(server):
    ad = make(server, variant="no_tool")
    r = ad.generate([make_request(text="Estimate the axes.")])[0]
    assert r.error is None
    assert r.text == "Thought\n: The lesion spans 20 pixels.\nAnswer\n: 12.5, 3.0\n"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (300, 20)
    body = server.requests[0]
    assert server.paths[0].endswith("/models/gemini-2.5-flash:generateContent")
    gc = body["generationConfig"]
    assert gc["responseMimeType"] == "application/json"
    assert set(gc["responseSchema"]["properties"]) == {"Thought", "Answer"}
    tc = gc["thinkingConfig"]
    assert tc.get("thinkingBudget", tc.get("thinking_budget")) == -1
    assert "temperature" not in gc and "maxOutputTokens" not in gc  # as v1: provider defaults
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"text": "Estimate the axes."}  # order kept, no suffix without the tool
    blob = parts[1].get("inlineData") or parts[1]["inline_data"]
    assert (blob.get("mimeType") or blob.get("mime_type")) == "image/png" and len(blob["data"]) > 100
    assert "tools" not in body


def test_tool_variant_code_execution_rendered_as_v1(server):
    ad = make(server, variant="tool")
    r = ad.generate([make_request(text="Estimate the axes.")])[0]
    assert r.text == (
        "Text Block 1:\nI will measure the ellipse.\n"
        "Code Block 1:\n<code block ignored>\n"
        "Code Result Block 1:\n10.0\n\n"
        "Text Block 2:\nAnswer: 10.0, 4.2\n"
    )
    body = server.requests[0]
    assert body["tools"] == [{"codeExecution": {}}]
    assert body["contents"][0]["parts"][0]["text"] == "Estimate the axes." + TOOL_PROMPT_SUFFIX
    assert TOOL_PROMPT_SUFFIX == "\n\\Please put the final answer after 'Answer:'\n\n"
    assert "responseSchema" not in body["generationConfig"]
    shown = make(server, variant="tool", ignore_code="false").generate([make_request(text="again")])[0]
    assert "Code Block 1:\nprint(12.5 * 0.8)\n" in shown.text


def test_retries_on_429_and_malformed_json(server):
    ad = make(server)
    r = ad.generate([make_request(text="MODE:429once"), make_request(text="MODE:badjson", sample_id="b")])
    assert [x.error for x in r] == [None, None]
    assert ad.attempts == 4 and ad.delays[0] >= 5  # Retry-After honoured


def test_persistent_5xx_is_an_error_then_stops_the_run(server):
    ad = make(server, max_retries="1", failure_threshold="2")
    r = ad.generate([make_request(text="MODE:500 a")])[0]
    assert r.text is None and "gave up after 2 attempts" in r.error and "HTTP 500" in r.error
    with pytest.raises(ModelUnavailableError, match="2 in a row"):
        ad.generate([make_request(text="MODE:500 b", sample_id="b")])


def test_key_appears_in_no_output(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    ad = make(server, variant="tool")
    out = ad.generate([make_request(text="MODE:429once k"), make_request(text="MODE:500 z", sample_id="z")])
    assert server.keys and all(k == KEY for k in server.keys)  # sent, as a header only
    assert all(KEY not in p for p in server.paths)
    files = {
        "identity.json": json.dumps(ad.identity()),
        "info.json": json.dumps(ad.info()),
        "responses.jsonl": "\n".join(r.model_dump_json() for r in out),
        "args.json": json.dumps(ad.args),
        "settings.json": ad.settings.model_dump_json(),
        "log.txt": "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for f in tmp_path.iterdir():
        assert KEY not in f.read_text(), f.name
    assert out[1].error  # the failed one carries a message, still without the key


def test_missing_key_and_bad_args(server, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    r = make(server).generate([make_request()])[0]
    assert r.text is None and "GEMINI_API_KEY or GOOGLE_API_KEY" in r.error
    with pytest.raises(ModelArgsError, match="variant"):
        GeminiAdapter(variant="plugins")
    with pytest.raises(ModelArgsError, match="api_key; valid"):
        GeminiAdapter(api_key=KEY)


@pytest.mark.parametrize("preset", ["gemini-2.5-flash", "gemini-2.5-flash-tool"])
def test_key_appears_in_no_file_of_a_real_run(server, demo_root, tmp_path, capsys, preset):
    """Through the CLI on demo data: every file the run writes is free of the key."""
    from medvision_eval.cli import main

    data = demo_root
    run_dir = tmp_path / "run"
    code = main(["--tasks", "tl_size", "--model", preset, "--model-args", f"base_url={server.url},backoff_base=0.01",
                 "--data", str(data), "--output", str(run_dir), "--limit", "3", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.out
    assert server.keys and all(k == KEY for k in server.keys)
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"run.json", "plan.jsonl", "responses.jsonl", "results.json", "samples_tl_size.jsonl"}
    for p in written:  # bytes: the run directory holds binary files too (plan.columns/columns.bin)
        assert KEY.encode() not in p.read_bytes(), p.name
    assert KEY not in out.out and KEY not in out.err
    rows = [json.loads(line) for line in (run_dir / "samples_tl_size.jsonl").read_text().splitlines()]
    assert rows and all(r["status"] == "ok" for r in rows)
