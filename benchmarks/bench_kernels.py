"""The score step's pure kernels, each side by side with the code it replaces, on the 1M bench run.

    python benchmarks/bench_kernels.py [--size 1000000] [--only parse,scan,write] [--repeat 3]

The data is ``bench_scoring.py``'s detection run of ``--size`` samples (built once and cached
under ``~/.cache/medvision-eval-bench/scoring``; the 1M run is 322 MB of responses.jsonl, 777 MB
of plan.jsonl and a 781 MB samples file). Each section times the old and the new code in the same
process, alternating, and reports the best of ``--repeat`` runs of each with their ratio, and
checks that both give the same result:

- ``parse``: ``tasks.parsing.parse_last_k_many`` (k = 4) over every answer text, in the score
  step's blocks of 32,768 answers, against the previous per-answer ``findall`` version, and
  ``parse_last_k_spans`` over the JSON text of each answer as it stands in responses.jsonl.
- ``scan``: ``answerscan.scan_answers`` over responses.jsonl in 16 MB blocks (bytes already in
  memory) against ``orjson.loads`` of each line (the old reader's decode; its field checks
  ``_answer_fast`` come on top of that), checking that every line's answer is the same.
- ``write``: ``store.write_lines`` of the samples file's 1M lines (781 MB) into a scratch
  directory next to the bench data, fsync'd and renamed as the score step writes it, against the
  previous write path (every byte written, then one fsync at the end); and ``storable_pieces``
  alone (masking and UTF-8, no disk). Checks that both files are the same bytes as the original.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BLOCK = 32_768  # the score step's ROW_BLOCK


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def compare(name: str, old, news: dict, repeat: int) -> tuple[object, dict]:
    """Time ``old()`` and each ``news[label]()`` in turn, ``repeat`` rounds (so all see the same
    load); print the best time of each and its speed-up over ``old``. Returns their results."""
    times: dict[str, list[float]] = {"old": [], **{label: [] for label in news}}
    results: dict[str, object] = {}
    for _ in range(repeat):
        for label, fn in [("old", old), *news.items()]:
            t0 = time.perf_counter()
            results[label] = fn()
            times[label].append(time.perf_counter() - t0)
    base = min(times["old"])
    print(f"  {name}: old {base:.3f} s", flush=True)
    for label in news:
        t = min(times[label])
        print(f"  {name}: {label} {t:.3f} s, speed-up {base / t:.1f}x  ({load()})", flush=True)
    return results.pop("old"), results


# ------------------------------------------------------------------------------ parse
def previous_parse_last_k_many(texts, k):
    """``parse_last_k_many`` as it was at 473bce8: one ``findall`` per answer."""
    import numpy as np

    from medvision_eval.tasks.parsing import V1_NUMBER, parse_last_k

    n = len(texts)
    findall = V1_NUMBER.findall
    tails, rows = [], []
    failures = [None] * n
    for i, text in enumerate(texts):
        tokens = findall(text)
        if len(tokens) >= k:
            tails += tokens[-k:]
            rows.append(i)
        else:
            failures[i] = parse_last_k(text, k)
    values = np.full((n, k), np.nan)
    if rows:
        parsed = np.frombuffer(array("f", map(float, tails)), dtype=np.float32).reshape(len(rows), k)
        index = np.asarray(rows, dtype=np.int64)
        finite = np.isfinite(parsed).all(axis=1)
        values[index[finite]] = parsed[finite]
        for i in index[~finite].tolist():
            failures[i] = parse_last_k(texts[i], k)
    return failures, values


def _same_parse(a, b) -> bool:
    import numpy as np

    (fa, va), (fb, vb) = a, b
    return fa == fb and np.array_equal(va, vb, equal_nan=True)


def bench_parse(run_dir: Path, repeat: int) -> None:
    import numpy as np
    import orjson

    from medvision_eval.tasks.parsing import parse_last_k_many, parse_last_k_spans

    print(f"parse: the last 4 numbers of every answer ({run_dir / 'responses.jsonl'})", flush=True)
    texts, raw = [], []
    with open(run_dir / "responses.jsonl", "rb") as fh:
        for line in fh:
            text = orjson.loads(line)["response"]["text"]
            texts.append(text)
            raw.append(orjson.dumps(text)[1:-1])  # its JSON text, as the line holds it
    blob = b"".join(raw)
    ends = np.cumsum(np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)))
    starts = ends - np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    del raw
    print(f"  {len(texts):,} answers, {len(blob) / 1e6:.0f} MB of text", flush=True)

    def blocks(fn):
        def run():
            out = []
            for lo in range(0, len(texts), BLOCK):
                out.append(fn(lo, min(len(texts), lo + BLOCK)))
            return out
        return run

    old, new = compare("parse_last_k_many, 32,768 answers a call", blocks(lambda lo, hi: previous_parse_last_k_many(texts[lo:hi], 4)), {
        "new": blocks(lambda lo, hi: parse_last_k_many(texts[lo:hi], 4)),
        "parse_last_k_spans on the JSON bytes": blocks(
            lambda lo, hi: parse_last_k_spans(blob, starts[lo:hi], ends[lo:hi], 4, lambda i, lo=lo: texts[lo + i])),
    }, repeat)
    same = all(_same_parse(a, b) for label in new for a, b in zip(old, new[label]))
    ok = sum(int((~np.isnan(v).any(axis=1)).sum()) for _, v in new["new"])
    print(f"  {ok:,} ok parses; results identical to the old code: {'yes' if same else 'NO'}", flush=True)
    if not same:
        raise SystemExit("parse: results differ")


# ------------------------------------------------------------------------------ scan
def bench_scan(run_dir: Path, repeat: int) -> None:
    import orjson

    from medvision_eval.answerscan import BLOCK as SCAN_BLOCK
    from medvision_eval.answerscan import scan_answers
    from medvision_eval.columnar import _answer_fast

    path = run_dir / "responses.jsonl"
    print(f"scan: every line of {path}", flush=True)
    blocks, rest = [], b""
    with open(path, "rb") as fh:
        while block := fh.read(SCAN_BLOCK):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            blocks.append(data[:cut])
            rest = data[cut:]
    lines = sum(block.count(b"\n") for block in blocks)
    print(f"  {lines:,} lines, {sum(map(len, blocks)) / 1e6:.0f} MB in {len(blocks)} blocks", flush=True)

    def old():  # what the old reader's decode costs (answers not kept)
        loads = orjson.loads
        for block in blocks:
            for line in block.split(b"\n")[:-1]:
                loads(line)

    def checked():
        loads = orjson.loads
        for block in blocks:
            for line in block.split(b"\n")[:-1]:
                _answer_fast(loads(line))

    def new():
        for block in blocks:
            scan_answers(block)

    compare("decode every line: orjson.loads per line", old,
            {"orjson.loads + _answer_fast per line": checked, "scan_answers": new}, repeat)
    taken, same = 0, True
    for block in blocks:  # the answers, compared once (not timed)
        scan = scan_answers(block)
        taken += int(scan.canonical.sum())
        for i, line in enumerate(block.split(b"\n")[:-1]):
            if scan.canonical[i] and scan.answer(i) != _answer_fast(orjson.loads(line)):
                same = False
    print(f"  {taken:,} of {lines:,} lines taken by the scan; their answers identical: {'yes' if same else 'NO'}",
          flush=True)
    if not same:
        raise SystemExit("scan: answers differ")


# ------------------------------------------------------------------------------ write
def previous_storable_pieces(lines):
    """``store.storable_pieces`` as it was at 473bce8."""
    from medvision_eval import store

    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) >= store.LINES_PER_PIECE:
            yield store._storable_bytes("".join(batch))
            batch.clear()
    if batch:
        yield store._storable_bytes("".join(batch))


def previous_write_lines(path: Path, lines) -> None:
    """``store.write_lines`` as it was at 473bce8: write everything, then one fsync, then rename."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in previous_storable_pieces(lines):
                fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def bench_write(run_dir: Path, repeat: int) -> None:
    import hashlib
    import shutil

    from medvision_eval import store

    source = run_dir / "samples_detection.jsonl"
    if not source.exists():
        from bench_scoring import timed

        timed("ours", run_dir)  # score once to have the samples file
    print(f"write: the lines of {source}", flush=True)
    with open(source, encoding="utf-8") as fh:
        lines = fh.readlines()
    size = source.stat().st_size
    print(f"  {len(lines):,} lines, {size / 1e6:.0f} MB", flush=True)
    compare("storable_pieces (mask + UTF-8, no disk)", lambda: sum(map(len, previous_storable_pieces(lines))),
            {"new": lambda: sum(map(len, store.storable_pieces(lines)))}, repeat)
    scratch = run_dir.parent / f"kernels-write-{os.getpid()}"
    scratch.mkdir()
    try:
        old_path, new_path = scratch / "old.jsonl", scratch / "new.jsonl"
        compare(f"write_lines, {size / 1e6:.0f} MB fsync'd", lambda: previous_write_lines(old_path, lines),
                {"new (background flush)": lambda: store.write_lines(new_path, lines)}, repeat)

        def digest(path: Path) -> str:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while block := fh.read(1 << 24):
                    h.update(block)
            return h.hexdigest()

        same = digest(old_path) == digest(new_path) == digest(source)
        print(f"  both files the same bytes as the original: {'yes' if same else 'NO'}", flush=True)
        if not same:
            raise SystemExit("write: bytes differ")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------ main
SECTIONS = {"parse": bench_parse, "scan": bench_scan, "write": bench_write}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="samples in the bench run (built once, cached)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per side; the best is reported")
    args = parser.parse_args()
    from bench_scoring import prepare

    print(f"cores: {os.cpu_count()}, {load()} at start", flush=True)
    run_dir = prepare(args.size)
    for name in args.only.split(","):
        SECTIONS[name.strip()](run_dir, args.repeat)
    print(f"done ({load()})", flush=True)


if __name__ == "__main__":
    main()
