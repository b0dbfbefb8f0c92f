"""``spoils synth``: the deterministic synthetic cohort (LabelMe slices + ground truth)
(``spoils_tf.data.synthetic.generate_cohort``).

Exit status: 0 written, 1 some patients could not be generated (listed; the others are
written), 2 bad arguments (argparse).
"""

from __future__ import annotations

import argparse
import sys

from spoils_tf.data import synthetic
from spoils_tf.errors import EXIT_OK, EXIT_PARTIAL


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spoils synth", description=synthetic.__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, required=True, help="number of patients N")
    ap.add_argument("--slices-per-patient", type=int, required=True,
                    help="parasagittal slices per patient K, centred on the midline")
    ap.add_argument("--seed", type=int, required=True, help="cohort seed (>= 0)")
    ap.add_argument("--out", required=True, help="output dataset directory")
    ap.add_argument("--size", type=int, default=synthetic.DEFAULT_SIZE, help="image height = width, pixels")
    ap.add_argument("--pixel-spacing", type=float, nargs="+", metavar="MM", default=None,
                    help=f"pixel spacing in mm: one value (square) or ROW COL; default "
                         f"{synthetic.DEFAULT_FOV_MM:g} / size (0.6 at 512)")
    ap.add_argument("--slice-spacing", type=float, default=synthetic.DEFAULT_SLICE_SPACING_MM,
                    help="distance between neighbouring slices, mm")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``spoils synth``: returns 0 on success, 1 when some patients could not be generated."""
    ap = _parser()
    args = ap.parse_args(argv)
    spacing = None
    if args.pixel_spacing is not None:
        if len(args.pixel_spacing) not in (1, 2):
            ap.error(f"--pixel-spacing takes 1 or 2 values (ROW COL), got "
                     f"{len(args.pixel_spacing)}")
        ps = args.pixel_spacing
        spacing = (ps[0], ps[-1])
    try:
        summary = synthetic.generate_cohort(args.out, args.patients, args.slices_per_patient,
                                            args.seed, size=args.size, spacing_mm=spacing,
                                            slice_spacing_mm=args.slice_spacing,
                                            progress=not args.no_progress)
    except ValueError as e:
        ap.error(str(e))
    for line in summary.report_lines():
        print(line, file=sys.stderr)
    return EXIT_PARTIAL if summary.issues else EXIT_OK
