"""``spoils folds``: patient-grouped, grade-stratified k folds of a dataset to folds.json
(``spoils_tf.data.folds.write_dataset_folds``).

Exit status: 0 written (summary and per-fold table printed), 1 refused (no LabelMe files, a
bad ``--k``, or a different folds file without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from spoils_tf.data import folds as folds_lib


def main(argv: list[str]) -> int:
    """``spoils folds --data DIR [--k 8] [--seed 0] [--out DIR/folds.json] [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="spoils folds",
                                     description=folds_lib.__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=pathlib.Path,
                        help="spoils dataset directory")
    parser.add_argument("--k", type=int, default=8, help="number of folds (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output (default DIR/folds.json)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a different existing folds file")
    args = parser.parse_args(argv)
    try:
        made = folds_lib.write_dataset_folds(args.data, k=args.k, seed=args.seed, out=args.out,
                                             overwrite=args.overwrite)
    except (FileNotFoundError, ValueError, FileExistsError) as e:
        print(f"spoils folds: {e}", file=sys.stderr)
        return 1
    for issue in made.issues:
        print(f"spoils folds: warning: {issue}", file=sys.stderr)
    print(made.summary_text())
    return 0
