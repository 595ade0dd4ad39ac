"""The score step's bulk kernels give exactly what their one-at-a-time originals give.

``parse_last_k_many`` / ``parse_last_k_spans`` against ``parse_last_k`` answer by answer, over
hostile texts (separators and newlines inside answers, digits of other scripts, lone surrogates,
huge and long numbers, empty answers, JSON escapes hiding digits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvision_eval.schema import ParseStatus
from medvision_eval.tasks.parsing import parse_last_k, parse_last_k_many, parse_last_k_spans


def assert_same_as_one_by_one(texts, k, failures, values):
    assert len(failures) == len(texts) and values.shape == (len(texts), k)
    for i, text in enumerate(texts):
        one = parse_last_k(text, k)
        if failures[i] is None:
            assert one.status == ParseStatus.ok, (text, one)
            assert one.values == tuple(values[i].tolist()), (text, one, values[i])
            # bit for bit (the sign of zero too)
            assert np.array(one.values, dtype=np.float64).tobytes() == values[i].tobytes()
        else:
            assert failures[i] == one, (text, failures[i], one)
            assert np.isnan(values[i]).all()


NUMBER = st.one_of(
    st.from_regex(r"-?[0-9]{1,22}(\.[0-9]{0,22})?", fullmatch=True),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.9g}"),
    st.sampled_from(["9" * 39, "3.4028235677973366e38", "340282356779733661637539395458142568448",
                     "340282346638528859811704183484516925440", "1" + "0" * 400, "0" * 30 + "1", "-0", "-0.",
                     "0.000000000000000000001", "123456789012345.6", "12345678901234.56", "1234567890123456"]),
)
ODD = st.sampled_from(["\n", "\x00", "\\", "\\u0031", "..", ".", "-", "--", "e", "E+", "٣", "１", "७", "𝟙",
                       "\ud800", "\udfff", "\x1c", "\u2028", " ", ",", "[", "]", "I cannot determine", "I'M SORRY",
                       "K", "\u212a", "as an AI", "é"])
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789.-\n\x00\\ e,٣", max_size=40),
    st.lists(st.one_of(NUMBER, ODD), max_size=10).map("".join),
    st.lists(st.one_of(NUMBER, ODD), max_size=10).map(" ".join),
    st.just(""),
    st.just("   \n\t"),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(HOSTILE_TEXT, max_size=16), st.integers(min_value=1, max_value=5))
def test_parse_last_k_many_is_parse_last_k_of_each_answer(texts, k):
    failures, values = parse_last_k_many(texts, k)
    assert_same_as_one_by_one(texts, k, failures, values)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(NUMBER, min_size=1, max_size=6).map(", ".join), max_size=30),
       st.integers(min_value=1, max_value=4))
def test_bulk_decimal_conversion_rounds_as_str_to_double_to_float32(texts, k):
    failures, values = parse_last_k_many(texts, k)
    assert_same_as_one_by_one(texts, k, failures, values)


def _json_bytes(text: str, ascii_only: bool) -> bytes:
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1].encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(HOSTILE_TEXT, st.booleans()), max_size=16), st.integers(min_value=1, max_value=5),
       st.binary(max_size=4))
def test_parse_last_k_spans_of_json_escaped_answers_is_parse_last_k(items, k, filler):
    """Answers as JSON string bodies inside one buffer (as they stand in responses.jsonl, with
    other bytes between them): a digit hidden in an escape (``\\u0031``) or in another script's
    digits is found, because such rows are handed to ``text_of``."""
    texts = [text for text, _ in items]
    pieces, starts, ends = [], [], []
    at = 0
    for text, ascii_only in items:
        body = _json_bytes(text, ascii_only)
        pieces.append(filler + b'"')
        at += len(filler) + 1
        starts.append(at)
        pieces.append(body)
        at += len(body)
        ends.append(at)
        pieces.append(b'"')
        at += 1
    data = b"".join(pieces)
    asked = []

    def text_of(i: int) -> str:
        asked.append(i)
        return texts[i]

    failures, values = parse_last_k_spans(data, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64), k,
                                          text_of)
    assert_same_as_one_by_one(texts, k, failures, values)
    for i in range(len(texts)):
        if failures[i] is None and i not in asked:  # taken from the bytes: they must be the text
            assert _json_bytes(texts[i], True) == _json_bytes(texts[i], False) == data[starts[i]:ends[i]]


def test_parse_last_k_spans_ranges_may_touch_and_overlap():
    data = b"1 2 3 4 5"
    failures, values = parse_last_k_spans(data, np.array([0, 0, 4]), np.array([5, 9, 9]), 2, lambda i: None)
    assert failures == [None, None, None]
    assert values.tolist() == [[2.0, 3.0], [4.0, 5.0], [4.0, 5.0]]
    # "12" split in two ranges is two numbers, not one
    failures, values = parse_last_k_spans(b"12", np.array([0, 1]), np.array([1, 2]), 1, lambda i: None)
    assert values.tolist() == [[1.0], [2.0]]


def test_bulk_parsers_keep_v1_quirks_and_wording():
    texts = ["1e-3 .5 10-12", "1.2.3.4", "1..2 -.5 5.-3", "x " + "9" * 60 + " 1 2 3", "I cannot tell", "",
             "  ", "1, 234", "٣ ٤ 5 6", "1 2 3 \ud800 4", "-0 -0. 0.0 -000.000"]
    failures, values = parse_last_k_many(texts, 4)
    assert_same_as_one_by_one(texts, 4, failures, values)
    assert values[0].tolist() == [-3.0, 5.0, 10.0, -12.0]
    assert failures[1].detail == "2 numbers found, 4 needed"
    assert failures[3].detail.startswith("number overflows float32")
    assert failures[4].status == ParseStatus.refused and failures[5].detail == "empty answer"
    assert failures[6].detail == "empty answer" and failures[7].detail == "2 numbers found, 4 needed"
    assert failures[8] is None  # Arabic-Indic digits are \d to v1
    assert np.signbit(values[10]).tolist() == [True, True, False, True]


def test_bulk_parsers_reject_k_below_one():
    with pytest.raises(ValueError, match="k >= 1"):
        parse_last_k_many(["1"], 0)
    with pytest.raises(ValueError, match="k >= 1"):
        parse_last_k_spans(b"1", np.array([0]), np.array([1]), 0, lambda i: "1")


def test_bulk_parser_takes_answers_that_are_not_str_one_by_one():
    failures, values = parse_last_k_many([None, "1 2"], 2)  # type: ignore[list-item]
    assert failures[0] == parse_last_k(None, 2) and failures[1] is None and values[1].tolist() == [1.0, 2.0]


# -- answerscan ---------------------------------------------------------------------------------------

import orjson  # noqa: E402

from medvision_eval.answerscan import read_answers_scanned, read_line_exactly, scan_answers  # noqa: E402
from medvision_eval.columnar import _answer_fast, read_answers  # noqa: E402
from medvision_eval.schema import Response, Usage  # noqa: E402
from medvision_eval.store import ResponseLog, ResponseRecord  # noqa: E402

HOSTILE_STRING = st.one_of(
    st.text(max_size=30),
    st.sampled_from(['say "hi"', "back\\slash", "\\u0031", "tab\there", "line\nbreak", "\x00\x1f\x7f", "\ud800 lone",
                     "\udfff", "\ud83d\ude00 pair", "é ٣ 𝟙", "\u2028\u2029", '","error":"x', "null", "", "}\n{"]),
)
FLOAT = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0, 1e308, 5e-324, 0.01]))
TOKENS = st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70))


def _record(key, text, error, latency, pt, ct, stamp):
    return ResponseRecord(key=key, task="detection", sample_id="s/1", prompt_hash="h", time=stamp,
                          response=Response(text=text, error=error, latency_s=latency,
                                            usage=Usage(prompt_tokens=pt, completion_tokens=ct)))


RECORD = st.builds(
    _record,
    st.one_of(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32), st.text(max_size=40)),
    st.one_of(st.none(), HOSTILE_STRING), st.one_of(st.none(), HOSTILE_STRING), FLOAT, TOKENS, TOKENS,
    st.one_of(FLOAT, st.floats(min_value=1e9, max_value=2e9)))


def same_answers(a: dict, b: dict) -> bool:
    """Equal answer dicts, a NaN latency equal to a NaN latency (bit for bit otherwise)."""
    if list(a) != list(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if x[:2] != y[:2] or x[3:] != y[3:] or np.float64(x[2]).tobytes() != np.float64(y[2]).tobytes():
            return False
    return True


def assert_scan_contract(data: bytes):
    """Every line the scan takes is read exactly as read_answers reads it; text ranges hold the
    text's JSON as the samples writer writes it where marked verbatim."""
    scan = scan_answers(data)
    assert scan.consumed == (data.rfind(b"\n") + 1)
    for i in range(scan.lines):
        line = scan.line(i)
        if not scan.canonical[i]:
            continue
        want = _answer_fast(orjson.loads(line))  # the line must be what the fast reader takes
        assert want is not None, line
        got = scan.answer(i)
        assert got[0] == want[0] and got[1][:2] == want[1][:2] and got[1][3:] == want[1][3:], (line, got, want)
        assert np.float64(got[1][2]).tobytes() == np.float64(want[1][2]).tobytes(), line
        if got[1][0] is not None:
            body = data[scan.text_start[i]:scan.text_end[i]]
            assert orjson.loads(b'"' + body + b'"') == got[1][0]
            if scan.text_verbatim[i]:
                assert orjson.dumps(got[1][0])[1:-1] == body
            assert scan.text_escaped[i] == (b"\\" in body)
    return scan


