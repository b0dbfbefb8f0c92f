"""``spoils predict``: one patient's sagittal MRI -> report.json, report.html and overlay.png.

``spoils predict --input FILE|DICOM_DIR [--models DIR] --out DIR [--odi N --nrs N]
[--mask FILE] [--pixel-spacing ROW_MM COL_MM] [--slices 1|3|5...] [--precision float32|bfloat16]``

``spoils predict --manifest FILE.csv [--models DIR] --out DIR [--slices N] [--precision P]``

``--input`` runs ``spoils_tf.serve.run.run_predict``. Exit status: 0 report written, 2
bad input (a ``FileNotFoundError`` or ``ValueError`` naming the file and field; nothing
written), 3 no disc found (a report saying so is written).

``--manifest`` runs ``spoils_tf.serve.batch.run_batch`` (the manifest's columns are described
there): one report folder per row, ``summary.csv`` and ``failed.csv`` under ``--out``, one
model load, a progress bar. Exit status: 0 every row reported (a row without a disc included),
1 some rows failed (each in ``failed.csv`` and on stderr), 2 a bad manifest, ``--out`` or
bundle (named; checked before any input is read, nothing written).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_NO_DISC, EXIT_OK, EXIT_PARTIAL
from spoils_tf.serve import predictor, report_data, run


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spoils predict",
                                 description="one patient's sagittal MRI -> report.json, "
                                             "report.html and overlay.png (decision support)")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--input",
                        help="PNG/JPEG, DICOM file or series folder, MHA/NIfTI volume")
    source.add_argument("--manifest",
                        help="CSV with one row per input: path (required), "
                             "pixel_spacing_row_mm, pixel_spacing_col_mm, odi, nrs, id; one "
                             "report folder per row under --out, plus summary.csv and "
                             "failed.csv")
    ap.add_argument("--models", default=None,
                    help="model bundle directory (spoils_tf.serve.bundle); default: the shipped "
                         "models trained on SPIDER (spoils_tf/weights, see its MODEL_CARD.md)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--odi", default=None, help="Oswestry Disability Index, 0-100 (%%)")
    ap.add_argument("--nrs", default=None, help="pain Numerical Rating Scale, 0-10")
    ap.add_argument("--mask", default=None,
                    help="label-map PNG or LabelMe JSON replacing segmentation")
    ap.add_argument("--pixel-spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                    help="pixel spacing in mm (required for PNG/JPEG; overrides a header)")
    ap.add_argument("--slices", type=int, default=1,
                    help="odd number of sagittal slices around the middle one (volumes)")
    ap.add_argument("--precision", choices=predictor.PRECISIONS, default="float32")
    return ap


def _main_manifest(args: argparse.Namespace) -> int:
    """``--manifest``: 0 every row reported, 1 some failed, 2 refused before any work."""
    from spoils_tf.serve import batch
    given = [f"--{k.replace('_', '-')}" for k in ("odi", "nrs", "mask", "pixel_spacing")
             if getattr(args, k) is not None]
    try:
        if given:
            raise ValueError(f"{', '.join(given)}: not with --manifest; give them per row in "
                             "the manifest's columns")
        result = batch.run_batch(args.manifest, args.models, args.out, slices=args.slices,
                                 precision=args.precision)
    except (FileNotFoundError, ValueError) as e:
        print(f"spoils predict: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for f in result.failed:
        print(f"spoils predict: row {f['row']} failed: {f['reason']}", file=sys.stderr)
    print(f"{len(result.reports)} of {len(result.reports) + len(result.failed)} input(s) "
          f"reported into {args.out}; summary: {result.summary_path}"
          + (f"; {len(result.failed)} failed: {result.failed_path}" if result.failed else ""))
    return EXIT_PARTIAL if result.failed else EXIT_OK


def main(argv: list[str]) -> int:
    """``spoils predict``: with ``--input`` 0 = report written, 2 = bad input (nothing
    written), 3 = no disc found (a report saying so is written); with ``--manifest`` see
    :func:`_main_manifest`."""
    args = _parser().parse_args(argv)
    if args.manifest is not None:
        return _main_manifest(args)
    try:
        report = run.run_predict(args.input, args.models, args.out, odi=args.odi,
                                 nrs=args.nrs, mask_path=args.mask,
                                 pixel_spacing=args.pixel_spacing, slices=args.slices,
                                 precision=args.precision)
    except (FileNotFoundError, ValueError) as e:
        print(f"spoils predict: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = pathlib.Path(args.out)
    for key in ("html", "json", "overlay"):
        print(f"{key}: {out / run.REPORT_FILES[key]}")
    print("timing_ms: " + ", ".join(f"{k}={v:.1f}" for k, v in report["timing_ms"].items()))
    if report["status"] == report_data.STATUS_NO_DISC:
        print("status: no_disc (no disc found; no grades, no recommendation)")
        return EXIT_NO_DISC
    return EXIT_OK
