"""The full ``score`` step at 10k / 100k / 1M detection samples, against the official v1 path on the
same per-sample data, side by side in one run.

    python benchmarks/bench_scoring.py [--sizes 10000,100000,1000000] [--repeat 1]

Ours: ``medvision-eval score RUN_DIR`` as a user runs it (a fresh process: imports, reading
``run.json`` / ``plan.jsonl`` / ``responses.jsonl``, parsing, per-sample metrics, the paper's
tables, bootstrap intervals, writing ``samples_detection.jsonl`` and ``results.json``).

Official v1 path (the reference, built here from the formulas ``tests/v1_reference.py`` checks,
not from the package): the same answers as an lmms-eval samples file, then
``benchmark/parse_outputs.py`` (per line: ``json.loads``, last-4-numbers parse, per-sample
metrics, ``json.dumps`` of the parsed line, running sums) and
``benchmark/summarize_detection_task.py`` (read the parsed file, group by
``label_map_regroup`` @ modality (plane), per-sample metrics again, per-group counters and
threshold counts, the anatomy vs tumour/lesion sample-weighted means, ``json.dump``). It
computes no bootstrap and no IoU sweep / box-size table, so it does less work than ours.

Both run in their own process; wall time is measured by this script around the process. Memory:
the official path is one process (its peak resident set, ``VmHWM``); ours forks helper processes
on large runs, so its figure is the larger of its largest process's ``VmHWM`` and the sampled peak
(every 50 ms) of the summed proportional set size of the whole process tree (pages shared
copy-on-write counted once). ``VmHWM`` is read from ``/proc`` every 50 ms (it only grows, so the
last reading misses at most the final 50 ms). Not ``ru_maxrss`` from ``wait4``: the kernel carries
the spawning process's resident set into it across ``exec`` (``subprocess`` uses ``vfork``), so it
reported this benchmark's own memory (e.g. 184 MB instead of 68 MB for the official path at 100k).
The run directories are generated once (not timed) under ``~/.cache/medvision-eval-bench/scoring``
(``detection-store-<n>``, written as the package writes runs: ``store.write_plan`` with the plan
columns, cache keys, ``ResponseLog`` lines; ``detection-store-<n>-jsonl`` is the same files without
the plan columns, timed too: the score step's fallback of reading ``plan.jsonl``).
Before timing, the package's bytecode is compiled (``compileall``, as ``pip install`` does), so
ours is not charged for compiling its modules on every start (this environment may set
``PYTHONDONTWRITEBYTECODE``, which leaves a checkout without ``.pyc`` files).
Each official run is recorded in the run's ``official/measured.json``; a size whose official path
is not timed this time (``--official-max``) is compared with that recorded figure, labelled with
when it was measured and the load then.
Targets (issue 13): 1M samples <= 10 s end to end, >= 20x the official path, peak memory <= 2x the
official's; every size prints its ratio to each.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MEDVISION_BENCH_CACHE", Path.home() / ".cache" / "medvision-eval-bench")) / "scoring"

# (label, modality, plane, config): anatomy and tumour/lesion groups in two modalities
LABELS = [
    ("liver", "CT", "A", "BenchAbd_BoxSize_Task01_Axial"),
    ("spleen", "CT", "A", "BenchAbd_BoxSize_Task01_Axial"),
    ("left kidney", "CT", "A", "BenchAbd_BoxSize_Task01_Axial"),
    ("aorta", "CT", "C", "BenchAbd_BoxSize_Task01_Coronal"),
    ("kidney tumor", "CT", "A", "BenchKid_BoxSize_Task01_Axial"),
    ("liver tumor", "CT", "A", "BenchLiv_BoxSize_Task01_Axial"),
    ("enhancing tumor", "MRI", "A", "BenchBrain_BoxSize_Task01_Axial"),
    ("edema", "MRI", "S", "BenchBrain_BoxSize_Task01_Sagittal"),
]


# ------------------------------------------------------------------------------ the data
def make_store_run(run_dir: Path, n: int, seed: int = 0) -> None:
    """The same samples and answers as :func:`make_run`, written the way the package writes a run:
    the plan through ``store.write_plan`` (so ``plan.columns/`` exists, and each entry carries its
    prompt messages as the planner stores them), the keys from ``store.cache_key_function``, each
    answer as ``ResponseLog`` writes it (strict JSON of a ``ResponseRecord``)."""
    import numpy as np

    from medvision_eval import __version__, secrets
    from medvision_eval.plugins import Registry
    from medvision_eval.protocol import get_protocol
    from medvision_eval.runner import build_task
    from medvision_eval.schema import Response, Sample, stable_hash
    from medvision_eval.store import PlanEntry, ResponseRecord, cache_key_function, strict_dumps, write_plan

    run_dir.mkdir(parents=True, exist_ok=True)
    protocol = get_protocol("paper")
    task = build_task(Registry.discover(), "detection", protocol)
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, 0.6, (n, 2))
    target = np.concatenate([lo, lo + rng.uniform(0.05, 0.35, (n, 2))], axis=1)
    pred = target + rng.normal(0, 0.05, (n, 4))
    kind = rng.random(n)
    which = rng.integers(0, len(LABELS), n)
    identity = {"name": "bench", "args": {}}
    record = {
        "medvision_eval_version": __version__,
        "config": {"tasks": ["detection"], "model": "bench", "model_args": {}, "data": None, "output": str(run_dir),
                   "limit": None, "batch_size": None, "protocol": "paper", "seed": 0, "no_cache": False, "shard": None},
        "data_root": "/bench", "model_identity": identity, "model_info": {}, "generation": {},
        "protocol": protocol.model_dump(), "batch_size": 64, "backend": "bench", "world_size": 1, "environment": {},
    }
    (run_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    key_of = cache_key_function(identity, task.fingerprint(), {})
    planned: list[tuple[str, str, str]] = []

    def entries():
        for i in range(n):
            label, modality, plane, config = LABELS[which[i]]
            dataset = config.split("_")[0]
            t = [float(v) for v in target[i]]
            sample = Sample.model_validate({
                "id": f"{config}/test/case_{i // 300:05d}/{plane}{i % 300}/{which[i] + 1}", "task": "detection",
                "config": config, "dataset": dataset, "split": "test", "index": i,
                "image": {"path": f"Datasets/{dataset}/Images/case_{i // 300:05d}_0000.nii.gz",
                          "slice_axis": {"S": 0, "C": 1, "A": 2}[plane], "slice_index": i % 300},
                "image_size": [512, 512], "pixel_spacing": [0.8, 0.8], "label": label, "label_id": int(which[i]) + 1,
                "modality": modality, "plane": plane, "image_description": f"{modality} scan",
                "target": {"values": t, "unit": "relative", "names": ["x1", "y1", "x2", "y2"]},
                "extra": {"box_area_ratio": (t[2] - t[0]) * (t[3] - t[1]), "box_pixels": [int(v * 512) for v in t],
                          "unit": "relative"}})
            prompt = [{"role": "user", "content": [{"type": "text", "text": task.prompt(sample)},
                                                   {"type": "image", "ref": task.protocol.image_ref(sample)}]}]
            prompt_hash = stable_hash(prompt)
            key = key_of(sample.id, prompt_hash)
            planned.append((sample.id, prompt_hash, key))
            yield PlanEntry.model_construct(task="detection", key=key, prompt_hash=prompt_hash, order=i + 1,
                                            sample=sample, prompt=prompt)

    write_plan(run_dir, entries())
    with open(run_dir / "responses.jsonl", "w", encoding="utf-8") as resp:
        for i, (sid, prompt_hash, key) in enumerate(planned):
            p = pred[i]
            if kind[i] < 0.90:
                text = f"{p[0]:.4f}, {p[1]:.4f}, {p[2]:.4f}, {p[3]:.4f}"
            elif kind[i] < 0.95:
                text = f"The box is [{p[2]:.3f}, {p[3]:.3f}, {p[0]:.3f}, {p[1]:.3f}]."  # inverted corners
            elif kind[i] < 0.98:
                text = "I cannot determine the location from this image."
            else:
                text = f"x1={p[0]:.2f}"
            rec = ResponseRecord(key=key, task="detection", sample_id=sid, prompt_hash=prompt_hash,
                                 response=Response(text=text, latency_s=0.01), time=1.0e9 + i)
            resp.write(secrets.mask(strict_dumps(rec)) + "\n")  # what ResponseLog.append writes


def make_lmms_samples(run_dir: Path, out: Path) -> None:
    """The same answers as an lmms-eval ``*_samples_*.jsonl`` file (what the official scripts read)."""
    answers = {}
    with open(run_dir / "responses.jsonl") as fh:
        for line in fh:
            rec = json.loads(line)
            answers[rec["key"]] = rec["response"]["text"]
    with open(run_dir / "plan.jsonl") as fh, open(out, "w") as dst:
        for line in fh:
            entry = json.loads(line)
            s = entry["sample"]
            doc = {"dataset_name": s["dataset"], "taskID": "01", "taskType": "Box-Size", "image_file": s["image"]["path"],
                   "slice_dim": s["image"]["slice_axis"], "slice_idx": s["image"]["slice_index"], "label": s["label_id"],
                   "image_description": s["image_description"], "image_size_2d": s["image_size"],
                   "pixel_size": s["pixel_spacing"], "label_name": s["label"], "imgModality": s["modality"]}
            dst.write(json.dumps({"doc_id": s["index"], "doc": doc, "target": str(s["target"]["values"]),
                                  "arguments": [], "resps": [[answers[entry["key"]]]],
                                  "filtered_resps": [answers[entry["key"]]]}) + "\n")


# ------------------------------------------------------------------ the official v1 path
def official_path(samples_file: Path, work: Path) -> dict:
    """``parse_outputs.py`` then ``summarize_detection_task.py``, from the v1 formulas."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent / "tests"))
    import v1_reference as ref

    from medvision_eval.tasks.label_maps import EXCLUDED_KEYS, LABEL_MAP_REGROUP, MINIMUM_GROUP_SIZE, TUMOR_LESION_GROUP_KEYS

    parsed = work / "parsed.jsonl"
    sums = {"sum_MAE": 0.0, "sum_IoU": 0.0, "num_success": 0, "count_valid_AE": 0, "count_valid_IoU": 0}
    count = 0
    with open(samples_file) as fh, open(parsed, "w") as tmp:  # parse_outputs._process_jsonl_file
        for line in fh:
            data = json.loads(line)
            text = data["resps"][0][0]
            data["filtered_resps"] = [ref.last_k(text, 4)]
            m = ref.detection_sample(text, list(eval(data["target"])))
            data["avgMAE"] = {"MAE": m["MAE"]}
            data["avgIoU"] = {"IoU": m["IoU"]}
            data["SuccessRate"] = {"success": m["success"]}
            if not np.isnan(m["MAE"]):
                sums["sum_MAE"] += m["MAE"]
                sums["count_valid_AE"] += 1
            if not np.isnan(m["IoU"]):
                sums["sum_IoU"] += m["IoU"]
                sums["count_valid_IoU"] += 1
            sums["num_success"] += m["success"]
            count += 1
            box = eval(data["target"])  # _patch_doc_detection_task fallback
            data["box_img_ratio"] = abs(box[2] - box[0]) * abs(box[3] - box[1])
            tmp.write(json.dumps(data) + "\n")
    grouped: dict[str, dict[str, list]] = {}
    with open(parsed) as fh:  # summarize_detection_task.process_jsonl_file_detection_task + grouping
        for line in fh:
            data = json.loads(line)
            doc = data["doc"]
            mod = {"MRI": "MR", "ultrasound": "US", "X-ray": "XR"}.get(doc["imgModality"], doc["imgModality"])
            plane = {0: "S", 1: "C", 2: "A"}[doc["slice_dim"]]
            group = f"{LABEL_MAP_REGROUP.get(doc['label_name'], doc['label_name'])} @ {mod} ({plane})"
            g = grouped.setdefault(group, {"targets": [], "responses": []})
            g["targets"].append(data["target"])
            g["responses"].extend(data["resps"][0])
    summary = {}
    names = ("IoU", "F1", "Precision", "Recall")
    for group, g in grouped.items():  # calculate_summary_metrics_per_anatomy_detection_task
        c = {"sum_MAE": 0.0, "count_valid_AE": 0, "num_success": 0, "AE": [0] * 10,
             **{f"sum_{k}": 0.0 for k in names}, **{f"count_{k}": 0 for k in names}, **{f"thr_{k}": [0] * 5 for k in names}}
        for target, response in zip(g["targets"], g["responses"]):
            m = ref.detection_sample(response, list(eval(target)))
            if not np.isnan(m["MAE"]):
                c["sum_MAE"] += m["MAE"]
                c["count_valid_AE"] += 1
                c["AE"][min(int(m["MAE"] * 10), 9)] += 1
            for k in names:
                if not np.isnan(m[k]):
                    c[f"sum_{k}"] += m[k]
                    c[f"count_{k}"] += 1
                    for i, t in enumerate((0.5, 0.6, 0.7, 0.8, 0.9)):
                        if m[k] >= t:
                            c[f"thr_{k}"][i] += 1
            c["num_success"] += m["success"]
        total = len(g["targets"])
        row = {k: (c[f"sum_{k}"] / c[f"count_{k}"] if c[f"count_{k}"] else float("nan")) for k in names}
        row["avgMAE"] = c["sum_MAE"] / c["count_valid_AE"] if c["count_valid_AE"] else float("nan")
        row["SuccessRate"] = c["num_success"] / total
        row["num_samples"] = total
        for k in names:
            for i, t in enumerate((0.5, 0.6, 0.7, 0.8, 0.9)):
                row[f"{k}>{t:.1f}"] = c[f"thr_{k}"][i] / total
        summary[group] = row
    table = {}
    for kind in ("anatomy", "T/L"):  # group_anatomy_vs_tumor_lesion
        rows = []
        for group, row in summary.items():
            low = group.lower()
            if any(k in low for k in EXCLUDED_KEYS) or row["num_samples"] < MINIMUM_GROUP_SIZE:
                continue
            is_tl = any(k in low for k in TUMOR_LESION_GROUP_KEYS)
            if is_tl == (kind == "T/L"):
                rows.append(row)
        w = sum(r["num_samples"] for r in rows)
        table[kind] = {k: (sum(r[k] * r["num_samples"] for r in rows if np.isfinite(r[k])) / w if w else float("nan"))
                       for k in ("IoU", "F1", "Precision", "Recall", "SuccessRate", "IoU>0.5", "F1>0.5")}
    with open(work / "summary.json", "w") as fh:
        json.dump({"groups": summary, "table2": table, "overall": sums, "count": count}, fh, indent=2)
    return table


