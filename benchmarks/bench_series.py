"""Seconds per series on this CPU: the shipped model on a SPIDER volume, batched vs per slice.

    .venv/bin/python benchmarks/bench_series.py \
        --out benchmarks/results/bench_series.json

The volume: one patient's sagittal T2 slices from ``../shared/data/spider_t2space/`` (the
patient with the most slices there unless ``--patient``; its pixel spacing from
``overview.csv``), ordered mid-sagittal first (``predictor.default_offsets``), as ``spoils
predict`` reads a DICOM series or volume (orientation from the header). Without the folder a
synthetic volume of the same size (640 x 512, 0.469 mm, ``--synthetic-slices``) stands in,
and the JSON says so.

For the middle 5 slices and for all slices, median of ``--repeats`` runs after a warm-up run
(graph building excluded):

* ``segment_batched``: ``Segmenter.segment_slices`` (the slices in one network call, plus
  one orientation-network call), what ``spoils predict`` runs;
* ``segment_per_slice``: the same segmenter called once per slice (the previous path);
* ``predict``: ``Predictor.predict_full`` on the default bundle (``spoils_tf.weights``):
  segmentation, geometry, decision support and the report dict (file reading and HTML
  excluded), with its per-stage milliseconds.

Printed beside published CPU times of tools a user might pick instead (their own papers and
repositories, other hardware, whole-spine 3-D segmentation rather than our slices: an order
of magnitude, not a like-for-like comparison). Records the CPU model and the 1-minute load
average before and after each measurement, and process CPU seconds.
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import pathlib
import re
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402

from spoils_tf import fileio, weights  # noqa: E402
from spoils_tf.serve import predictor as predictor_lib  # noqa: E402
from spoils_tf.serve import segmenter  # noqa: E402
from spoils_tf.train import common  # noqa: E402

SPIDER_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "spider_t2space"

# Published CPU times of other lumbar-spine MRI segmentation tools (not run here).
PUBLISHED = (
        {"tool": "SPINEPS", "seconds": 224.0, "unit": "per case",
         "hardware": "CPU, as published by its authors (not this machine)"},
        {"tool": "TotalSpineSeg", "seconds": 780.0, "unit": "per scan",
         "hardware": "14-core laptop CPU, as published by its authors (not this machine)"},
)


def load_spider_volume(folder: pathlib.Path, patient: str = ""
                       ) -> tuple[list[np.ndarray], tuple[float, float], str]:
    """One patient's slices in volume order, ``(row_mm, col_mm)`` and the series name.

    Raises:
      FileNotFoundError: no such patient in ``folder/images``.
      ValueError: ``overview.csv`` has no pixel spacing for it.
    """
    by_series: dict[str, list[tuple[int, pathlib.Path]]] = {}
    for path in (folder / "images").glob("*.png"):
        m = re.fullmatch(r"(.+)_slice(\d+)", path.stem)
        if m:
            by_series.setdefault(m.group(1), []).append((int(m.group(2)), path))
    if patient:
        name = patient if patient in by_series else f"{patient}_t2_SPACE"
        if name not in by_series:
            raise FileNotFoundError(f"{folder / 'images'}: no slices of patient {patient!r}")
    else:   # the most slices; ties by name
        name = max(sorted(by_series), key=lambda k: len(by_series[k]))
    slices = [np.asarray(PIL.Image.open(p))
              for _, p in sorted(by_series[name])]
    slices = [s[..., 0] if s.ndim == 3 else s for s in slices]
    with open(folder / "overview.csv", newline="", encoding="utf-8") as f:
        row = next((r for r in csv.DictReader(f) if r["new_file_name"] == name), None)
    if row is None or not row.get("PixelSpacing"):
        raise ValueError(f"{folder / 'overview.csv'}: no PixelSpacing for {name}")
    spacing = tuple(float(v) for v in ast.literal_eval(row["PixelSpacing"]))
    return [np.ascontiguousarray(s, np.uint8) for s in slices], spacing, name


def synthetic_volume(n: int) -> tuple[list[np.ndarray], tuple[float, float], str]:
    rng = np.random.default_rng(0)
    return ([rng.integers(0, 256, (640, 512), dtype=np.uint8) for _ in range(n)],
            (0.46875, 0.46875), f"synthetic {n} x 640 x 512 (no SPIDER data found)")


def mid_first(slices: list[np.ndarray], k: int) -> tuple[list[np.ndarray], list[int]]:
    """The ``k`` slices nearest the middle, ordered as ``Predictor`` expects, and offsets."""
    mid = len(slices) // 2
    offsets = [o for o in predictor_lib.default_offsets(len(slices) * 2 + 1)
               if 0 <= mid + o < len(slices)][:k]
    return [slices[mid + o] for o in offsets], offsets


def _timed(fn, repeats: int) -> dict:
    fn()    # warm-up: graph building, per-size model rebuild
    wall, cpu, load0 = [], [], os.getloadavg()[0]
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"median_s": statistics.median(wall), "min_s": min(wall), "max_s": max(wall),
            "all_s": wall, "cpu_median_s": statistics.median(cpu), "repeats": repeats,
            "load1_before": load0, "load1_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spider-dir", type=pathlib.Path, default=SPIDER_DIR)
    p.add_argument("--patient", default="", help="SPIDER patient id (default: most slices)")
    p.add_argument("--synthetic-slices", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=pathlib.Path,
                   default=pathlib.Path("benchmarks/results/bench_series.json"))
    args = p.parse_args(argv)
    if args.repeats < 3:
        p.error("--repeats: at least 3 (medians of 3 or more)")
    if (args.spider_dir / "images").is_dir():
        volume, spacing, name = load_spider_volume(args.spider_dir, args.patient)
        data_note = f"SPIDER {name} ({args.spider_dir}), CC BY 4.0"
    else:
        volume, spacing, name = synthetic_volume(args.synthetic_slices)
        data_note = name
        print(f"note: {args.spider_dir} not found; using a {name}", flush=True)
    print(f"volume: {data_note}: {len(volume)} slices of {volume[0].shape}, "
          f"{spacing} mm", flush=True)

    seg = segmenter.Segmenter(weights.DEFAULT_BUNDLE)
    pred = predictor_lib.Predictor(weights.DEFAULT_BUNDLE)
    result = {"machine": common.machine_info(), "loadavg_start": os.getloadavg(),
              "data": data_note, "slices_in_volume": len(volume),
              "slice_shape": list(volume[0].shape), "pixel_spacing_mm": list(spacing),
              "model": seg.label, "published": list(PUBLISHED), "series": []}
    for label, k in (("middle 5", 5), ("all slices", len(volume))):
        slices, offsets = mid_first(volume, k)
        sources = [f"slice at offset {o}" for o in offsets]
        row = {"series": label, "slices": len(slices)}
        row["segment_batched"] = _timed(lambda: seg.segment_slices(
                slices, spacing, sources, from_header=True), args.repeats)
        row["segment_per_slice"] = _timed(lambda: [
                seg(s, spacing, src, from_header=True) for s, src in zip(slices, sources)],
                args.repeats)
        stages = {}

        def predict():
            r = pred.predict_full(slices, spacing, slice_offsets=offsets,
                                  orientation_from_header=True)
            stages.update(r.report["timing_ms"])
        row["predict"] = _timed(predict, args.repeats)
        row["predict_stage_ms_last_run"] = dict(stages)
        result["series"].append(row)
        b, s, f = (row[x]["median_s"] for x in ("segment_batched", "segment_per_slice",
                                                 "predict"))
        print(f"{label:>10} ({len(slices):2d} slices): segment batched {b:6.2f} s, per slice "
              f"{s:6.2f} s ({s / b:.2f}x); whole predict {f:6.2f} s; load "
              f"{row['predict']['load1_before']:.1f}", flush=True)
    result["loadavg_end"] = os.getloadavg()

    cpu = result["machine"].get("cpu_model", "?")
    print(f"\nSeconds per series on this machine ({cpu}, {os.cpu_count()} cores, load "
          f"{result['loadavg_start'][0]:.1f} at start), medians of {args.repeats}:")
    print(f"| tool | series | seconds | where |\n| --- | --- | ---: | --- |")
    for row in result["series"]:
        print(f"| spoils-tf `spoils predict` (segmentation + geometry + decision) | "
              f"{row['series']} ({row['slices']} slices) | {row['predict']['median_s']:.1f} | "
              f"this machine |")
    for pub in PUBLISHED:
        print(f"| {pub['tool']} | {pub['unit']} | ~{pub['seconds']:.0f} | {pub['hardware']} |")
    fileio.write_json(args.out, result, sort_keys=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
