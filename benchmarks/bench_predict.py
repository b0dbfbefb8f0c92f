"""Latency of ``spoils predict`` per 512² slice on CPU, float32 and bfloat16, by stage.

    .venv/bin/python benchmarks/bench_predict.py
    .venv/bin/python benchmarks/bench_predict.py --repeats 7 --precisions float32
    .venv/bin/python benchmarks/bench_predict.py --models runs/pipeline/bundle   # a real bundle

Issue #6 target: <= 0.5 s per 512² slice on 2 cores, excluding process start-up.

The bundle (``spoils_tf.serve.bundle``; built in a temporary folder unless ``--models`` is given)
holds paper-size models with random weights, since latency does not depend on their values:

* ``spoils_seg``: DeepLabV3+ ResNet50 at ``--size``² (``encoder_weights=None``) exported as
  a SavedModel (``spoils_tf.export.serving``), with a ``model.keras`` copy named in the card's
  ``keras_file``, which ``Predictor(precision="bfloat16")`` builds under ``mixed_bfloat16``;
* ``spoils_grade_cnn``: MobileNetV2 ``DiscClassifier`` on 64x128 crops (the ``spoils crops``
  default size), one channel, 11 grade classes;
* ``spoils_grade_geometry``: scikit-learn gradient boosting (the registry defaults: 100 trees,
  depth 3) fitted on ``grade_geometry_lib.synthetic_feature_table`` with the level index.

The input is one synthetic 512x512 mid-sagittal slice (``spoils_tf.data.synthetic``, 0.6 mm
pixels) and its ground-truth label map. With random weights the segmenter's label map is
noise: whatever "discs" the later stages find in it are not anatomy and their number varies,
so every timing is taken twice:

* ``segmented``: ``Predictor.predict`` segments the slice (the ``segment`` stage is the real
  cost; the later stages work on noise);
* ``supplied_mask``: ``predict(..., masks=[ground truth])``: no segmentation, but geometry,
  crops, both classifiers, the ensemble and the decision (ODI 40, NRS 6) run on the five
  lumbar discs, as they would after a trained segmenter;
* ``e2e_segmented`` / ``e2e_supplied_mask``: ``run.run_predict`` with the loaded
  predictor: reading a PNG, all stages, rendering the overlay and the HTML report and writing
  the five files: the whole ``spoils predict`` except process start-up and model loading.

The per-slice estimate is ``e2e_supplied_mask`` + the ``segment`` stage of ``segmented``
(medians). Model loading (``Predictor(...)``) and the first call (graph tracing, the
``warmup``) are timed once and reported separately. Each timing is the median and the 90th
percentile of ``--repeats`` calls after one warm-up call; ``total_cpu_ms`` is the process CPU
time (all threads) of each call, which grows much less than the wall time when other jobs
share the cores.

The JSON (``--out``) records the machine (CPU model, cores, SIMD flags, TF version, thread and
oneDNN settings) and the 1-minute load average before and after every block: on a shared
machine wall times grow with other jobs' load.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(0, str(_HERE))

import numpy as np  # noqa: E402

from bench_seg import machine_info  # noqa: E402
from spoils_tf import fileio, labels  # noqa: E402
from spoils_tf.serve import predictor as pr  # noqa: E402
from spoils_tf.serve import run  # noqa: E402

TARGET_S = 0.5        # issue #6: seconds per 512² slice on 2 cores
CROP_SIZE = (64, 128)  # (height, width) px: spoils_tf.geometry.crops.DEFAULT_SIZE
ODI, NRS = 40.0, 6    # a moderate-disability case, so the decision stage runs
VARIANTS = ("segmented", "supplied_mask", "e2e_segmented", "e2e_supplied_mask")


# === Bundle ===
def build_bundle(base: pathlib.Path, size: int, seed: int = 0) -> pathlib.Path:
    """Writes the three-model bundle of the module docstring under ``base`` (saved as model
    files, then published with ``spoils bundle``'s ``assemble_bundle``); returns ``base``."""
    import keras

    from spoils_tf.serve import assemble
    from spoils_tf.classical import io as cio
    from spoils_tf.classical import models as cmodels
    from spoils_tf.models.classifiers import DiscClassifier
    from spoils_tf.models.deeplabv3plus import DeepLabV3Plus
    from spoils_tf.train import grade_geometry_lib as ggl

    keras.utils.set_random_seed(seed)
    files = pathlib.Path(tempfile.mkdtemp(prefix="bench_predict_models_"))
    try:
        DeepLabV3Plus(input_shape=(size, size, 3), encoder="resnet50",
                      encoder_weights=None).save(files / "seg.keras")
        DiscClassifier(backbone="mobilenetv2", target="grade11", input_height=CROP_SIZE[0],
                       input_width=CROP_SIZE[1], input_channels=1,
                       backbone_weights=None).save(files / "cnn.keras")
        table = ggl.add_level_index(ggl.synthetic_feature_table(n_patients=20,
                                                                slices_per_patient=1))
        feats = list(ggl.default_feature_columns()) + [ggl.LEVEL_INDEX_COLUMN]
        y = cmodels.target_labels(table, "grade_class")
        labelled = np.asarray([v is not None for v in y])
        gb = cmodels.build_classifier("gradient_boosting", {}, classes=labels.GRADE_CLASSES)
        gb.fit(table.loc[labelled, feats].astype(np.float64), y[labelled])
        cio.save_classifier(gb, files / "gb.skops", feature_names=feats, target="grade_class",
                            classes=labels.GRADE_CLASSES, extra={"model": "gradient_boosting"})
        assemble.assemble_bundle(base, seg=files / "seg.keras", crop=files / "cnn.keras",
                                 geometry=files / "gb.skops", resize_mode="letterbox")
    finally:
        shutil.rmtree(files, ignore_errors=True)
    return base


def synthetic_case(size: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """``(image uint8 [size, size], mask int32 [size, size], (row_mm, col_mm))``: the middle of
    five slices of synthetic patient 0 (seed 0)."""
    from spoils_tf.data import synthetic
    spacing = (synthetic.DEFAULT_FOV_MM / size,) * 2
    anat = synthetic.sample_patient(0, 0)
    image, mask, _, _ = synthetic.generate_slice(anat, 0, 2, 5, size=size, spacing_mm=spacing)
    return image, mask.astype(np.int32), spacing


# === Timing ===
def _summary(values: list[float]) -> dict[str, float]:
    return {"median": float(statistics.median(values)),
            "p90": float(np.percentile(values, 90)), "min": float(min(values)),
            "max": float(max(values)), "n": len(values)}


def time_variant(call: Callable[[], dict], repeats: int) -> dict:
    """One warm-up call, then ``repeats`` timed calls of ``call`` (returning a report).

    Returns:
      ``{"stages_ms": {stage: summary}, "total_ms": summary (wall time around the call),
      "total_cpu_ms": summary (process CPU time of the call),
      "stage_sum_ms": summary, "status": [report statuses], "load1_before", "load1_after"}``.
    """
    call()
    load_before = os.getloadavg()[0]
    per_stage: dict[str, list[float]] = {s: [] for s in pr.STAGES}
    totals, cpu, sums, statuses = [], [], [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        report = call()
        totals.append(1000.0 * (time.perf_counter() - t))
        cpu.append(1000.0 * (time.process_time() - c))
        timing = report["timing_ms"]
        for s in pr.STAGES:
            per_stage[s].append(float(timing.get(s, 0.0)))
        sums.append(sum(float(timing.get(s, 0.0)) for s in pr.STAGES))
        statuses.append(report["status"])
    return {"stages_ms": {s: _summary(v) for s, v in per_stage.items()},
            "total_ms": _summary(totals), "total_cpu_ms": _summary(cpu),
            "stage_sum_ms": _summary(sums),
            "status": sorted(set(statuses)), "load1_before": load_before,
            "load1_after": os.getloadavg()[0]}


def _png(path: pathlib.Path, arr: np.ndarray) -> pathlib.Path:
    import PIL.Image
    PIL.Image.fromarray(arr).save(path)
    return path


def bench_precision(models_dir: pathlib.Path, precision: str, image: np.ndarray,
                    mask: np.ndarray, spacing: tuple[float, float], repeats: int,
                    work: pathlib.Path) -> dict:
    """Loads a Predictor at ``precision`` and times the four ``VARIANTS``."""
    import keras
    t = time.perf_counter()
    predictor = pr.Predictor(models_dir, precision=precision)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    predictor.warmup(image.shape)
    warmup_s = time.perf_counter() - t
    cnn_dtypes = sorted({layer.compute_dtype for layer in predictor._cnn_model.layers}) \
        if predictor.cnn is not None else []
    in_png = _png(work / "input.png", image)
    mask_png = _png(work / "mask_gt.png", mask.astype(np.uint8))
    out_dir = work / f"out_{precision}"
    calls: dict[str, Callable[[], dict]] = {
            "segmented": lambda: predictor.predict([image], spacing, odi=ODI, nrs=NRS),
            "supplied_mask": lambda: predictor.predict([image], spacing, odi=ODI, nrs=NRS,
                                                       masks=[mask]),
            "e2e_segmented": lambda: run.run_predict(in_png, models_dir, out_dir, odi=ODI,
                                                     nrs=NRS, pixel_spacing=spacing,
                                                     predictor=predictor),
            "e2e_supplied_mask": lambda: run.run_predict(in_png, models_dir, out_dir, odi=ODI,
                                                         nrs=NRS, mask_path=mask_png,
                                                         pixel_spacing=spacing,
                                                         predictor=predictor),
    }
    result = {"precision": precision, "precision_used": dict(predictor.precision_used),
              "crop_classifier_compute_dtypes": cnn_dtypes, "model_load_s": load_s,
              "first_call_warmup_s": warmup_s, "variants": {}}
    print(f"{precision}: model loading {load_s:.1f} s, first call (tracing) {warmup_s:.1f} s; "
          f"precision used {predictor.precision_used}", flush=True)
    for name, call in calls.items():
        r = time_variant(call, repeats)
        result["variants"][name] = r
        print(f"  {name:>18}: median {r['total_ms']['median']:.0f} ms, p90 "
              f"{r['total_ms']['p90']:.0f} ms, CPU {r['total_cpu_ms']['median']:.0f} ms "
              f"(status {','.join(r['status'])}; load "
              f"{r['load1_before']:.1f}->{r['load1_after']:.1f})", flush=True)
    v = result["variants"]
    seg_ms = v["segmented"]["stages_ms"]["segment"]["median"]
    rest_ms = v["e2e_supplied_mask"]["total_ms"]["median"]
    result["per_slice_estimate_ms"] = {"segment": seg_ms, "everything_else": rest_ms,
                                       "total": seg_ms + rest_ms,
                                       "meets_target": seg_ms + rest_ms <= 1000 * TARGET_S}
    keras.mixed_precision.set_global_policy("float32")
    return result


# === Report ===
def format_table(results: list[dict]) -> str:
    """Median / p90 ms per stage (rows) for each precision x {segmented, supplied_mask}."""
    cols = [(r["precision"], name) for r in results for name in ("segmented", "supplied_mask")]
    head = f"{'stage (ms, median/p90)':<24}" + "".join(
            f"{p[:4] + ' ' + ('seg' if n == 'segmented' else 'gt mask'):>18}" for p, n in cols)
    lines = [head, "-" * len(head)]
    by_prec = {r["precision"]: r for r in results}
    for stage in list(pr.STAGES) + ["(sum of stages)", "(wall, predict)"]:
        row = f"{stage:<24}"
        for p, n in cols:
            v = by_prec[p]["variants"][n]
            s = (v["stages_ms"][stage] if stage in pr.STAGES else
                 v["stage_sum_ms"] if stage == "(sum of stages)" else v["total_ms"])
            row += f"{s['median']:>11.1f}/{s['p90']:<6.0f}"
        lines.append(row)
    for p in by_prec:
        v = by_prec[p]["variants"]
        lines.append(f"{'(wall, run_predict)':<24}" + "".join(
                f"{v[n]['total_ms']['median']:>11.1f}/{v[n]['total_ms']['p90']:<6.0f}"
                for n in ("e2e_segmented", "e2e_supplied_mask"))
                     + f"   <- {p}, e2e: read PNG + all stages + HTML + 5 files")
    return "\n".join(lines)


def verdict(results: list[dict], size: int, cores: Optional[int]) -> str:
    parts = []
    for r in results:
        e = r["per_slice_estimate_ms"]
        parts.append(f"{r['precision']}: {e['total'] / 1000:.2f} s per slice (segmentation "
                     f"{e['segment'] / 1000:.2f} s = {100 * e['segment'] / e['total']:.0f} %, "
                     f"everything else {e['everything_else'] / 1000:.2f} s)")
    met = all(r["per_slice_estimate_ms"]["meets_target"] for r in results)
    return (f"target <= {TARGET_S} s per {size}² slice on {cores} cores: "
            f"{'MET' if met else 'NOT MET'}; " + "; ".join(parts))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="slice and model side, px")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per variant (>= 5)")
    p.add_argument("--precisions", default="float32,bfloat16")
    p.add_argument("--models", type=pathlib.Path, default=None,
                   help="an existing bundle instead of the random-weight one")
    p.add_argument("--out", type=pathlib.Path,
                   default=_HERE / "results" / "bench_predict.json")
    args = p.parse_args(argv)
    precisions = [s for s in args.precisions.split(",") if s]
    for prec in precisions:
        if prec not in pr.PRECISIONS:
            p.error(f"--precisions: {prec!r}; expected some of {pr.PRECISIONS}")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        out = {"machine": machine_info(), "loadavg_start": os.getloadavg(),
               "size": args.size, "repeats": args.repeats, "target_s": TARGET_S}
        t = time.perf_counter()
        models_dir = args.models or build_bundle(work / "bundle", args.size)
        out["bundle"] = str(args.models) if args.models else "random weights (built here)"
        out["bundle_build_s"] = None if args.models else time.perf_counter() - t
        image, mask, spacing = synthetic_case(args.size)
        out["input"] = {"shape": list(image.shape), "pixel_spacing_mm": list(spacing),
                        "gt_discs": [d for d in labels.DISC_NAMES
                                     if (mask == labels.SEG_ID[d]).any()]}
        print(f"bundle ready ({out['bundle']}); load {os.getloadavg()[0]:.1f}", flush=True)
        out["results"] = [bench_precision(models_dir, prec, image, mask, spacing, args.repeats,
                                          work) for prec in precisions]
        out["loadavg_end"] = os.getloadavg()
        out["verdict"] = verdict(out["results"], args.size, out["machine"].get("sched_affinity"))
        print(format_table(out["results"]))
        seg_status = sorted({st for r in out["results"]
                             for st in r["variants"]["segmented"]["status"]})
        who = ("the bundle's model" if args.models else
               "the random-weight model (its label map is noise)")
        print(f"seg = {who} segments the slice (report status "
              f"{'/'.join(seg_status)}); gt mask = the ground-truth "
              f"label map is supplied (no segmentation; the later stages run on "
              f"{len(out['input']['gt_discs'])} discs)")
        print(out["verdict"])
        print(f"load average start {out['loadavg_start']}, end {out['loadavg_end']}")
        fileio.write_json(args.out, out, sort_keys=True)
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