@settings(max_examples=200, deadline=None)
@given(st.lists(RECORD, min_size=1, max_size=12))
def test_scan_reads_what_the_response_log_writes_exactly(tmp_path_factory, records):
    run_dir = tmp_path_factory.mktemp("run")
    with ResponseLog(run_dir) as log:
        for record in records:
            log.append(record)
    data = (run_dir / "responses.jsonl").read_bytes()
    scan = assert_scan_contract(data)
    assert same_answers(read_answers_scanned(run_dir), read_answers(run_dir))
    # what the writer writes for an ordinary answer is taken by the scan, not left to the slow path
    for i, record in enumerate(records):
        r = record.response
        plain = all(v is None or (v.isascii() and v.isprintable() and '"' not in v and "\\" not in v)
                    for v in (r.text, r.error))
        ordinary = (plain and len(record.key) == 32 and all(c in "0123456789abcdef" for c in record.key)
                    and record.surrogates is None and all(v is None or abs(v) < 2**63 for v in
                                                          (r.usage.prompt_tokens, r.usage.completion_tokens)))
        # (strict_dumps writes a record whose JSON holds "NaN" or "Infinity", even inside a string,
        # with json.dumps' spaced separators: not the compact layout)
        compact = scan.line(i).startswith(b'{"key":"')
        if ordinary and compact:
            assert scan.canonical[i], scan.line(i)


