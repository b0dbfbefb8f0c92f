"""``spoils predicted-masks``: every slice of a dataset predicted by its own fold's held-out
segmentation model, written as a spoils dataset (``spoils_tf.train.predicted_masks.
predict_dataset``); ``spoils predicted-masks compare``: ground-truth- vs predicted-mask grading
runs side by side (``predicted_masks.compare_runs``).

Exit status: 0 written, 1 some slices could not be predicted (listed in ``OUT/issues.csv``),
2 refused input (nothing written).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from spoils_tf.data import layout
from spoils_tf.train import predicted_masks


def _predict_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
            prog="spoils predicted-masks",
            description="Predict every slice with its own fold's held-out segmentation model "
                        "and write a spoils dataset of predicted masks ('compare' as the first "
                        "argument instead scores two grade_geometry runs side by side).")
    ap.add_argument("--data", required=True, type=pathlib.Path,
                    help="source spoils dataset (labelme/, folds.json, patients.csv, discs.csv)")
    ap.add_argument("--seg-workdir", required=True, type=pathlib.Path,
                    help="segmentation run (config.json, fold_<k>/model.keras, metrics.json)")
    ap.add_argument("--out", required=True, type=pathlib.Path, help="dataset to write")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ap.add_argument("--allow-newer-folds", action="store_true",
                    help="accept a run folds file newer than the models (only its time changed)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _compare_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
            prog="spoils predicted-masks compare",
            description="Ground-truth- vs predicted-mask grading runs side by side, with the "
                        "missed discs and the all-discs accuracy.")
    ap.add_argument("--gt-workdir", required=True, type=pathlib.Path)
    ap.add_argument("--pred-workdir", required=True, type=pathlib.Path)
    ap.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    ap.add_argument("--models", default="", help="comma list (default: all in both runs)")
    ap.add_argument("--targets", default="", help="comma list (default: all in both runs)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    """``--data DIR --seg-workdir RUN --out OUT`` (predict) or ``compare ...``; 0 on success,
    1 when slices failed (listed in OUT/issues.csv), 2 on a refused input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        args = _compare_parser().parse_args(argv[1:])
        split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
        try:
            result = predicted_masks.compare_runs(
                    args.gt_workdir, args.pred_workdir, args.out, models=split(args.models),
                    targets=split(args.targets), n_boot=args.n_boot, seed=args.seed)
        except (FileNotFoundError, ValueError) as e:
            print(f"predicted_masks compare: {e}", file=sys.stderr)
            return 2
        print(result["markdown"])
        return 0
    args = _predict_parser().parse_args(argv)
    try:
        prov = predicted_masks.predict_dataset(
                args.data, args.seg_workdir, args.out, overwrite=args.overwrite,
                progress=not args.no_progress, allow_newer_folds=args.allow_newer_folds)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"predicted_masks: {e}", file=sys.stderr)
        return 2
    s = prov["slices"]
    print(f"predicted_masks: {s['written']}/{s['total']} slices of {len(prov['patients'])} "
          f"patients predicted by their own fold's model ({prov['k']} folds) -> {args.out}; "
          f"{s['failed']} failed (see {args.out / layout.ISSUES_CSV}); ground-truth discs: "
          + ", ".join(f"{k} {v}" for k, v in prov["disc_matches"].items()))
    return 1 if s["failed"] else 0
