"""Score 1,000,000 detection predictions: the vectorised v1 scorer against a per-sample Python
loop of the official formulas (tests/v1_reference.py), side by side in one run.

    python benchmarks/bench_scoring.py [--n 1000000] [--loop-n 1000000]

The vectorised scorer runs ``--repeat`` times (median reported; the first run includes the
page faults of fresh allocations); the loop runs once. Prints both wall times, the speed-up, and checks that both give the same numbers.
Targets (issue #4): vectorised <= 2 s for 1M and >= 50x the loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import v1_reference as ref  # noqa: E402

from medvision_eval.tasks.metrics import detection_scores  # noqa: E402


def make_cases(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, 0.7, (n, 2))
    target = np.concatenate([lo, lo + rng.uniform(0.05, 0.3, (n, 2))], axis=1)
    pred = (target + rng.normal(0, 0.05, (n, 4))).astype(np.float32).astype(np.float64)
    flip = rng.random(n) < 0.05  # inverted corners
    pred[flip] = pred[flip][:, [2, 3, 0, 1]]
    ok = rng.random(n) > 0.08  # parse failures (NaN rows, as prediction_matrix builds them)
    pred[~ok] = np.nan
    return pred, ok, target


def loop(pred: np.ndarray, ok: np.ndarray, target: np.ndarray) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("IoU", "Precision", "Recall", "F1", "MAE")}
    for p, good, t in zip(pred.tolist(), ok.tolist(), target.tolist()):
        if not good:
            for k in ("IoU", "Precision", "Recall", "F1"):
                out[k].append(0.0)
            out["MAE"].append(float("nan"))
            continue
        out["IoU"].append(ref.iou(p, t))
        out["Precision"].append(ref.precision(p, t))
        out["Recall"].append(ref.recall(p, t))
        out["F1"].append(ref.f1(p, t))
        out["MAE"].append(sum(abs(a - b) for a, b in zip(p, t)) / 4.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--loop-n", type=int, default=None, help="samples for the Python loop (default: --n)")
    parser.add_argument("--repeat", type=int, default=5, help="vectorised runs; the median is reported")
    args = parser.parse_args()
    loop_n = args.loop_n or args.n
    pred, ok, target = make_cases(args.n)

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        vec = detection_scores(pred, ok, target)
        times.append(time.perf_counter() - t0)
    t_vec = float(np.median(times))

    t0 = time.perf_counter()
    slow = loop(pred[:loop_n], ok[:loop_n], target[:loop_n])
    t_loop = (time.perf_counter() - t0) * args.n / loop_n

    for k, values in slow.items():
        np.testing.assert_allclose(vec[k][:loop_n], np.array(values), rtol=1e-12, atol=0, equal_nan=True, err_msg=k)
    print(f"samples                  {args.n:,}")
    print(f"vectorised (numpy)       {t_vec:8.3f} s   median of {args.repeat}; first run {times[0]:.3f} s, "
          f"min {min(times):.3f} s ({args.n / t_vec / 1e6:.1f} M samples/s)")
    extra = "" if loop_n == args.n else f"  (measured on {loop_n:,}, scaled)"
    print(f"per-sample Python loop   {t_loop:8.3f} s{extra}")
    print(f"speed-up                 {t_loop / t_vec:8.1f} x")
    print("identical results        yes (IoU, Precision, Recall, F1, MAE)")
    print(f"targets                  <= 2 s: {'met' if t_vec <= 2 else 'MISSED'};  >= 50x: {'met' if t_loop / t_vec >= 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