CANONICAL = (b'{"key":"0123456789abcdef0123456789abcdef","task":"detection","sample_id":"a/b/1","prompt_hash":"ff",'
             b'"response":{"text":"0.1, 0.2, 0.3, 0.4","error":null,"latency_s":0.01,"usage":{"prompt_tokens":null,'
             b'"completion_tokens":null}},"time":1000000000.0,"surrogates":null}')
MUTANTS = [
    CANONICAL,
    CANONICAL.replace(b',"surrogates":null}', b"}"),
    CANONICAL.replace(b'"0.1, 0.2, 0.3, 0.4"', b"null"),
    CANONICAL.replace(b'"error":null', b'"error":"boom"'),
    CANONICAL.replace(b'"error":null', b'"error":"b\\"oom"'),
    CANONICAL.replace(b"0.1, 0.2", b'0.1 \\"quoted\\" \\\\ \\n \\u0031 \\ud83d\\ude00'),
    CANONICAL.replace(b"0.1, 0.2", b"\\ud800 lone"),
    CANONICAL.replace(b"0.1, 0.2", b"\\uDFFF"),
    CANONICAL.replace(b"0.1, 0.2", b"\\x41"),
    CANONICAL.replace(b"0.1, 0.2", b"tab\there"),
    CANONICAL.replace(b"0.1, 0.2", "é ٣".encode()),
    CANONICAL.replace(b"0.1, 0.2", b"\xff\xfe"),
    CANONICAL.replace(b"0.1, 0.2", b"\xed\xa0\x80"),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":1e309'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":-0.0'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":-0'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":12'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":012'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":"0.01"'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":NaN'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s": 0.01'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":[1]'),
    CANONICAL.replace(b'"latency_s":0.01', b'"latency_s":true'),
    CANONICAL.replace(b'"prompt_tokens":null', b'"prompt_tokens":7'),
    CANONICAL.replace(b'"prompt_tokens":null', b'"prompt_tokens":9223372036854775808'),
    CANONICAL.replace(b'"prompt_tokens":null', b'"prompt_tokens":18446744073709551616'),
    CANONICAL.replace(b'"prompt_tokens":null', b'"prompt_tokens":7.0'),
    CANONICAL.replace(b'"prompt_tokens":null', b'"prompt_tokens":-1'),
    CANONICAL.replace(b'"completion_tokens":null', b'"completion_tokens":1e3'),
    CANONICAL.replace(b'"time":1000000000.0', b'"time":1e400'),
    CANONICAL.replace(b'"time":1000000000.0', b'"time":null'),
    CANONICAL.replace(b'"time":1000000000.0', b'"time":1,"x":2'),
    CANONICAL.replace(b'"surrogates":null', b'"surrogates":{"text":[[0,55296]]}'),
    CANONICAL.replace(b'"surrogates":null', b'"surrogates":null,"null_reasons":{}'),
    CANONICAL.replace(b'"task":"detection",', b'"task":"detection","task":"other",'),
    CANONICAL.replace(b'"task":"detection",', b''),
    CANONICAL.replace(b'"key":"0123456789abcdef0123456789abcdef","task":"detection"',
                      b'"task":"detection","key":"0123456789abcdef0123456789abcdef"'),
    CANONICAL.replace(b"0123456789abcdef0123456789abcdef", b"0123456789ABCDEF0123456789abcdef"),
    CANONICAL.replace(b"0123456789abcdef0123456789abcdef", b"short"),
    CANONICAL.replace(b'"usage":{', b'"usage":{"extra":1,'),
    CANONICAL.replace(b'{"key"', b' {"key"'),
    CANONICAL.replace(b'{"key"', b'\xef\xbb\xbf{"key"'),
    CANONICAL + b" ",
    CANONICAL + b"}",
    CANONICAL[:-1],
    CANONICAL.replace(b'"sample_id":"a/b/1"', b'"sample_id":null'),
    CANONICAL.replace(b'"sample_id":"a/b/1"', b'"sample_id":"a\xc3\xa9"'),
    b"",
    b"   ",
    b"{}",
    b"[1, 2]",
    b'{"key": "k", "task": "t", "sample_id": "s", "prompt_hash": "h", "response": {"text": "1"}}',
]


