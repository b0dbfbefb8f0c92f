"""``spoils pacs``: a study on a DICOMweb PACS -> report folder here, SEG + SR stored back.

``spoils pacs --url http://HOST:PORT/dicom-web --study STUDY_UID [--series SERIES_UID]
--out DIR [--odi N --nrs N] [--models DIR] [--precision float32|bfloat16]``

Runs ``spoils_tf.serve.pacs.run_pacs``: finds the sagittal T2 series (QIDO-RS; ``--series``
when the study holds several), fetches it (WADO-RS), writes ``DIR/report/`` (as ``spoils
predict``), ``DIR/seg.dcm``, ``DIR/sr.dcm`` and ``DIR/pacs.json``, and stores the SEG and SR
into the study (STOW-RS). Exit status: 0 stored, 2 refused (bad ``--out``, unknown study,
no or several candidate series (listed), bad input, the PACS unreachable or refusing the
store; nothing written), 3 no disc found (the report is written, nothing is stored).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_NO_DISC, EXIT_OK


def _parser() -> argparse.ArgumentParser:
    from spoils_tf.serve import predictor
    ap = argparse.ArgumentParser(prog="spoils pacs",
                                 description="report on a study's sagittal T2 series from a "
                                             "DICOMweb PACS and store the SEG and SR back")
    ap.add_argument("--url", required=True,
                    help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    ap.add_argument("--study", required=True, help="StudyInstanceUID")
    ap.add_argument("--series", default=None,
                    help="SeriesInstanceUID of the sagittal T2 series (needed when the study "
                         "holds several candidates)")
    ap.add_argument("--out", required=True,
                    help="output folder: report/, seg.dcm, sr.dcm, pacs.json")
    ap.add_argument("--odi", default=None, help="Oswestry Disability Index, 0-100 (%%)")
    ap.add_argument("--nrs", default=None, help="pain Numerical Rating Scale, 0-10")
    ap.add_argument("--models", default=None,
                    help="model bundle directory; default: the shipped models")
    ap.add_argument("--precision", choices=predictor.PRECISIONS, default="float32")
    return ap


def main(argv: list[str]) -> int:
    """``spoils pacs``: 0 stored, 2 refused (nothing written), 3 no disc (report only)."""
    from spoils_tf.serve import pacs
    args = _parser().parse_args(argv)
    try:
        summary = pacs.run_pacs(args.url, args.study, args.out, series_uid=args.series,
                                odi=args.odi, nrs=args.nrs, models_dir=args.models,
                                precision=args.precision)
    except (FileNotFoundError, ValueError) as e:
        print(f"spoils pacs: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = pathlib.Path(args.out)
    s = summary["series"]
    print(f"series: #{s['number']} '{s['description']}' ({s['plane']}, {s['weighting']})")
    print(f"report: {out / summary['report_dir'] / 'report.html'}")
    if not summary["stored"]:
        print("status: no_disc (no disc found; nothing stored)")
        return EXIT_NO_DISC
    for key in ("seg", "sr"):
        print(f"stored {key.upper()}: {summary['stored'][key]} (copy: "
              f"{out / pacs.PACS_FILES[key]})")
    return EXIT_OK
