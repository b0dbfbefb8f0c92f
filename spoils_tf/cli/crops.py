"""``spoils crops``: oriented, normalised disc crops of a dataset with an index CSV
(``spoils_tf.geometry.crops.write_crops``).

Exit status: 0 crops written (skipped discs listed), 2 refused.
"""

from __future__ import annotations

import argparse
import sys

from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_OK
from spoils_tf.geometry import crops


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spoils crops", description=crops.__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True,
                    help="dataset directory (labelme/, patients.csv, ...)")
    ap.add_argument("--out", required=True, help="output directory for crops + index.csv")
    ap.add_argument("--size", default="64x128", help="HEIGHTxWIDTH of each crop (default 64x128)")
    ap.add_argument("--context-slices", type=int, choices=(0, 1), default=0,
                    help="1: add slices k-1 and k+1 as channels")
    ap.add_argument("--format", choices=("png", "npy", "both"), default="both")
    ap.add_argument("--margin", type=float, default=crops.DEFAULT_MARGIN_FRAC,
                    help="box growth per side, fraction of the disc extent (default 0.15)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``spoils crops``: 0 = crops written, 2 = refused (a bad ``--size``, no dataset)."""
    args = _parser().parse_args(argv)
    try:
        size = crops.parse_size(args.size)
        index, issues = crops.write_crops(args.data, args.out, size=size,
                                          context_slices=args.context_slices, fmt=args.format,
                                          margin_frac=args.margin, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"spoils crops: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"spoils crops: wrote {len(index)} crops to {args.out} "
          f"({len(issues)} skipped, see crops_issues.csv)")
    for _, r in issues.head(10).iterrows():
        print(f"  skipped {r['file']} {r['level']}: {r['reason']}", file=sys.stderr)
    return EXIT_OK