@pytest.mark.parametrize("line", MUTANTS, ids=range(len(MUTANTS)))
def test_scan_takes_a_line_only_when_it_reads_it_exactly(line):
    scan = assert_scan_contract(line + b"\n" + CANONICAL + b"\n")
    assert scan.canonical[1]


def test_scan_of_mutants_read_like_read_answers(tmp_path):
    lines = []
    for i, line in enumerate(MUTANTS):  # distinct keys, so every line's answer is kept
        lines.append(line.replace(b"0123456789abcdef0123456789abcdef", f"{i:032x}".encode()))
    good = []
    for line in lines:
        try:
            read_line_exactly(line, "x:1")
            good.append(line)
        except ValueError:
            pass
    (tmp_path / "responses.jsonl").write_bytes(b"\n".join(good) + b"\n" + CANONICAL[:40])  # and a torn tail
    assert same_answers(read_answers_scanned(tmp_path), read_answers(tmp_path))
    assert len(read_answers(tmp_path)) > 20


@pytest.mark.parametrize("bad", [b"{not json", CANONICAL.replace(b'"text":"', b'"text":["', 1)[:-1] + b"]}"])
def test_scan_reader_names_file_and_line_of_a_bad_line(tmp_path, bad):
    (tmp_path / "responses.jsonl").write_bytes(CANONICAL + b"\n" + bad + b"\n")
    with pytest.raises(ValueError, match=r"responses\.jsonl:2: not a valid response record") as scanned:
        read_answers_scanned(tmp_path)
    with pytest.raises(ValueError) as exact:
        read_answers(tmp_path)
    assert str(scanned.value) == str(exact.value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(CANONICAL)), st.integers(min_value=0, max_value=3),
                          st.binary(max_size=3) | st.sampled_from([b'"', b"\\", b",", b":", b"}", b"{", b"null",
                                                                    b"1", b"e", b"-", b" ", b"\n"])),
                min_size=1, max_size=3))