# ------------------------------------------------------------------------------- driver
def child(mode: str, run_dir: Path) -> None:
    official_path(run_dir / "lmms_samples.jsonl", run_dir / "official")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def _proc_kb(pid: int, name: str, field: str) -> int | None:
    """A ``field:`` figure (kB) of ``/proc/<pid>/<name>``; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _tree_pss_mb(pid: int) -> list[float]:
    """Memory of a process and its descendants: their proportional set sizes, the process first (a
    page shared copy-on-write by two processes counts half in each, so the sum is the memory in use)."""
    return [(_proc_kb(p, "smaps_rollup", "Pss") or 0) / 1024 for p in _descendants(pid)]


def _tree_hwm_mb(pid: int) -> float:
    """The largest peak resident set (``VmHWM``) among a process and its descendants. ``VmHWM``
    belongs to the address space, which ``exec`` replaces, so it is the process's own peak."""
    return max((_proc_kb(p, "status", "VmHWM") or 0 for p in _descendants(pid)), default=0) / 1024


def timed(mode: str, run_dir: Path) -> dict:
    """Wall time of the whole process, its peak RSS (the sampled ``VmHWM`` of its largest process)
    and the sampled peak of the process tree's summed PSS."""
    if mode == "ours":  # exactly what a user runs
        cmd = [sys.executable, "-m", "medvision_eval", "score", str(run_dir)]
    else:
        cmd = [sys.executable, __file__, "--child", mode, str(run_dir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree = peak_hwm = 0.0
    peak_parts: list[float] = []
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree, peak_hwm, peak_parts
        while not done.is_set():
            parts = _tree_pss_mb(proc.pid)
            if sum(parts) > peak_tree:
                peak_tree, peak_parts = sum(parts), parts
            peak_hwm = max(peak_hwm, _tree_hwm_mb(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{stderr}")
    peak = peak_hwm
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": peak,
            "tree_rss_mb": max(peak_tree, peak), "tree_parts_mb": peak_parts}


def prepare(n: int) -> Path:
    """The cached run directory of ``n`` samples written as the package writes runs (plan columns
    included)."""
    from medvision_eval.planstore import PLAN_HASH, open_store

    run_dir = CACHE / f"detection-store-{n}"
    done = run_dir / ".complete"
    # a cached run whose plan columns this code does not read (written before the index carried its
    # seal) would be timed on the fallback path, one whose index records an older fingerprint of
    # plan.jsonl (sha256) on a slower check than a run written now: rebuilt (the same files, the
    # index as the package writes it now)
    store = open_store(run_dir) if done.exists() else None
    if store is None or store.plan_hash != PLAN_HASH:
        t0 = time.perf_counter()
        make_store_run(run_dir, n)
        make_lmms_samples(run_dir, run_dir / "lmms_samples.jsonl")
        (run_dir / "official").mkdir(exist_ok=True)
        done.write_text("ok\n")
        print(f"  built {run_dir} in {time.perf_counter() - t0:.0f}s (cached for later runs)", flush=True)
    return run_dir


def prepare_twin(n: int) -> Path:
    """:func:`prepare`'s run without the plan columns (the same files, hard-linked), which the
    score step must read from ``plan.jsonl``."""
    run_dir = prepare(n)
    twin = CACHE / f"detection-store-{n}-jsonl"
    if not (twin / ".complete").exists():
        twin.mkdir(exist_ok=True)
        for name in ("run.json", "plan.jsonl", "responses.jsonl"):
            (twin / name).unlink(missing_ok=True)
            os.link(run_dir / name, twin / name)
        (twin / ".complete").write_text("ok\n")
    return twin


def compile_package() -> None:
    """The package's bytecode, as an installed package has it (not timed)."""
    import medvision_eval

    compileall.compile_dir(Path(medvision_eval.__file__).parent, quiet=1)


def record_official(run_dir: Path, r: dict) -> None:
    r = {**r, "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "load": round(os.getloadavg()[0], 2)}
    (run_dir / "official").mkdir(exist_ok=True)
    (run_dir / "official" / "measured.json").write_text(json.dumps(r, indent=1) + "\n")


def recorded_official(run_dir: Path) -> dict | None:
    try:
        r = json.loads((run_dir / "official" / "measured.json").read_text())
        return r if all(isinstance(r.get(k), (int, float)) for k in ("wall_s", "cpu_s", "peak_rss_mb")) else None
    except (OSError, ValueError, AttributeError):
        return None


def targets(o: dict, r: dict | None, official_mb: float | None = None) -> str:
    """Ours against the three issue-13 targets, each as a ratio (without an official figure, the
    memory one against ``--official-mb`` when given)."""
    out = f"wall {o['wall_s']:.2f} s = {o['wall_s'] / 10:.2f}x the 10 s budget ({'met' if o['wall_s'] <= 10 else 'MISSED'})"
    if r is None:
        out += "; speed-up: no official figure (run without --official-max once)"
        if official_mb:
            memory = o["tree_rss_mb"] / official_mb
            return out + (f"; memory {memory:.2f}x the official {official_mb:.0f} MB given by --official-mb "
                          f"(target <= 2x: {'met' if memory <= 2 else 'MISSED'})")
        return out + "; memory: no official figure"
    speed = r["wall_s"] / o["wall_s"]
    memory = o["tree_rss_mb"] / r["peak_rss_mb"]
    return (out + f"; speed-up {speed:.1f}x official (target >= 20x: {'met' if speed >= 20 else 'MISSED'}; "
            f"in cpu {r['cpu_s'] / o['cpu_s']:.1f}x); memory {memory:.2f}x official "
            f"(target <= 2x: {'met' if memory <= 2 else 'MISSED'})")


def _line(label: str, r: dict) -> str:
    parts = r.get("tree_parts_mb") or []
    split = f" = {parts[0]:.0f} + {' + '.join(f'{x:.0f}' for x in parts[1:])}" if len(parts) > 1 else ""
    return (f"{label} {r['wall_s']:7.2f}s (cpu {r['cpu_s']:6.2f}s, peak {r['peak_rss_mb']:5.0f} MB, "
            f"tree {r['tree_rss_mb']:5.0f} MB{split})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated sample counts")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per side; the best is reported")
    parser.add_argument("--official-max", type=int, default=None, metavar="N",
                        help="time the official path only up to N samples (it takes minutes at 1M)")
    parser.add_argument("--official-mb", type=float, default=None, metavar="MB",
                        help="the official path's peak memory at the largest size when it is not timed here "
                             "(its VmHWM from an earlier run, e.g. 274 at 1M): the memory target is 2x this")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "RUN_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    compile_package()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    print("wall = the whole process; cpu = user + system time of it and its children; peak = the kernel's peak "
          "RSS of the largest process; tree = sampled peak (every 50 ms) of the summed PSS of the process and its "
          "children, = the process's + each child's at that moment (what the memory ratio uses). ours = `medvision-eval score` on a run written as the package writes it "
          "(plan columns present); fallback = the same files without plan.columns/ (plan.jsonl read instead)",
          flush=True)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        run_dir, twin = prepare(n), prepare_twin(n)
        ours, fallback, official = [], [], []
        for _ in range(args.repeat):  # alternate, so all sides see the same machine load
            ours.append(timed("ours", run_dir))
            fallback.append(timed("ours", twin))
            if args.official_max is None or n <= args.official_max:
                official.append(timed("official", run_dir))
                record_official(run_dir, min(official, key=lambda r: r["wall_s"]))
        o = min(ours, key=lambda r: r["wall_s"])
        f = min(fallback, key=lambda r: r["wall_s"])
        print(f"{n:>9,} samples  " + _line("ours", o), flush=True)
        print(f"{'':>9}          " + _line("fallback (no plan columns)", f)
              + f"  ours is {f['wall_s'] / o['wall_s']:4.1f}x faster (in cpu {f['cpu_s'] / o['cpu_s']:4.1f}x)", flush=True)
        r = min(official, key=lambda r: r["wall_s"]) if official else None
        if r is not None:
            print(f"{'':>9}          official v1 path {r['wall_s']:7.2f}s (cpu {r['cpu_s']:6.2f}s, peak "
                  f"{r['peak_rss_mb']:5.0f} MB)  speed-up ours {r['wall_s'] / o['wall_s']:5.2f}x (fallback "
                  f"{r['wall_s'] / f['wall_s']:5.2f}x; in cpu ours {r['cpu_s'] / o['cpu_s']:5.2f}x)  memory ours {o['tree_rss_mb'] / r['peak_rss_mb']:4.1f}x "
                  f"(fallback {f['tree_rss_mb'] / r['peak_rss_mb']:4.1f}x)", flush=True)
        elif args.official_mb:
            print(f"{'':>9}          official v1 path not timed (--official-max); its peak given by --official-mb: "
                  f"{args.official_mb:.0f} MB: memory ours {o['tree_rss_mb'] / args.official_mb:4.1f}x (fallback "
                  f"{f['tree_rss_mb'] / args.official_mb:4.1f}x)", flush=True)
        else:
            print(f"{'':>9}          official v1 path not timed (--official-max)", flush=True)
        if r is None and recorded_official(run_dir) is not None:
            r = recorded_official(run_dir)
            print(f"{'':>9}          official v1 path as recorded {r['measured']} (load {r['load']}): "
                  f"{r['wall_s']:7.2f}s (cpu {r['cpu_s']:6.2f}s, peak {r['peak_rss_mb']:5.0f} MB)", flush=True)
        print(f"{'':>9}          targets: " + targets(o, r, args.official_mb), flush=True)
        print(f"{'':>9}          load {os.getloadavg()[0]:.2f}", flush=True)
        rows.append((n, o, r))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    n, o, r = rows[-1]
    print(f"targets at {n:,}: " + targets(o, r, args.official_mb))


if __name__ == "__main__":
    main()
