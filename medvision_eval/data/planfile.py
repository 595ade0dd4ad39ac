"""Reading and writing the official files: benchmark_plan_*.json.gz and landmark *.json.gz."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson

DEFAULT_SEED, DEFAULT_SPLIT_RATIO = 1024, 0.7


def plan_filename(kind: str, version: str = "1.0.0") -> str:
    """``benchmark_plan_{detection|biometry|segmentation}_v{version}.json.gz``."""
    return f"benchmark_plan_{kind}_v{version}.json.gz"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# Bytes -> b"0" for a digit, b"." and b"e" for what continues a float, b" " for anything else: a run
# of 19+ digits that starts a number (or follows any other character) shows as b" " + 19 b"0"s,
# while the digits of a fraction follow b"." and those of an exponent b"e".
_NUMBER_SHAPE = bytes(48 if 48 <= i <= 57 else 46 if i == 46 else 101 if i in (69, 101) else 32 for i in range(256))
_LONG_RUN = b"0" * 19


def _long_integer(data: bytes) -> bool:
    """Whether ``data`` may hold an integer of 19+ digits, which orjson may read as a float where
    json keeps an int (it may also be a string's digits, or a huge float's integer part: then json
    reads the file, which is only slower)."""
    shape = data.translate(_NUMBER_SHAPE)
    return shape.startswith(_LONG_RUN) or b" " + _LONG_RUN in shape


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path`` (gzipped when the name ends in .gz), as ``json.load`` reads it.

    Read whole, inflated and decoded by orjson, which gives the same values as ``json`` for every
    document without integers of 19+ digits (orjson may turn those into floats); anything it does not
    read (those, NaN literals, lone surrogates, a damaged file) is read by ``json``, which also
    words the error."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        if not _long_integer(data):
            return orjson.loads(data)
    except Exception:  # json below reads it or says why not
        pass
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON (gzipped when the name ends in .gz) deterministically (mtime 0)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(obj, indent=1, default=_default).encode("utf-8")
    if path.name.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def split_files(file_names: list[str], seed: int = DEFAULT_SEED, ratio: float = DEFAULT_SPLIT_RATIO) -> tuple[list[str], list[str]]:
    """The planner's ``_split_niigz_dataset``: ``random.seed(seed)``, shuffle, first ``int(n*ratio)`` train.

    The official code shuffles ``glob`` order (file-system dependent); pass the names in the order
    your file system lists them to reproduce a given build exactly, or sorted for a portable split.
    """
    names = list(file_names)
    rng_state = random.getstate()
    try:
        random.seed(seed)
        random.shuffle(names)
    finally:
        random.setstate(rng_state)
    cut = int(len(names) * ratio)
    return names[:cut], names[cut:]
