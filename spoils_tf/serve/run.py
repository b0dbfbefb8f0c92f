"""One input file -> one report folder: :func:`run_predict`, the library behind
``spoils predict --input`` (and each row of ``spoils_tf.serve.batch``).

It reads the input (``spoils_tf.serve.inputs.read_input``: PNG/JPEG, a 2-D MHA/NIfTI, or a
DICOM file / series folder / 3-D volume) and the optional mask, runs
:meth:`Predictor.predict_full <spoils_tf.serve.predictor.Predictor.predict_full>` and writes
:data:`REPORT_FILES`: ``report.json``, ``report.html`` (``spoils_tf.serve.report``),
``overlay.png`` (``spoils_tf.serve.overlay``), ``input.png`` and ``mask.png``. Its reading
counts in the ``read`` stage and its rendering and writing in the ``write`` stage.

Timing: it first runs :meth:`Predictor.warmup <spoils_tf.serve.predictor.Predictor.warmup>`
on the input's size, so ``timing_ms`` holds no one-off graph tracing; the warm-up's own time
is ``report["warmup_ms"]``.

Status: a ``no_disc`` report is written too (exit code 3 in the CLI). Bad input (not
sagittal, no PixelSpacing, a picture without ``--pixel-spacing``, bad ODI/NRS, a bad bundle)
is a ``ValueError`` naming the file and field, exit code 2, and nothing is written: every
output is built in memory first and written, only after all stages succeeded, into a hidden
folder next to ``--out`` that is renamed into place when complete
(``spoils_tf.fileio.atomic_output_dir``). ``--out`` is checked first, before the models load:
a file, a non-empty folder that is not a previous report (:func:`is_report_dir`) or a folder
that cannot be written is refused (exit code 2).

Privacy: nothing written names the input path; stdout carries output paths and stage
timings only.
"""

from __future__ import annotations

import io
import json
import pathlib
from typing import Optional

import numpy as np
import PIL.Image

from spoils_tf import fileio, weights
from spoils_tf.serve import report as html_report
from spoils_tf.serve.inputs import read_input, read_mask
from spoils_tf.serve.overlay import overlay_image
from spoils_tf.serve.predictor import Predictor, check_scores, timer

REPORT_FILES: dict[str, str] = {"json": "report.json", "html": "report.html",
                                "overlay": "overlay.png", "input": "input.png",
                                "mask": "mask.png"}


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def run_predict(input_path, models_dir, out_dir, *, odi=None, nrs=None, mask_path=None,
                pixel_spacing=None, slices: int = 1, precision: str = "float32",
                predictor: Optional[Predictor] = None, warmup: bool = True) -> dict:
    """Reads the input, runs :class:`Predictor`, writes the report files; returns the report.

    Writes ``out_dir/report.json``, ``report.html`` (``spoils_tf.serve.report.render_html``),
    ``overlay.png``, ``input.png`` (the mid-sagittal slice as used) and ``mask.png`` (uint8
    class ids), all or none: only after every stage succeeded, into a hidden sibling folder
    that is renamed to ``out_dir`` once every file is in it (``fileio.atomic_output_dir``). An
    ``out_dir`` holding a previous report (:func:`is_report_dir`) is replaced whole; an empty
    one is filled. ``out_dir`` is checked before anything is read or loaded. A ``no_disc``
    report is written too (the caller checks ``report["status"]``).

    Args:
        predictor: an already loaded :class:`Predictor` (benchmarks); else one is loaded from
            ``models_dir`` with ``precision``.
        warmup: run :meth:`Predictor.warmup` on the input's size before the timed stages, so
            ``timing_ms`` excludes one-off graph tracing; its time is ``report["warmup_ms"]``
            (None when nothing was left to warm up or ``warmup`` is False) and
            ``report["timing_ms_note"]`` says whether tracing is included.

    Raises:
        SpoilsError: ``out_dir`` is a file, a non-empty folder that is not a previous report,
            or not writable (before any work), or writing failed (nothing left behind).
        FileNotFoundError, ValueError (incl. ``bundle.BundleError``): naming the file and field;
            nothing is written then.
    """
    reading: dict[str, float] = {}   # this function's share of the "read" stage
    with timer(reading, "read"):
        fileio.check_output_dir(out_dir, replace_if=is_report_dir)   # fail fast, before any work
        check_scores(odi, nrs)
        if mask_path is not None and int(slices) != 1:
            raise ValueError(f"--mask with --slices {slices}: a mask is one label map for the "
                             "mid-sagittal slice; use --slices 1")
        images, spacing, offsets, ss, desc = read_input(input_path, pixel_spacing=pixel_spacing,
                                                        slices=slices)
        masks = None
        if mask_path is not None:
            mask, mask_sha = read_mask(mask_path, images[0].shape)
            masks = [mask]
            desc["mask_sha256"] = mask_sha
    if predictor is None and models_dir is None:
        models_dir = weights.DEFAULT_BUNDLE
    pred = predictor or Predictor(models_dir, precision=precision)
    warmup_ms = pred.warmup(images[0].shape, segment=masks is None) if warmup else None
    result = pred.predict_full(images, spacing, odi=odi, nrs=nrs, masks=masks, source=desc,
                               slice_offsets=offsets, slice_spacing_mm=ss,
                               orientation_from_header=desc["kind"] not in ("picture", "image_2d"))
    report = result.report
    report["warmup_ms"] = warmup_ms
    timing = report["timing_ms"]
    timing["read"] = round(timing["read"] + reading["read"], 3)
    with timer(timing, "write"):
        overlay_png = _png(overlay_image(result.slices[0], result.masks[0], report))
        files = {"overlay": overlay_png, "input": _png(result.slices[0]),
                 "mask": _png(result.masks[0].astype(np.uint8))}
        report["files"] = dict(REPORT_FILES)
        html_text = html_report.render_html(report, overlay_png)
        # serialisable before anything is written
        json.dumps(report, indent=2, allow_nan=False, default=fileio.json_default)
    with fileio.atomic_output_dir(out_dir, replace_if=is_report_dir) as out:
        with timer(timing, "write"):
            for key, data in files.items():
                fileio.atomic_write_bytes(out / REPORT_FILES[key], data)
            fileio.atomic_write_text(out / REPORT_FILES["html"], html_text)
        # the JSON on disk carries the write time up to its own serialisation
        json_text = json.dumps(report, indent=2, allow_nan=False,
                               default=fileio.json_default) + "\n"
        fileio.atomic_write_text(out / REPORT_FILES["json"], json_text)
    return report


def is_report_dir(path: pathlib.Path) -> bool:
    """True when the folder ``path`` holds a previous report: ``report.json`` and no file
    whose name is not one of :data:`REPORT_FILES` (so that replacing it loses nothing else)."""
    names = {p.name for p in pathlib.Path(path).iterdir()}
    return REPORT_FILES["json"] in names and names <= set(REPORT_FILES.values())