def test_scan_of_mutated_lines_keeps_its_contract(edits):
    line = CANONICAL
    for at, cut, insert in edits:
        line = line[:at] + insert + line[at + cut:]
    assert_scan_contract(line + b"\n" + CANONICAL + b"\n" + line)


def test_scan_of_bench_shaped_block_takes_every_line_and_duplicates_follow_the_rule(tmp_path):
    from medvision_eval.store import strict_dumps

    lines = []
    for i in range(300):
        r = _record(f"{i % 250:032x}", None if i % 7 == 0 else f"{i / 7:.4f}, 0.5", "boom" if i % 7 == 0 else None,
                    0.01 * i, None if i % 3 else i, None, 1.0e9 + i)
        lines.append(strict_dumps(r))
    (tmp_path / "responses.jsonl").write_text("\n".join(lines) + "\n")
    scan = scan_answers((tmp_path / "responses.jsonl").read_bytes())
    assert scan.canonical.all() and scan.lines == 300
    assert same_answers(read_answers_scanned(tmp_path), read_answers(tmp_path))


def test_scan_text_blob_feeds_the_span_parser(tmp_path):
    texts = ["0.1, 0.2, 0.3, 0.4", None, 'a "quoted" 1 2 3 4', "\\u0031 2 3 4".encode().decode("unicode_escape"),
             "٣ 1 2 3", "I cannot", "", "tab\t1 2 3 4 5"]
    with ResponseLog(tmp_path) as log:
        for i, text in enumerate(texts):
            log.append(_record(f"{i:032x}", text, None if text is not None else "boom", 0.5, None, None, 1.0))
    scan = scan_answers((tmp_path / "responses.jsonl").read_bytes())
    assert scan.canonical.all()
    blob, starts, ends = scan.text_blob()
    failures, values = parse_last_k_spans(blob, starts, ends, 4, scan.text)
    ok = [i for i, t in enumerate(texts) if t is not None]
    want_f, want_v = parse_last_k_many([texts[i] for i in ok], 4)
    assert [failures[i] for i in ok] == want_f
    assert np.array_equal(values[ok], want_v, equal_nan=True)


# -- the store's write path ------------------------------------------------------------------------------

import os  # noqa: E402
import threading  # noqa: E402

from medvision_eval import secrets, store  # noqa: E402


def _old_storable_pieces(lines):
    """storable_pieces as it was (473bce8): the reference for the bytes."""
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) >= store.LINES_PER_PIECE:
            yield store._storable_bytes("".join(batch))
            batch.clear()
    if batch:
        yield store._storable_bytes("".join(batch))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=20).map(lambda t: t + "\n"), max_size=40), st.integers(min_value=1, max_value=7))
def test_storable_pieces_are_the_same_bytes(lines, per_piece):
    secrets.register("s3cr3t-value-xyz")
    lines = lines + ["key s3cr3t-value-xyz here\n", "lone \ud800\n"]
    old, store.LINES_PER_PIECE = store.LINES_PER_PIECE, per_piece
    try:
        assert b"".join(store.storable_pieces(iter(lines))) == b"".join(_old_storable_pieces(lines))
    finally:
        store.LINES_PER_PIECE = old
    assert b"s3cr3t" not in b"".join(store.storable_pieces(lines))


@pytest.fixture
def small_flushes(monkeypatch):
    """Background flushes every 1000 bytes; ``.calls`` names the thread of each, ``.done`` is set
    by the first."""
    monkeypatch.setattr(store, "FLUSH_EVERY", 1000)
    real = os.fdatasync

    class Flushes(list):
        done = threading.Event()

    calls = Flushes()

    def counted(fd):
        calls.append(threading.current_thread().name)
        result = real(fd)
        calls.done.set()
        return result

    monkeypatch.setattr(os, "fdatasync", counted)
    return calls


