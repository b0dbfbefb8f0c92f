"""Geometry accuracy on the synthetic cohort: every measurement against its ground truth.

    python tools/geometry_accuracy.py [--seed 7] [--patients 3] [--slices 5]
                                      [--out runs/geometry_accuracy.json]

Renders the synthetic slices in memory (``spoils_tf.data.synthetic.generate_slice``, the same
slices ``spoils synth --seed S --patients P --slices-per-patient K`` writes), measures each
with ``spoils_tf.geometry.measure.measure_slice`` and compares every disc row with the
generator's ground truth (the same definitions, computed on the polygons). Prints, per
measurement, the number of rows, the largest absolute error (mm and pixels) and how many rows
exceed the tolerance the tests use: 1 pixel or 2 % of the true value, whichever is larger,
for lengths; 1 degree for the tilt; for the disc height index, the tolerance that follows
from those of its lengths. Rows beyond it are listed. Writes the same as JSON.

Exit status: 0 (a report, even with rows beyond the tolerance), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

import numpy as np

from spoils_tf import fileio
from spoils_tf.data import synthetic
from spoils_tf.geometry import measure

LENGTH_KEYS = ("disc_height_mm", "disc_central_height_mm", "disc_anterior_height_mm",
               "disc_posterior_height_mm", "disc_width_mm", "disc_midpoint_width_mm",
               "vert_above_height_mm", "vert_above_width_mm", "vert_below_height_mm",
               "vert_below_width_mm", "canal_ap_diameter_mm", "disc_bulge_mm")
KEYS = ("tilt_deg",) + LENGTH_KEYS + ("disc_height_index",)


def length_tolerance(truth_mm: float, pixel_mm: float) -> float:
    """Allowed error (mm) of a length: 1 pixel or 2 % of the true value, the larger."""
    return max(pixel_mm, 0.02 * abs(truth_mm))


def dhi_tolerance(truth: dict, pixel_mm: float) -> float:
    """Allowed error of the disc height index (a ratio), from its lengths' tolerances:
    (tol(disc height) + DHI x tol(mean vertebral height)) / mean vertebral height."""
    v = [truth[k] for k in ("vert_above_height_mm", "vert_below_height_mm")
         if truth.get(k) is not None]
    vm = float(np.mean(v))
    return (length_tolerance(truth["disc_height_mm"], pixel_mm)
            + truth["disc_height_index"] * length_tolerance(vm, pixel_mm)) / vm


def evaluate(seed: int, n_patients: int, n_slices: int) -> dict:
    """Measures the cohort and compares it with the ground truth.

    Returns:
        {"rows": number of disc rows, "pixel_mm": pixel size, "per_key": {key: {"n",
        "max_abs_error", "max_abs_error_px" (lengths), "beyond_tolerance"}}, "beyond":
        [{"patient", "slice", "level", "key", "measured", "truth", "tolerance"}]}.
    """
    spacing = (synthetic.DEFAULT_FOV_MM / synthetic.DEFAULT_SIZE,) * 2
    px = max(spacing)
    errors: dict[str, list[float]] = {k: [] for k in KEYS}
    beyond: list[dict] = []
    n_rows = 0
    for index in range(n_patients):
        anat = synthetic.sample_patient(seed, index)
        for k in range(n_slices):
            image, mask, truth, _ = synthetic.generate_slice(anat, seed, k, n_slices)
            got = {r["level"]: r for r in measure.measure_slice(mask, spacing, image)}
            for t in truth:
                row = got.get(t["level"])
                n_rows += 1
                for key in KEYS:
                    if t.get(key) is None:
                        continue
                    value = float("nan") if row is None else float(row[key])
                    tol = (1.0 if key == "tilt_deg" else dhi_tolerance(t, px)
                           if key == "disc_height_index" else length_tolerance(t[key], px))
                    err = abs(value - float(t[key]))
                    errors[key].append(err)
                    if not err <= tol:  # NaN counts as beyond
                        beyond.append({"patient": anat.patient, "slice": k, "level": t["level"],
                                       "key": key, "measured": value, "truth": float(t[key]),
                                       "tolerance": tol})
    per_key = {}
    for key, errs in errors.items():
        if not errs:
            continue
        worst = float(np.max(errs)) if not any(map(math.isnan, errs)) else float("nan")
        entry = {"n": len(errs), "max_abs_error": worst,
                 "beyond_tolerance": sum(1 for b in beyond if b["key"] == key)}
        if key in LENGTH_KEYS:
            entry["max_abs_error_px"] = worst / px
        per_key[key] = entry
    return {"seed": seed, "patients": n_patients, "slices_per_patient": n_slices,
            "rows": n_rows, "pixel_mm": px, "per_key": per_key, "beyond": beyond}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--patients", type=int, default=3)
    ap.add_argument("--slices", type=int, default=5, help="slices per patient")
    ap.add_argument("--out", default="runs/geometry_accuracy.json")
    args = ap.parse_args(argv)
    if args.patients < 1 or args.slices < 1:
        print("geometry_accuracy: --patients and --slices must be >= 1", file=sys.stderr)
        return 2
    result = evaluate(args.seed, args.patients, args.slices)
    print(f"{result['rows']} disc rows, seed {args.seed}, {args.patients} patients x "
          f"{args.slices} slices, pixel {result['pixel_mm']:.3f} mm")
    print(f"{'measurement':28s} {'n':>5s} {'max err':>9s} {'px':>6s} {'beyond tol':>10s}")
    for key, e in result["per_key"].items():
        px = f"{e['max_abs_error_px']:.2f}" if "max_abs_error_px" in e else ""
        print(f"{key:28s} {e['n']:5d} {e['max_abs_error']:9.3f} {px:>6s} "
              f"{e['beyond_tolerance']:10d}")
    for b in result["beyond"]:
        print(f"beyond tolerance: {b['patient']} slice {b['slice']} {b['level']} {b['key']}: "
              f"{b['measured']:.3f} vs truth {b['truth']:.3f} (tolerance {b['tolerance']:.3f})")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_json(out, result)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
