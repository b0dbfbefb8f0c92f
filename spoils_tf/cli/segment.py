"""``spoils segment``: one or more sagittal slices -> mask, overlay, input and areas files.

``spoils segment [FILE|DIR ...] [--image FILE] [--model PATH] --out DIR [--resize-mode ...]
[--target-spacing-mm MM] [--orientation auto|as_is] [--pixel-spacing ROW_MM COL_MM]``

One model load (``spoils_tf.serve.segmenter.Segmenter``) for every input
(``spoils_tf.serve.inputs.expand_inputs``); each input goes through
``spoils_tf.serve.segmenter.segment_file``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from tqdm.auto import tqdm

from spoils_tf import errors, fileio, labels
from spoils_tf.data import images
from spoils_tf.serve import inputs, segmenter


def main(argv: list[str]) -> int:
    """``spoils segment [FILE|DIR ...] [--image FILE] [--model PATH] --out DIR ...``.

    Returns ``EXIT_OK`` (0) when every input was segmented; ``EXIT_PARTIAL`` (1) with a message
    per failed input on stderr when any failed (the others are still written; a failed one
    leaves none of its files); ``EXIT_BAD_INPUT`` (2) with a message when the arguments, the
    model or ``--out`` are bad (``--out`` is a file or cannot be written: checked with
    ``fileio.check_writable_dir`` before the model loads).
    """
    parser = argparse.ArgumentParser(
            prog="spoils segment",
            description="segment one or more sagittal slices with one model load; writes "
                        "<stem>_mask.png (class ids of spoils_tf.labels), _overlay.png, "
                        "_input.png and _areas.json per input")
    parser.add_argument("inputs", nargs="*", type=pathlib.Path,
                        help="PNG/JPEG/DICOM/MHA/NIfTI files or folders (a DICOM folder or 3-D "
                             "volume -> its middle sagittal slice)")
    parser.add_argument("--image", action="append", type=pathlib.Path, default=[],
                        help="one more input (repeatable)")
    parser.add_argument("--model", type=pathlib.Path, default=None,
                        help="model bundle, SavedModel version folder or .keras file "
                             "(default: the shipped SPIDER model, spoils_tf/weights)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    parser.add_argument("--resize-mode", default="letterbox", choices=("letterbox", "resize"),
                        help="for letterbox-trained .keras models: how the image is fitted")
    parser.add_argument("--target-spacing-mm", type=float, default=0.0,
                        help="for a bare .keras trained at a fixed pixel size: that size in mm")
    parser.add_argument("--orientation", default="auto", choices=("auto", "as_is"),
                        help="auto: a picture's flip is read by the bundle's orientation "
                             "network (the anatomy when it has none) and corrected, or the "
                             "picture refused when unsure; DICOM/volumes follow their direction "
                             "cosines; as_is: trust the input")
    parser.add_argument("--pixel-spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                        help="override / supply the pixel spacing in mm (all inputs)")
    args = parser.parse_args(argv)
    try:
        files = inputs.expand_inputs(list(args.inputs) + list(args.image))
        if not files:
            parser.error("give at least one input file or folder")
        if args.pixel_spacing is not None:
            images.check_pixel_spacing(args.pixel_spacing, None, "--pixel-spacing")
        fileio.check_writable_dir(args.out, field="--out")
        model = segmenter.Segmenter(args.model, resize_mode=args.resize_mode,
                                    target_spacing_mm=args.target_spacing_mm,
                                    orientation=args.orientation)
    except (FileNotFoundError, ValueError) as e:
        print(f"spoils segment: {e}", file=sys.stderr)
        return errors.EXIT_BAD_INPUT
    failed: list[str] = []
    for path in tqdm(files, desc="segment", unit="slice", disable=len(files) < 2):
        try:
            result = segmenter.segment_file(path, None, args.out,
                                            pixel_spacing_mm=args.pixel_spacing,
                                            segmenter=model)
        except (OSError, ValueError) as e:     # FileNotFoundError is an OSError
            failed.append(f"{path}: {e}")
            print(f"spoils segment: {e}", file=sys.stderr)
            continue
        found = [n for n, a in result["classes"].items()
                 if a["pixels"] and n != labels.SEG_NAMES[labels.BACKGROUND_ID]]
        flags = (result["levels"] or {}).get("flags") or []
        print(f"{path}: {result['shape_hw'][0]}x{result['shape_hw'][1]} ({result['source']}); "
              f"classes found: {', '.join(found) or 'none'}"
              + (f"; given {segmenter.ORIENTATION_WORDS[result['orientation']['undone']]}, "
                 "corrected" if result["orientation"]["undone"] != "as_is" else "")
              + (f"; flags: {'; '.join(flags)}" if flags else ""))
    print(f"{len(files) - len(failed)} of {len(files)} segmented into {args.out}"
          + (f"; {len(failed)} failed (listed above)" if failed else ""))
    return errors.EXIT_PARTIAL if failed else errors.EXIT_OK
