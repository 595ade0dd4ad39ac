"""Harness overhead and resume cost, measured side by side in one run.

    python benchmarks/bench_harness.py [--volumes 8] [--slices 160]

(a) Harness overhead with an instant model (``oracle``): samples/s of the predict step on a
    detection config with thousands of samples from a few volumes — all of it (plan, render,
    request building, persistence) and the steady state after the first volume decode.
    Target: >= 2,000 samples/s.
(b) Rerun of a finished run as a fraction of the first run's wall time, both as a user runs them
    (``medvision-eval`` in a subprocess, imports included), for a model with 10 ms latency per
    sample (``prior delay_s=0.01``, the crash-test setting) and for the instant model.
    Target: <= 5 %.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from medvision_eval.data.catalogue import CATALOGUE_FILE, PLANES, BenchmarkConfig, write_catalogue_file
from medvision_eval.data.planner import build_plan

LABELS = {1: "aorta", 2: "liver", 3: "spleen", 4: "right kidney", 5: "left kidney", 6: "stomach"}
CONFIG = "BenchCT_BoxSize_Task01_Axial"


def build_bench_data(root: Path, volumes: int, slices: int, size: int = 160) -> Path:
    """A MedVision-layout directory: tubes of six labels through every axial slice of each volume."""
    ds = root / "Datasets" / "BenchCT"
    (ds / "Images").mkdir(parents=True)
    (ds / "Masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for v in range(volumes):
        mask2d = np.zeros((size, size), np.uint16)
        for label in LABELS:
            cy, cx = rng.integers(25, size - 25, 2)
            r = int(rng.integers(6, 14))
            mask2d[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = label
        mask = np.repeat(mask2d[:, :, None], slices, axis=2)
        image = rng.normal(40, 15, (size, size, slices)).astype(np.float32) + mask * 30
        affine = np.diag([0.8, 0.8, 2.5, 1.0])
        nib.save(nib.Nifti1Image(image, affine), ds / "Images" / f"case_{v:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), ds / "Masks" / f"case_{v:03d}.nii.gz")
    task = {
        "image_modality": "CT",
        "image_description": "synthetic abdominal computed tomography (CT) scan",
        "image_folder": "Images",
        "mask_folder": "Masks",
        "image_prefix": "",
        "image_suffix": "_0000.nii.gz",
        "mask_prefix": "",
        "mask_suffix": ".nii.gz",
        "labels_map": {str(k): v for k, v in LABELS.items()},
    }
    build_plan(ds, "detection", [task], dataset_info={"dataset": "BenchCT"})
    config = BenchmarkConfig(
        name=CONFIG, task="detection", dataset="BenchCT", task_id=1, plane="Axial", slice_axis=PLANES["Axial"],
        modality="CT", image_description=task["image_description"], labels=LABELS, lists=("bench",), verified=True,
    )
    write_catalogue_file(root / CATALOGUE_FILE, [config])
    return root


def overhead(data_root: Path, out: Path) -> dict[str, float]:
    from medvision_eval.runner import RunConfig, Runner

    stamps: list[tuple[float, int]] = []
    cfg = RunConfig(tasks=[f"detection:{CONFIG}"], model="oracle", data=str(data_root), output=str(out),
                    batch_size=64)
    runner = Runner(cfg)
    t0 = time.perf_counter()
    planned = runner.plan()
    t_plan = time.perf_counter() - t0
    n = sum(len(p.entries) for p in planned)

    def progress(task: str, done: int, total: int) -> None:
        stamps.append((time.perf_counter(), done))

    t1 = time.perf_counter()
    runner.execute(progress=progress)
    total = time.perf_counter() - t1
    # steady state: from the first completed batch (first volume decoded) to the end
    first_t, first_done = next((t, d) for t, d in stamps if d > 0)
    last_t, last_done = stamps[-1]
    steady = (last_done - first_done) / (last_t - first_t)
    return {"samples": n, "plan_s": t_plan, "execute_s": total, "rate_all": n / total, "rate_steady": steady}


def cli_seconds(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medvision_eval.cli", *args, "--quiet"], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--slices", type=int, default=160)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data = build_bench_data(tmp / "data", args.volumes, args.slices)
        print(f"bench data: {args.volumes} volumes x {args.slices} slices x {len(LABELS)} labels "
              f"(built in {time.perf_counter() - t0:.1f}s)")

        a = overhead(data, tmp / "overhead")
        print("\n(a) harness overhead, instant model (oracle), predict step")
        print(f"    {a['samples']} samples; plan {a['plan_s']:.2f}s; execute {a['execute_s']:.2f}s")
        print(f"    all-in: {a['rate_all']:,.0f} samples/s   steady state after first volume: "
              f"{a['rate_steady']:,.0f} samples/s   (target >= 2,000)")

        print("\n(b) rerun of a finished run / first run, wall time of 'medvision-eval' as a user runs it")
        common = ["--tasks", f"detection:{CONFIG}", "--data", str(data)]
        for label, model_args in (("prior, 10 ms/sample", "delay_s=0.01"), ("oracle, instant", "")):
            model = ["--model", "prior" if "prior" in label else "oracle"]
            extra = ["--model-args", model_args] if model_args else []
            out = ["--output", str(tmp / label.split(",")[0])]
            first = cli_seconds(*common, *model, *extra, *out)
            rerun = cli_seconds(*common, *model, *extra, *out)
            print(f"    {label:<20} first {first:7.2f}s  rerun {rerun:5.2f}s  ratio {rerun / first:6.1%}  (target <= 5 %)")


if __name__ == "__main__":
    main()
