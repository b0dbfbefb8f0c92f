"""``spoils features``: measure every disc of a dataset (mm) and write the feature table
(``spoils_tf.geometry.features``).

Exit status: 0 tables written, 2 refused before writing anything.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from spoils_tf.data import layout
from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_OK, SpoilsError
from spoils_tf.geometry import features


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spoils features", description=features.__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True,
                    help="dataset directory (labelme/, patients.csv, ...)")
    ap.add_argument("--out", required=True,
                    help="output .parquet (a .csv is written next to it)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``spoils features``: 0 = tables written, 2 = refused before writing anything (a bad
    ``--out``, no ``labelme/`` or no LabelMe file in it, a bad ``patients.csv``)."""
    args = _parser().parse_args(argv)
    try:
        features.check_output(args.out)
        table, volumes, issues = features.build_feature_table(args.data,
                                                              progress=not args.no_progress)
        if not layout.list_labelme_jsons(args.data):
            raise SpoilsError(pathlib.Path(args.data) / layout.LABELME_DIR, None,
                              "no LabelMe *.json file; expected the dataset's slices "
                              "(written by spoils convert-spider or spoils synth)")
    except (FileNotFoundError, ValueError) as e:      # SpoilsError is a ValueError
        print(f"spoils features: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    paths = features.write_feature_table(table, volumes, issues, args.out)
    n_nan = int(table["disc_height_mm"].isna().sum()) if not table.empty else 0
    n_patients = table["patient"].nunique() if len(table) else 0
    print(f"spoils features: {len(table)} disc rows from {n_patients} "
          f"patients ({n_nan} with NaN disc height), {len(volumes)} volumes, "
          f"{len(issues)} files skipped -> {', '.join(str(p) for p in paths)}")
    for _, r in issues.head(10).iterrows():
        print(f"  skipped {r['file']}: {r['reason']}", file=sys.stderr)
    if len(issues) > 10:
        print(f"  ... and {len(issues) - 10} more in {paths[-1]}", file=sys.stderr)
    return EXIT_OK
