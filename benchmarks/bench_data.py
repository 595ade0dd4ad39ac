"""Prepare 1000 samples (load, slice, render, build prompt): cached reader vs per-sample re-read (v1).

    python benchmarks/bench_data.py [--n 1000]

The official v1 code calls ``nib.load(path).get_fdata()`` on the whole volume in ``doc_to_visual``
and again in ``doc_to_text`` for every sample; the baseline below does exactly that.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from medvision_eval.data import MedVisionData
from medvision_eval.data.planner import build_plan


def make_data(root: Path, n_volumes: int = 4, shape=(256, 256, 64)) -> str:
    ds = root / "Datasets" / "BenchCT"
    rng = np.random.default_rng(0)
    for i in range(n_volumes):
        vol = rng.normal(0, 50, shape).astype(np.float32)
        mask = np.zeros(shape, np.uint16)
        for lab in range(1, 6):
            c = rng.integers(40, 200, 2)
            mask[c[0] - 20:c[0] + 20, c[1] - 15:c[1] + 15, 2:62] = lab
        for folder, arr in (("Images", vol), ("Masks", mask)):
            (ds / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, np.diag([0.8, 0.8, 2.0, 1.0])), str(ds / folder / f"v{i}.nii.gz"))
    task = {"image_modality": "CT", "image_description": "abdominal computed tomography (CT) scan", "image_folder": "Images",
            "mask_folder": "Masks", "image_suffix": ".nii.gz", "mask_suffix": ".nii.gz",
            "labels_map": {str(k): f"organ {k}" for k in range(1, 6)}}
    build_plan(ds, "detection", [task], split_ratio=0.0)
    return "BenchCT_BoxSize_Task01_Axial"


def prompt(sample) -> str:
    return (f"Task:\nGiven the input medical image: {sample.image_description}, return the coordinates of the "
            f"lower-left and upper-right corner of the bounding box for the {sample.label}.\n")


def v1_prepare(root: Path, sample) -> tuple[Image.Image, str]:
    def load():  # _load_nifti_2d, as v1 calls it (whole volume each time)
        vol = nib.load(str(root / sample.image.path)).get_fdata().astype("float32")
        return vol[:, :, sample.image.slice_index]

    img = load()
    norm = ((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8) if img.max() > img.min() else np.zeros_like(img, np.uint8)
    pil = Image.fromarray(norm, mode="L").convert("RGB")
    load()  # doc_to_text / doc_to_target read the volume again
    return pil, prompt(sample)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    from medvision_eval.data.catalogue import BenchmarkConfig, write_catalogue_file

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = make_data(root)
        write_catalogue_file(root / "catalogue.json", [BenchmarkConfig(
            name=name, task="detection", dataset="BenchCT", task_id=1, plane="Axial", slice_axis=2, modality="CT")])
        t0 = time.perf_counter()
        data = MedVisionData(root)
        samples = data.samples(name)[: args.n]
        ours = [(img, prompt(s)) for s, img in data.images(samples)]
        t_ours = time.perf_counter() - t0
        n_base = min(len(samples), max(50, args.n // 10))  # the baseline is slow: time a subset, scale linearly
        t0 = time.perf_counter()
        base = [v1_prepare(root, s) for s in samples[:n_base]]
        t_base = (time.perf_counter() - t0) * len(samples) / n_base
        same = all(np.array_equal(np.asarray(a[0]), np.asarray(b[0])) for a, b in zip(ours[:n_base], base))
        print(f"samples: {len(samples)} from {len({s.image.path for s in samples})} volumes, images identical: {same}")
        print(f"medvision-eval reader: {t_ours:.2f} s  ({data.decodes} volume decodes)")
        print(f"v1 re-read per sample: {t_base:.2f} s  (timed on {n_base} samples, scaled)")
        print(f"speed-up: {t_base / t_ours:.1f}x")


if __name__ == "__main__":
    main()
