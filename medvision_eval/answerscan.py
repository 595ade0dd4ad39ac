"""Bulk scan of ``responses.jsonl`` lines into columns, for the score step at a million answers.

:func:`scan_answers` reads a block of complete lines in the byte layout
:class:`medvision_eval.store.ResponseLog` writes (``strict_dumps`` of a
:class:`~medvision_eval.store.ResponseRecord`: pydantic's compact JSON, fields in model order)::

    {"key":"<32 hex>","task":"…","sample_id":"…","prompt_hash":"…","response":{"text":"…"|null,
     "error":"…"|null,"latency_s":<number>,"usage":{"prompt_tokens":<int>|null,
     "completion_tokens":<int>|null}},"time":<number>[,"surrogates":null]}

(one line, no spaces; ``,"surrogates":null`` may be absent). It finds every line's fields with
array operations over the whole block instead of a JSON parse per line, and keeps the answers in
columns: fixed-width keys, the answer text as a byte range of the block (its JSON text, which is
the text itself when it holds no backslash), latencies and token counts as arrays -- no Python
object per line.

A line is taken (``AnswerScan.canonical[i]``) only when the scan proves it is that layout and
valid JSON that the exact reader would decode to the same values: its strings hold no control
byte and are valid UTF-8, the key is 32 lowercase hex digits (as every cache key), the other strings outside the
answer text hold no backslash, the numbers are what ``orjson`` reads them as with the types the
models accept. An answer text with JSON escapes is decoded by ``orjson`` itself (rows marked in
``text_escaped``). Every other line -- blank, reordered or extra fields, ``null_reasons``,
``surrogates`` set, an error text with escapes, a number beyond int64 or a float that overflows,
invalid UTF-8, spaces, a torn line -- is left to the caller, who reads it exactly as
:func:`medvision_eval.columnar.read_answers` does (:func:`read_line_exactly`), so the result is
the same whatever the file holds. :func:`read_answers_scanned` is ``read_answers`` built on this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from .columnar import Answer, _answer_fast, _answer_of
from .store import ResponseRecord, load_model_line, response_files

BLOCK = 1 << 24  # bytes scanned at a time by read_answers_scanned
KEY_WIDTH = 32


@dataclass
class AnswerScan:
    """Columns of the complete lines of one block of ``responses.jsonl`` (see :func:`scan_answers`).

    Per line ``i`` (``0 <= i < lines``), in file order:

    - ``line_start[i]``, ``line_end[i]``: the line is ``data[line_start[i]:line_end[i]]`` (without
      its newline);
    - ``canonical[i]``: the columns below hold this line's answer; where False, read the line with
      :func:`read_line_exactly` (it may be blank, which the exact reader skips);
    - ``keys[i]``: the cache key, 32 lowercase hex digits as ASCII bytes (dtype ``S32``; a line
      whose key is anything else is not canonical; ``b""`` where not canonical);
    - ``text_start[i]``, ``text_end[i]``: the answer text's JSON string body (between its quotes)
      is ``data[text_start[i]:text_end[i]]``; ``-1, -1`` for a null text. Where
      ``text_escaped[i]`` is False the body holds no backslash and its UTF-8 *is* the text; where
      True, the decoded text is ``escaped_texts[i]``. Either way the body is byte for byte
      ``orjson.dumps(text)[1:-1]`` (what the samples writer's ``_json_str`` writes) unless
      ``text_escaped[i]`` and not ``text_verbatim[i]``;
    - ``error_start[i]``, ``error_end[i]``: the same for the error text (never escaped in a
      canonical line); ``-1, -1`` for null;
    - ``latency[i]``: ``latency_s`` as a float (``float()`` of what orjson reads);
    - ``prompt_tokens[i]``, ``completion_tokens[i]``: int64, valid where the matching
      ``*_null[i]`` is False (None otherwise).

    :meth:`answer` gives line ``i``'s ``(key, Answer)`` exactly as
    :func:`medvision_eval.columnar.read_answers` would read the line.
    """

    data: bytes
    consumed: int  # bytes of data up to and including the last newline (the rest is an unfinished line)
    line_start: np.ndarray
    line_end: np.ndarray
    canonical: np.ndarray
    keys: np.ndarray
    text_start: np.ndarray
    text_end: np.ndarray
    text_escaped: np.ndarray
    text_verbatim: np.ndarray
    error_start: np.ndarray
    error_end: np.ndarray
    latency: np.ndarray
    prompt_tokens: np.ndarray
    prompt_tokens_null: np.ndarray
    completion_tokens: np.ndarray
    completion_tokens_null: np.ndarray
    escaped_texts: dict[int, str] = field(default_factory=dict)

    @property
    def lines(self) -> int:
        return len(self.line_start)

    def line(self, i: int) -> bytes:
        return self.data[self.line_start[i]:self.line_end[i]]

    def text(self, i: int) -> str | None:
        """Line ``i``'s answer text (canonical lines only)."""
        if self.text_start[i] < 0:
            return None
        if self.text_escaped[i]:
            return self.escaped_texts[i]
        return self.data[self.text_start[i]:self.text_end[i]].decode("utf-8")

    def error(self, i: int) -> str | None:
        if self.error_start[i] < 0:
            return None
        return self.data[self.error_start[i]:self.error_end[i]].decode("utf-8")

    def key(self, i: int) -> str:
        return self.keys[i].decode("ascii")

    def text_blob(self) -> tuple[bytes, np.ndarray, np.ndarray]:
        """The answer texts' JSON bodies packed into one bytes (so the block can be dropped):
        ``(blob, starts, ends)`` with line ``i``'s body at ``blob[starts[i]:ends[i]]`` (empty for a
        null text or a line that is not canonical). ``parse_last_k_spans(blob, starts, ends, k,
        scan.text)`` parses them (it asks ``scan.text(i)`` only for rows it cannot read from the
        bytes, escaped ones among them)."""
        has = self.canonical & (self.text_start >= 0)
        length = np.where(has, self.text_end - self.text_start, 0)
        ends = np.cumsum(length)
        starts = ends - length
        total = int(ends[-1]) if len(ends) else 0
        if not total:
            return b"", starts, ends
        buf = np.frombuffer(self.data, dtype=np.uint8)
        source = np.repeat(np.where(has, self.text_start, 0) - starts, length)
        return buf[np.arange(total, dtype=np.int64) + source].tobytes(), starts, ends

    def answers(self, rows: np.ndarray) -> tuple[list[str], list[Answer]]:
        """:meth:`answer` of each of ``rows`` (canonical lines), built column by column."""
        keys_bytes = self.keys[rows]
        try:
            keys = keys_bytes.astype(f"U{KEY_WIDTH}").tolist()  # ASCII keys (every cache key)
        except UnicodeDecodeError:
            keys = [k.decode("utf-8") for k in keys_bytes.tolist()]
        n = len(rows)
        start, end = self.text_start[rows], self.text_end[rows]
        has = start >= 0
        length = np.where(has, end - start, 0)
        stop = np.cumsum(length)
        at = stop - length
        buf = np.frombuffer(self.data, dtype=np.uint8)
        blob = buf[np.arange(int(stop[-1]) if n else 0, dtype=np.int64) + np.repeat(np.where(has, start, 0) - at,
                                                                                   length)].tobytes()
        if blob.isascii():  # character offsets are byte offsets
            joined = blob.decode("ascii")
            texts = list(map(joined.__getitem__, map(slice, at.tolist(), stop.tolist())))
        else:
            texts = [blob[a:b].decode("utf-8") for a, b in zip(at.tolist(), stop.tolist())]
        if not has.all():
            for j in np.flatnonzero(~has).tolist():
                texts[j] = None
        if self.escaped_texts:
            for j, i in enumerate(rows.tolist()):
                if self.text_escaped[i]:
                    texts[j] = self.escaped_texts[i]
        errors: list[str | None] = [None] * n
        for j in np.flatnonzero(self.error_start[rows] >= 0).tolist():
            errors[j] = self.error(int(rows[j]))
        tokens = []
        for values, nulls in ((self.prompt_tokens, self.prompt_tokens_null),
                              (self.completion_tokens, self.completion_tokens_null)):
            null = nulls[rows]
            column: list[int | None] = [None] * n if null.all() else values[rows].tolist()
            if not null.all():
                for j in np.flatnonzero(null).tolist():
                    column[j] = None
            tokens.append(column)
        return keys, list(zip(texts, errors, self.latency[rows].tolist(), *tokens))

    def answer(self, i: int) -> tuple[str, Answer]:
        """``(key, (text, error, latency_s, prompt_tokens, completion_tokens))`` of canonical line ``i``."""
        pt = None if self.prompt_tokens_null[i] else int(self.prompt_tokens[i])
        ct = None if self.completion_tokens_null[i] else int(self.completion_tokens[i])
        return self.key(i), (self.text(i), self.error(i), float(self.latency[i]), pt, ct)


def read_line_exactly(raw: bytes, where: str) -> tuple[str, Answer] | None:
    """One line as :func:`medvision_eval.columnar.read_answers` reads it: ``None`` for a blank line,
    else ``(key, Answer)``; a line the models reject raises ``ValueError("<where>: not a valid
    response record: ...")`` (``where`` is ``path:line``)."""
    if not raw.strip():
        return None
    try:
        found = _answer_fast(orjson.loads(raw))
    except orjson.JSONDecodeError:
        found = None
    if found is None:
        try:
            record = load_model_line(ResponseRecord, raw.decode("utf-8"))
        except ValueError as exc:
            raise ValueError(f"{where}: not a valid response record: {exc}") from exc
        found = (record.key, _answer_of(record))
    return found


# -- the scan --------------------------------------------------------------------------------------

_QUOTE, _BACKSLASH, _NEWLINE = 34, 92, 10
# a line with a backslash, matched whole (only the answer text may hold escapes)
_PLAIN = rb'[^"\\\x00-\x1f]*'
_ESCAPED_LINE = re.compile(
    rb'\{"key":"[0-9a-f]{32}","task":"' + _PLAIN + rb'","sample_id":"' + _PLAIN + rb'","prompt_hash":"' + _PLAIN
    + rb'","response":\{"text":(?:null|"((?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*)"),"error":(?:null|"('
    + _PLAIN + rb')"),"latency_s":([^,]*),"usage":\{"prompt_tokens":([^,]*),"completion_tokens":([^}]*)\}\},'
    rb'"time":([^,}]*)(?:,"surrogates":null)?\}\Z')


_NUMBER_BYTE = np.zeros(256, dtype=bool)
_NUMBER_BYTE[list(b"0123456789.eE+-nul,")] = True
_NUMBER = re.compile(rb"-?[0-9][-+.eE0-9]*|null")
_NUMBER_WIDTH = 40  # ranges up to this long are laid out in a matrix for one parse


def _gather(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, sep: int) -> bytes:
    """The byte ranges ``buf[starts[i]:ends[i]]``, each followed by ``sep``, as one bytes."""
    width = ends - starts + 1
    total = int(width.sum())
    if not total:
        return b""
    at = np.cumsum(width) - width
    out = buf[np.arange(total, dtype=np.int64) + np.repeat(starts - at, width)]
    out[at + width - 1] = sep
    return out.tobytes()


def _json_numbers(data: bytes, starts: np.ndarray, ends: np.ndarray) -> list:
    """``orjson.loads`` of each range ``data[starts[i]:ends[i]]``, a JSON number or ``null`` (any
    other text: ``_BAD``). All at once as one JSON array when the ranges hold only number bytes
    (each range is then one element, or the count is off and they are read one by one)."""
    if not len(starts):
        return []
    block = np.frombuffer(data, dtype=f"S{len(data)}", count=1)
    if ((ends - starts) == 4).all() and _S.startswith(block, b"null", starts, ends).all():
        return [None] * len(starts)  # all null (token counts the model did not report)
    buf = np.frombuffer(data, dtype=np.uint8)
    length = ends - starts
    width = int(length.max())
    if width <= _NUMBER_WIDTH and int(length.min()) > 0 and int(ends.max()) + width <= len(buf):
        # each range in a row of `width` bytes, padded with spaces (JSON allows them after a number)
        rows = _rows_of(buf, starts, width + 1)
        inside = np.arange(width + 1) < length[:, None]
        plain = _NUMBER_BYTE[rows[inside]].all() and not (rows[inside] == ord(",")).any()
        rows[~inside] = ord(" ")
        rows[:, width] = ord(",")
        text = rows.tobytes()
    else:
        text = _gather(buf, starts, ends, ord(","))
        plain = _NUMBER_BYTE[np.frombuffer(text, dtype=np.uint8)].all()
    if plain:
        try:
            values = orjson.loads(b"[" + text[:-1] + b"]")
            if len(values) == len(starts):
                return values
        except orjson.JSONDecodeError:
            pass
    return [_json_number(data[a:b]) for a, b in zip(starts.tolist(), ends.tolist())]  # only the bad ones fail


_NUMBER_KIND = np.zeros(256, dtype=np.uint8)  # 1: a digit, 2: the decimal point
_NUMBER_KIND[48:58] = 1
_NUMBER_KIND[46] = 2


def _windows(buf: np.ndarray, width: int) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(buf, shape=(len(buf) - width + 1, width), strides=(1, 1), writeable=False)


def _rows_of(buf: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8: the ``width`` bytes from each start (zeros past the end of ``buf``),
    gathered as rows of a strided view (no index matrix)."""
    last = len(buf) - width  # the last start with ``width`` bytes after it
    if last >= 0:
        rows = _windows(buf, width)[np.minimum(starts, last)]
    else:
        rows = np.zeros((len(starts), width), dtype=np.uint8)
    late = np.flatnonzero(starts > last)
    if late.size:  # near the end: from a copy of the end padded with zeros
        base = int(starts[late].min())
        padded = np.concatenate([buf[base:], np.zeros(width, dtype=np.uint8)])
        rows[late] = _windows(padded, width)[starts[late] - base]
    return rows


def _plain_numbers(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    r"""Which ranges ``buf[starts[i]:ends[i]]`` are JSON numbers of the plain form
    ``-?(0|[1-9][0-9]*)(\.[0-9]+)?`` of at most :data:`_NUMBER_WIDTH` bytes: ``orjson`` reads every
    such text as an int or a float, without error (no exponent, so nothing overflows). Checked for
    all ranges at once; a range not of this form may still be a number (``1e5``): the caller
    reads those with :func:`_json_numbers`."""
    n = len(starts)
    length = ends - starts
    ok = (length >= 1) & (length <= _NUMBER_WIDTH)
    if not n or not ok.any():
        return ok
    width = int(length[ok].max())
    at = np.arange(width)
    c = _rows_of(buf, starts, width)
    inside = at < length[:, None]
    kind = _NUMBER_KIND[c]
    kind[~inside] = 0
    digit = kind == 1
    dot = kind == 2
    neg = c[:, 0] == 45
    dots = np.count_nonzero(dot, axis=1)
    ok &= np.count_nonzero(kind, axis=1) + neg == length  # nothing else
    ok &= dots <= 1
    rows = np.arange(n)
    first = np.minimum(neg.astype(np.int64), width - 1)
    ok &= digit[rows, first]  # a digit opens the number (after its sign)
    ok &= digit[rows, np.clip(length - 1, 0, width - 1)]  # and closes it (no trailing dot)
    after = np.minimum(first + 1, width - 1)
    ok &= ~((c[rows, first] == 48) & (first + 1 < length) & ~dot[rows, after])  # 0 only alone or before the dot
    return ok


def _json_number(item: bytes) -> object:
    if _NUMBER.fullmatch(item) is None:
        return _BAD
    try:
        return orjson.loads(item)
    except orjson.JSONDecodeError:
        return _BAD


_BAD = object()


def scan_answers(data: bytes) -> AnswerScan:
    """Columns of every complete line of ``data`` (a block of ``responses.jsonl`` starting at a
    line start); bytes after the last newline are not looked at (``AnswerScan.consumed``).

    Contract: for every line ``i`` with ``canonical[i]``, ``scan.answer(i)`` equals what
    :func:`medvision_eval.columnar.read_answers` reads from that line (``_answer_fast`` of
    ``orjson.loads(line)``); every other line must be read with :func:`read_line_exactly`.
    Which answer wins for a key that occurs more than once is the caller's rule (see
    :func:`read_answers_scanned`)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newline = np.flatnonzero(buf == _NEWLINE)
    n = len(newline)
    consumed = int(newline[-1]) + 1 if n else 0
    line_start = np.zeros(n, dtype=np.int64)
    line_start[1:] = newline[:-1] + 1
    line_end = newline.astype(np.int64)
    scan = AnswerScan(
        data=data, consumed=consumed, line_start=line_start, line_end=line_end,
        canonical=np.zeros(n, dtype=bool), keys=np.zeros(n, dtype=f"S{KEY_WIDTH}"),
        text_start=np.full(n, -1, dtype=np.int64), text_end=np.full(n, -1, dtype=np.int64),
        text_escaped=np.zeros(n, dtype=bool), text_verbatim=np.zeros(n, dtype=bool),
        error_start=np.full(n, -1, dtype=np.int64), error_end=np.full(n, -1, dtype=np.int64),
        latency=np.zeros(n, dtype=np.float64),
        prompt_tokens=np.zeros(n, dtype=np.int64), prompt_tokens_null=np.ones(n, dtype=bool),
        completion_tokens=np.zeros(n, dtype=np.int64), completion_tokens_null=np.ones(n, dtype=bool))
    if not n:
        return scan
    view = buf[:consumed]
    # Lines the layout check below does not take: a control byte (other than the newline) or a
    # backslash (escapes: matched line by line), or a byte >= 0x80 that is not valid UTF-8.
    odd_line = np.zeros(n, dtype=bool)
    control = np.zeros(n, dtype=bool)
    if np.count_nonzero(view < 32) != n:
        at = np.flatnonzero((view < 32) & (view != _NEWLINE))
        control[np.searchsorted(newline, at)] = True
    if data.find(b"\\", 0, consumed) >= 0:
        odd_line[np.searchsorted(newline, np.flatnonzero(view == _BACKSLASH))] = True
    odd_line |= control
    if not data.isascii():
        high = np.flatnonzero(view >= 0x80)
        for i in np.unique(np.searchsorted(newline, high)).tolist():
            try:
                data[line_start[i]:line_end[i]].decode("utf-8")
            except UnicodeDecodeError:
                odd_line[i] = control[i] = True  # the exact reader names the line
    _scan_plain(scan, view, np.flatnonzero(~odd_line))
    escaped = np.flatnonzero(odd_line & ~control)
    if escaped.size:
        _scan_escaped(scan, view, escaped)
    return scan


_S = np.strings
_HEX = np.zeros(256, dtype=bool)
_HEX[list(b"0123456789abcdef")] = True
# The fixed text between the values of a canonical line.
_HEAD = b'{"key":"'
_AFTER_KEY, _AFTER_TASK, _AFTER_ID = b'","task":"', b'","sample_id":"', b'","prompt_hash":"'
_AFTER_HASH = b'","response":{"text":'
_NULL_TEXT, _AFTER_TEXT_STR = b'null,"error":', b'","error":'
_NULL_ERROR, _AFTER_ERROR_STR = b'null,"latency_s":', b'","latency_s":'
_AFTER_LATENCY, _AFTER_PROMPT, _AFTER_COMPLETION = b',"usage":{"prompt_tokens":', b',"completion_tokens":', b'}},"time":'
_SURROGATES_END = b',"surrogates":null}'
_NULL_USAGE = _AFTER_LATENCY + b"null" + _AFTER_PROMPT + b"null" + _AFTER_COMPLETION


def _scan_plain(scan: AnswerScan, view: np.ndarray, rows: np.ndarray) -> None:
    """The layout check of lines without a backslash or control byte: each fixed piece of the
    layout is matched where the value before it ends (a string at its first quote, a number at
    the first occurrence of the piece, what lies between then checked as a number), for all lines
    at once, with numpy's string functions on the whole block as one string (no copy per line)."""
    if not rows.size or scan.consumed < len(_HEAD) + KEY_WIDTH:
        return  # (no line of a block this short is canonical: a blank line, "{}" ...)
    block = np.frombuffer(scan.data, dtype=f"S{scan.consumed}", count=1)
    start, end = scan.line_start[rows], scan.line_end[rows]
    size = len(view)
    ok = _S.startswith(block, _HEAD, start, end)
    key_at = start + len(_HEAD)
    ok &= _S.startswith(block, _AFTER_KEY, key_at + KEY_WIDTH, end)

    def after(literal: bytes, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where ``literal`` first occurs from ``at`` (the end of the value before it) and the
        offset after it (``end`` where it does not occur: the line is dropped)."""
        nonlocal ok
        found = _S.find(block, literal, at, end)
        ok &= found >= at
        return found, np.where(ok, found + len(literal), end)

    def closing(literal: bytes, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first quote from ``at`` closes the string value starting there (no value holds a
        backslash, so no quote in it is escaped): where it is, it must begin ``literal``; the
        offset after that (``end`` where not: the line is dropped)."""
        nonlocal ok
        found = _S.find(block, b'"', at, end)
        ok &= (found >= at) & _S.startswith(block, literal, found, end)
        return found, np.where(ok, found + len(literal), end)

    task_at = key_at + KEY_WIDTH + len(_AFTER_KEY)
    _, id_at = closing(_AFTER_TASK, task_at)
    _, hash_at = closing(_AFTER_ID, id_at)
    _, text_at = closing(_AFTER_HASH, hash_at)
    # the text: null, or a string closed by the '","error":' after it
    text_null = _S.startswith(block, _NULL_TEXT, text_at, end)
    text_str = ~text_null & (view[np.minimum(text_at, size - 1)] == _QUOTE) & ok
    text_end = np.where(text_str, _S.find(block, b'"', text_at + 1, end), -1)
    text_str &= (text_end > text_at) & _S.startswith(block, _AFTER_TEXT_STR, text_end, end)
    ok &= text_null | text_str
    error_at = np.where(text_null, text_at + len(_NULL_TEXT), np.where(text_str, text_end + len(_AFTER_TEXT_STR), end))
    # the error: null, or a string closed by the '","latency_s":' after it
    error_null = _S.startswith(block, _NULL_ERROR, error_at, end)
    error_str = ~error_null & (view[np.minimum(error_at, size - 1)] == _QUOTE) & ok
    error_end = np.where(error_str, _S.find(block, b'"', error_at + 1, end), -1)
    error_str &= (error_end > error_at) & _S.startswith(block, _AFTER_ERROR_STR, error_end, end)
    ok &= error_null | error_str
    latency_at = np.where(error_null, error_at + len(_NULL_ERROR),
                          np.where(error_str, error_end + len(_AFTER_ERROR_STR), end))
    # the numbers, each up to the first fixed piece after it (a number holds no ',' or '}'; what
    # lies between is checked as a number below); token counts are usually both null: one check
    latency_end = _S.find(block, b",", latency_at, end)
    ok &= latency_end > latency_at
    null_usage = ok & _S.startswith(block, _NULL_USAGE, latency_end, end)
    prompt_at, prompt_end = latency_end + len(_AFTER_LATENCY), np.zeros_like(latency_end)
    completion_at, completion_end = np.zeros_like(latency_end), np.zeros_like(latency_end)
    time_at = np.where(null_usage, latency_end + len(_NULL_USAGE), end)
    usage = np.flatnonzero(ok & ~null_usage)
    if usage.size:  # some token count is given: each number, then the piece after it
        u_end = end[usage]
        ok[usage] &= _S.startswith(block, _AFTER_LATENCY, latency_end[usage], u_end)
        found = _S.find(block, b",", prompt_at[usage], u_end)
        ok[usage] &= (found > prompt_at[usage]) & _S.startswith(block, _AFTER_PROMPT, found, u_end)
        prompt_end[usage] = found
        completion_at[usage] = found + len(_AFTER_PROMPT)
        found = _S.find(block, b"}", completion_at[usage], u_end)
        ok[usage] &= (found > completion_at[usage]) & _S.startswith(block, _AFTER_COMPLETION, found, u_end)
        completion_end[usage] = found
        time_at[usage] = np.where(ok[usage], found + len(_AFTER_COMPLETION), u_end)
    with_surrogates = _S.endswith(block, _SURROGATES_END, time_at, end)
    time_end = np.where(with_surrogates, end - len(_SURROGATES_END), end - 1)
    ok &= (with_surrogates | (view[end - 1] == ord("}"))) & (time_end > time_at)

    # the key: 32 lowercase hex digits (as every cache key)
    data = scan.data
    windows = np.ndarray(shape=(scan.consumed - KEY_WIDTH + 1,), dtype=f"S{KEY_WIDTH}", buffer=data, strides=(1,))
    keys = windows[np.minimum(key_at, len(windows) - 1)]
    ok &= _HEX[keys.view(np.uint8).reshape(-1, KEY_WIDTH)].all(axis=1)

    take = np.flatnonzero(ok)
    if not take.size:
        return
    latencies = _json_numbers(data, latency_at[take], latency_end[take])
    # the time stamp is only checked (its value is not kept): a plain number is one without a parse
    stamp_at, stamp_end = time_at[take], time_end[take]
    stamps: list = [0.0] * len(take)
    other = np.flatnonzero(~_plain_numbers(view, stamp_at, stamp_end))
    if other.size:
        for j, v in zip(other.tolist(), _json_numbers(data, stamp_at[other], stamp_end[other])):
            stamps[j] = v
    prompts: list = [None] * len(take)
    completions: list = [None] * len(take)
    given = np.flatnonzero(~null_usage[take])
    if given.size:
        rows_given = take[given]
        for column, values in ((prompts, _json_numbers(data, prompt_at[rows_given], prompt_end[rows_given])),
                               (completions, _json_numbers(data, completion_at[rows_given], completion_end[rows_given]))):
            for j, v in zip(given.tolist(), values):
                column[j] = v
    numbers = [latencies, prompts, completions, stamps]
    good = _numbers_ok(*numbers)
    take = take[good]
    sel = rows[take]
    _store_numbers(scan, sel, *numbers[:3], good)
    scan.keys[sel] = keys[take]
    has_text = text_str[take]
    scan.text_start[sel[has_text]] = text_at[take][has_text] + 1
    scan.text_end[sel[has_text]] = text_end[take][has_text]
    has_error = error_str[take]
    scan.error_start[sel[has_error]] = error_at[take][has_error] + 1
    scan.error_end[sel[has_error]] = error_end[take][has_error]
    scan.text_verbatim[sel] = True
    scan.canonical[sel] = True


def _all_types(values: list, allowed: tuple) -> np.ndarray:
    if set(map(type, values)) <= set(allowed):
        return np.ones(len(values), dtype=bool)
    return np.fromiter((type(v) in allowed for v in values), dtype=bool, count=len(values))


def _numbers_ok(lat: list, pts: list, cts: list, stamp: list) -> np.ndarray:
    """Which lines' numbers have the types ``_answer_fast`` accepts (and tokens that fit int64)."""
    good = _all_types(lat, (float, int)) & _all_types(stamp, (float, int))
    for column in (pts, cts):
        if column.count(None) == len(column):
            continue
        good &= np.fromiter((v is None or (type(v) is int and -(1 << 63) <= v < (1 << 63)) for v in column),
                            dtype=bool, count=len(column))
    return good


def _store_numbers(scan: AnswerScan, sel: np.ndarray, lat: list, pts: list, cts: list, good: np.ndarray) -> None:
    if not good.all():
        keep = np.flatnonzero(good).tolist()
        lat, pts, cts = [lat[i] for i in keep], [pts[i] for i in keep], [cts[i] for i in keep]
    scan.latency[sel] = np.array(lat, dtype=np.float64) if set(map(type, lat)) <= {float} else \
        np.array([float(v) for v in lat], dtype=np.float64)
    for column, values, nulls in ((pts, scan.prompt_tokens, scan.prompt_tokens_null),
                                  (cts, scan.completion_tokens, scan.completion_tokens_null)):
        if column.count(None) == len(column):
            nulls[sel] = True
            continue
        null = np.fromiter((v is None for v in column), dtype=bool, count=len(column))
        nulls[sel] = null
        values[sel[~null]] = np.array([v for v in column if v is not None], dtype=np.int64)


def _scan_escaped(scan: AnswerScan, view: np.ndarray, rows: np.ndarray) -> None:
    """Lines with a backslash: matched whole, the answer text decoded by orjson."""
    data = scan.data
    for i in rows.tolist():
        a, b = int(scan.line_start[i]), int(scan.line_end[i])
        m = _ESCAPED_LINE.match(data, a, b)
        if m is None:
            continue
        numbers = [_json_number(m.group(g)) for g in (3, 4, 5, 6)]
        if any(v is _BAD for v in numbers):
            continue
        lat, pt, ct, stamp = numbers
        if not _numbers_ok([lat], [pt], [ct], [stamp])[0]:
            continue
        text = None
        if m.start(1) >= 0:
            body = m.group(1)
            try:
                text = orjson.loads(b'"' + body + b'"')
            except orjson.JSONDecodeError:  # e.g. a lone surrogate escape
                continue
            scan.text_start[i], scan.text_end[i] = m.span(1)
            if b"\\" in body:
                scan.text_escaped[i] = True
                scan.escaped_texts[i] = text
                scan.text_verbatim[i] = orjson.dumps(text)[1:-1] == body
            else:
                scan.text_verbatim[i] = True
        if m.start(2) >= 0:
            scan.error_start[i], scan.error_end[i] = m.span(2)
        scan.keys[i] = data[a + 8:a + 8 + KEY_WIDTH]
        scan.latency[i] = float(lat)
        scan.prompt_tokens_null[i] = pt is None
        scan.prompt_tokens[i] = 0 if pt is None else pt
        scan.completion_tokens_null[i] = ct is None
        scan.completion_tokens[i] = 0 if ct is None else ct
        scan.canonical[i] = True


# -- read_answers on the scan ------------------------------------------------------------------------

def read_answers_scanned(run_dir: Path) -> dict[str, Answer]:
    """:func:`medvision_eval.columnar.read_answers` (the same dict, the same errors), reading
    canonical lines with :func:`scan_answers` and any other line exactly as it does."""
    best: dict[str, Answer] = {}
    for path in response_files(run_dir):
        number = 0
        with open(path, "rb") as fh:
            rest = b""
            while True:
                block = fh.read(BLOCK)
                if not block:
                    break  # a torn last line (no newline) is skipped, as jsonl_lines does
                data = rest + block if rest else block
                scan = scan_answers(data)
                rest = data[scan.consumed:]
                rows = np.flatnonzero(scan.canonical)
                keys, answers = scan.answers(rows)
                if len(rows) == scan.lines and len(set(keys)) == len(keys) and best.keys().isdisjoint(keys):
                    best.update(zip(keys, answers))  # every key new: each line's answer is kept
                    number += scan.lines
                    continue
                taken = dict(zip(rows.tolist(), range(len(rows))))
                for i in range(scan.lines):
                    j = taken.get(i)
                    if j is not None:
                        key, answer = keys[j], answers[j]
                    else:
                        found = read_line_exactly(scan.line(i), f"{path}:{number + i + 1}")
                        if found is None:
                            continue
                        key, answer = found
                    old = best.get(key)
                    if old is None or (answer[1] is None and answer[0] is not None) or not (
                            old[1] is None and old[0] is not None):
                        best[key] = answer
                number += scan.lines
    return best
