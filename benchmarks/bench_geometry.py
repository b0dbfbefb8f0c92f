"""Benchmark: milliseconds per slice for every measurement of ``spoils_tf.geometry.measure``.

    taskset -c 0 python benchmarks/bench_geometry.py [--data DIR] [--slices 20] [--repeats 15]
        [--runs 3] [--reference OLD_MEASURE_PY] [--out benchmarks/results/bench_geometry.json]

Measures ``measure_slice(mask, spacing, image)`` (all discs, vertebrae, canal and signal
intensity) on one core (BLAS/OpenMP/OpenCV threads set to 1; pin the process with
``taskset -c 0`` on a shared machine): per slice the median over ``--repeats`` runs (after
one warm-up), then the median and 90th percentile across slices, both wall-clock and CPU
time. On a shared machine CPU time too is inflated by the other processes (cache and SMT
sharing), so each run also reports the median across slices of the per-slice *minimum* CPU
time (``cpu_ms_per_slice_min_median``, the least disturbed estimate) and, with
``--reference FILE`` (a copy of another version of ``measure.py``, e.g.
``git show HEAD~1:spoils_tf/geometry/measure.py > /tmp/measure_ref.py``), times that version
interleaved with the current one, slice by slice and repeat by repeat, so both see the same
load: ``reference_cpu_ms_per_slice_min_median`` and the median per-slice ratio
``cpu_ratio_vs_reference`` (current / reference). The whole measurement is repeated ``--runs``
times; the JSON keeps every run (with the load average at its end) and the top-level numbers
are those of the run with the best wall median, plus the spread (min-max) of the run
medians. Slices come from a dataset directory
(``--data``, e.g. a converted SPIDER set) or, by default, from the synthetic cohort generated
in memory. Prints a summary and writes JSON with the machine description. Target: <= 10 ms
per slice.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Optional  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from spoils_tf import machine  # noqa: E402
from spoils_tf.geometry import features, measure  # noqa: E402

TARGET_MS = 10.0


def _machine() -> dict:
    cpu, load = machine.cpu_model(), machine.load_average()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "opencv": cv2.__version__, "load_average_1_5_15": load}


def _slices_from_dir(data: pathlib.Path, n: int) -> list[tuple[np.ndarray, np.ndarray, tuple]]:
    from spoils_tf.data import layout
    from spoils_tf.data.labelme_io import read_labelme
    patients = features.read_patient_table(data)
    paths = layout.list_labelme_jsons(data)
    step = max(1, len(paths) // n)
    out = []
    for p in paths[::step][:n]:
        rec = read_labelme(p)
        sp = features.spacing_for(rec, patients)
        if sp is not None:
            out.append((rec.mask, rec.image, sp))
    return out


def _synthetic_slices(n: int) -> list[tuple[np.ndarray, np.ndarray, tuple]]:
    from spoils_tf.data import synthetic
    out = []
    sp = (synthetic.DEFAULT_FOV_MM / synthetic.DEFAULT_SIZE,) * 2
    for i in range(n):
        anat = synthetic.sample_patient(0, i // 3)
        image, mask, _, _ = synthetic.generate_slice(anat, 0, i % 3, 3)
        out.append((mask, image, sp))
    return out


def _load_reference(path: str) -> ModuleType:
    """Imports a copy of ``measure.py`` from ``path`` as module ``measure_reference``."""
    spec = importlib.util.spec_from_file_location("measure_reference", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--reference {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules["measure_reference"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def run(slices: list, repeats: int, reference: Optional[ModuleType] = None) -> dict:
    """Times ``measure.measure_slice`` (and ``reference.measure_slice``, interleaved) on every
    slice: ``repeats`` timed calls after one warm-up. Returns the statistics (ms per slice)."""
    wall, cpu, cpu_min, ref_min, ratio, discs = [], [], [], [], [], []
    for mask, image, sp in slices:
        measure.measure_slice(mask, sp, image)  # warm-up
        if reference is not None:
            reference.measure_slice(mask, sp, image)
        w, c, r = [], [], []
        for _ in range(repeats):
            t0, p0 = time.perf_counter(), time.process_time()
            rows = measure.measure_slice(mask, sp, image)
            w.append(time.perf_counter() - t0)
            c.append(time.process_time() - p0)
            if reference is not None:
                p0 = time.process_time()
                reference.measure_slice(mask, sp, image)
                r.append(time.process_time() - p0)
        wall.append(1000 * float(np.median(w)))
        cpu.append(1000 * float(np.median(c)))
        cpu_min.append(1000 * min(c))
        if r:
            ref_min.append(1000 * min(r))
            ratio.append(min(c) / min(r))
        discs.append(len(rows))
    out = {"n_slices": len(slices), "repeats": repeats,
           "discs_per_slice_mean": float(np.mean(discs)),
           "wall_ms_per_slice_median": float(np.median(wall)),
           "wall_ms_per_slice_p90": float(np.percentile(wall, 90)),
           "cpu_ms_per_slice_median": float(np.median(cpu)),
           "cpu_ms_per_slice_p90": float(np.percentile(cpu, 90)),
           "cpu_ms_per_slice_min_median": float(np.median(cpu_min)),
           "target_ms": TARGET_MS}
    if ratio:
        out["reference_cpu_ms_per_slice_min_median"] = float(np.median(ref_min))
        out["cpu_ratio_vs_reference"] = float(np.median(ratio))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="dataset directory (default: synthetic)")
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3, help="repeat the whole measurement")
    ap.add_argument("--reference", default=None,
                    help="another version of measure.py to time interleaved (ratio)")
    ap.add_argument("--out", default="benchmarks/results/bench_geometry.json")
    args = ap.parse_args(argv)
    reference = _load_reference(args.reference) if args.reference else None
    cv2.setNumThreads(1)
    if args.data:
        slices, source = _slices_from_dir(pathlib.Path(args.data), args.slices), str(args.data)
    else:
        slices, source = _synthetic_slices(args.slices), "synthetic (generated in memory)"
    if not slices:
        print(f"bench_geometry: no usable slices in {source}", file=sys.stderr)
        return 2
    runs = []
    for i in range(max(1, args.runs)):
        r = run(slices, args.repeats, reference)
        r["load_average_1_5_15"] = _machine()["load_average_1_5_15"]
        runs.append(r)
        ref = (f"; reference CPU min {r['reference_cpu_ms_per_slice_min_median']:.2f} ms, "
               f"ratio {r['cpu_ratio_vs_reference']:.3f}" if reference is not None else "")
        print(f"run {i + 1}: {r['wall_ms_per_slice_median']:.2f} ms/slice wall median "
              f"(p90 {r['wall_ms_per_slice_p90']:.2f}), CPU {r['cpu_ms_per_slice_median']:.2f} ms "
              f"(min {r['cpu_ms_per_slice_min_median']:.2f}){ref}; "
              f"load {r['load_average_1_5_15']}")
    result = dict(min(runs, key=lambda r: r["wall_ms_per_slice_median"]))
    walls = [r["wall_ms_per_slice_median"] for r in runs]
    cpus = [r["cpu_ms_per_slice_median"] for r in runs]
    result.update({"runs": runs, "wall_ms_median_spread": [min(walls), max(walls)],
                   "cpu_ms_median_spread": [min(cpus), max(cpus)],
                   "source": source, "reference": args.reference,
                   "machine": _machine(), "threads": 1,
                   "date": datetime.datetime.now().isoformat(timespec="seconds")})
    mins = [r["cpu_ms_per_slice_min_median"] for r in runs]
    result["cpu_ms_min_median_spread"] = [min(mins), max(mins)]
    ref = ""
    if reference is not None:
        ratios = [r["cpu_ratio_vs_reference"] for r in runs]
        result["cpu_ratio_vs_reference_spread"] = [min(ratios), max(ratios)]
        ref = f"CPU ratio to reference {min(ratios):.3f}-{max(ratios):.3f}, "
    print(f"geometry: best {result['wall_ms_per_slice_median']:.2f} ms/slice wall median "
          f"(p90 {result['wall_ms_per_slice_p90']:.2f}; "
          f"run medians {min(walls):.2f}-{max(walls):.2f}), "
          f"CPU {result['cpu_ms_per_slice_median']:.2f} ms "
          f"(run medians {min(cpus):.2f}-{max(cpus):.2f}; "
          f"min-based {min(mins):.2f}-{max(mins):.2f}), "
          f"{ref}{result['discs_per_slice_mean']:.1f} discs/slice, {result['n_slices']} slices x "
          f"{result['repeats']} repeats x {len(runs)} runs, {source}; target <= {TARGET_MS} ms; "
          f"load {result['machine']['load_average_1_5_15']}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