def test_large_write_flushes_in_the_background_and_writes_the_same_bytes(tmp_path, small_flushes, monkeypatch):
    monkeypatch.setattr(store, "LINES_PER_PIECE", 100)
    lines = [f"row {i} \ud800 é\n" for i in range(3000)]

    def produced():  # a slow producer: the second half only once the helper has flushed the first
        for i, line in enumerate(lines):
            if i == 1500:
                assert small_flushes.done.wait(30)
            yield line

    store.write_lines(tmp_path / "out.jsonl", produced())
    assert (tmp_path / "out.jsonl").read_bytes() == "".join(lines).replace("\ud800", "\ufffd").encode()
    assert small_flushes and set(small_flushes) == {"medvision-eval-flush"}
    assert not [t for t in threading.enumerate() if t.name == "medvision-eval-flush"]
    assert not list(tmp_path.glob(".*.tmp"))
    small = tmp_path / "small.json"
    small_flushes.clear()
    store.atomic_write_text(small, "{}\n")  # a small file starts no helper
    assert small.read_text() == "{}\n" and small_flushes == []


def test_failed_large_write_leaves_the_old_file_and_no_temp_or_thread(tmp_path, small_flushes):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")

    def pieces():
        for i in range(200):
            if i == 100:
                assert small_flushes.done.wait(30)
            yield b"x" * 100 + b"\n"
        raise RuntimeError("formatting failed")

    with pytest.raises(RuntimeError, match="formatting failed"):
        store.atomic_write_pieces(path, pieces())
    assert small_flushes  # the helper had started
    assert path.read_text() == "old\n" and not list(tmp_path.glob(".*.tmp"))
    assert not [t for t in threading.enumerate() if t.name == "medvision-eval-flush"]


def test_a_failed_background_flush_fails_the_write(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "FLUSH_EVERY", 1000)
    monkeypatch.setattr(store, "LINES_PER_PIECE", 100)
    tried = threading.Event()

    def broken(fd):
        tried.set()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")

    def produced():
        for i in range(1000):
            if i == 500:
                assert tried.wait(30)
            yield f"row {i}\n"

    with pytest.raises(OSError, match="Input/output error"):
        store.write_lines(path, produced())
    assert path.read_text() == "old\n" and not list(tmp_path.glob(".*.tmp"))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=20).map(lambda t: t.replace("\n", " ") + "\n"), max_size=30),
       st.integers(min_value=1, max_value=5))
def test_write_byte_lines_writes_what_write_lines_writes(tmp_path_factory, lines, per_piece):
    secrets.register("s3cr3t-value-xyz")
    secrets.register("é-secret-ü-long")
    lines = lines + ["key s3cr3t-value-xyz é-secret-ü-long here\n"]
    tmp = tmp_path_factory.mktemp("w")
    store.write_lines(tmp / "a.jsonl", lines)
    encoded = ["".join(lines[i:i + per_piece]).encode("utf-8", "surrogatepass") for i in range(0, len(lines), per_piece)]
    if any("\ud800" <= c <= "\udfff" for line in lines for c in line):
        return  # not UTF-8: write_byte_lines takes UTF-8 only
    store.write_byte_lines(tmp / "b.jsonl", encoded)
    assert (tmp / "a.jsonl").read_bytes() == (tmp / "b.jsonl").read_bytes()
    assert b"s3cr3t" not in (tmp / "b.jsonl").read_bytes()


def test_scan_takes_only_hex_keys_so_callers_can_pack_them():
    upper = CANONICAL.replace(b"0123456789abcdef0123456789abcdef", b"0123456789ABCDEF0123456789abcdef")
    odd = CANONICAL.replace(b"0123456789abcdef0123456789abcdef", b"0123456789abcdef0123456789abcde!")
    scan = assert_scan_contract(upper + b"\n" + odd + b"\n" + CANONICAL + b"\n")
    assert scan.canonical.tolist() == [False, False, True]
    assert bytes.fromhex(scan.keys[2].decode("ascii")) == bytes.fromhex("0123456789abcdef0123456789abcdef")


def test_one_large_piece_is_written_in_parts_with_flushes_between(tmp_path, small_flushes):
    text = "".join(f"line {i} é\n" for i in range(2000))
    store.atomic_write_text(tmp_path / "big.txt", text)
    assert (tmp_path / "big.txt").read_text(encoding="utf-8") == text
    assert not [t for t in threading.enumerate() if t.name == "medvision-eval-flush"]
    pieces = [b"a" * 10, b"b" * 2500, b"c" * 999, b"d", b"e" * 3001]
    store.atomic_write_pieces(tmp_path / "parts.bin", iter(pieces))
    assert (tmp_path / "parts.bin").read_bytes() == b"".join(pieces)
