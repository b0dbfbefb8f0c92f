"""``spoils bundle``: publish models the experiments saved as a model bundle for
``spoils predict`` (``spoils_tf.serve.assemble.assemble_bundle``).

``spoils bundle --out DIR [--seg MODEL.keras] [--crop MODEL.keras] [--geometry MODEL.skops]
[--resize-mode ...] [--margin-frac F] [--seg-format savedmodel|keras] [--card-extra JSON]``

Exit status: 0 published (paths printed), 2 refused (the reason names the file and field;
nothing published).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_OK
from spoils_tf.serve import assemble


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
            prog="spoils bundle",
            description="Publish models saved by the experiments as a model bundle for "
                        "`spoils predict --models OUT` (next free version of each).")
    ap.add_argument("--out", required=True, help="bundle directory (created)")
    ap.add_argument("--seg", help="segmentation model .keras (experiments.seg fold model)")
    ap.add_argument("--crop", help="crop classifier .keras (experiments.grade_cnn fold model)")
    ap.add_argument("--geometry", help="geometry classifier .skops with its .json sidecar "
                                       "(experiments.grade_geometry final model)")
    ap.add_argument("--resize-mode", default=None,
                    help="the segmentation model's input fitting (default: its run's "
                         "config.json data.resize_mode)")
    ap.add_argument("--margin-frac", type=float, default=None,
                    help="margin the crop classifier's training crops were cut with "
                         "(default: spoils crops' default)")
    ap.add_argument("--seg-format", choices=("savedmodel", "keras"), default="savedmodel",
                    help="fixed-spacing segmentation models: SavedModel for TF Serving (with "
                         "the .keras beside it) or the .keras file alone (the shipped bundle)")
    ap.add_argument("--card-extra", default=None,
                    help="JSON file of more model-card fields for every model (training data, "
                         "licence, recipe, metrics, limits)")
    return ap


def main(argv: list[str]) -> int:
    """``spoils bundle``: 0 = published, 2 = refused (nothing published)."""
    args = _parser().parse_args(argv)
    try:
        extra = None
        if args.card_extra:
            try:
                extra = json.loads(pathlib.Path(args.card_extra).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{args.card_extra}: --card-extra is not a readable JSON "
                                 f"object ({e})") from e
            if not isinstance(extra, dict):
                raise ValueError(f"{args.card_extra}: --card-extra must hold a JSON object")
        published = assemble.assemble_bundle(args.out, seg=args.seg, crop=args.crop,
                                             geometry=args.geometry,
                                             resize_mode=args.resize_mode,
                                             margin_frac=args.margin_frac,
                                             seg_format=args.seg_format, card_extra=extra)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"spoils bundle: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for name, path in published.items():
        print(f"{name}: {path}")
    return EXIT_OK
