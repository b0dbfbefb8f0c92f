"""``spoils serve``: the local web page for one patient's report (``spoils_tf.serve.web``).

``spoils serve [--models DIR] [--host 127.0.0.1] [--port 8000] [--max-upload-mb 512]
[--max-extracted-mb 2000] [--work-dir DIR] [--slices N] [--precision float32|bfloat16]``

Loads the bundle once, then serves until Ctrl-C. It binds to 127.0.0.1 (this computer only)
unless ``--host`` says otherwise; another address is allowed but warned about, since the page
has no login. Exit status: 0 stopped, 2 a bad option or a bundle that does not load.
"""

from __future__ import annotations

import argparse
import ipaddress
import pathlib
import sys

from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_OK
from spoils_tf.serve import predictor, web


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spoils serve",
                                 description="a local web page: upload a sagittal lumbar MRI, "
                                             "give ODI and NRS, get the report")
    ap.add_argument("--models", default=None,
                    help="model bundle directory (spoils_tf.serve.bundle); default: the shipped "
                         "models (spoils_tf/weights)")
    ap.add_argument("--host", default=web.DEFAULT_HOST,
                    help="address to bind (default %(default)s: this computer only)")
    ap.add_argument("--port", type=int, default=web.DEFAULT_PORT)
    ap.add_argument("--max-upload-mb", type=float, default=web.DEFAULT_MAX_UPLOAD_BYTES / 1e6,
                    help="largest upload accepted, MB (default %(default)g)")
    ap.add_argument("--max-extracted-mb", type=float,
                    default=web.DEFAULT_MAX_EXTRACTED_BYTES / 1e6,
                    help="most a .zip upload may unpack to, MB (default %(default)g)")
    ap.add_argument("--work-dir", default=None,
                    help="folder for the per-request temporary folders (default: the system's "
                         "temp folder); each is removed when its request ends")
    ap.add_argument("--slices", type=int, default=1,
                    help="odd number of sagittal slices around the middle one (volumes)")
    ap.add_argument("--precision", choices=predictor.PRECISIONS, default="float32")
    return ap


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    """``spoils serve``: 0 when stopped, 2 for a bad option or bundle."""
    args = _parser().parse_args(argv)
    problems = [f"--{name} {value}: expected a positive number"
                for name, value in (("max-upload-mb", args.max_upload_mb),
                                    ("max-extracted-mb", args.max_extracted_mb))
                if not value > 0]
    if not 0 < args.port < 65536:
        problems.append(f"--port {args.port}: expected 1..65535")
    if args.slices < 1 or args.slices % 2 == 0:
        problems.append(f"--slices {args.slices}: expected an odd number >= 1")
    if args.work_dir is not None and not pathlib.Path(args.work_dir).is_dir():
        problems.append(f"--work-dir {args.work_dir}: not a folder")
    if problems:
        print("spoils serve: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    if not _is_loopback(args.host):
        print(f"spoils serve: warning: binding to {args.host}: the page has no login, so anyone "
              "who can reach this address can upload scans", file=sys.stderr)
    config = web.ServeConfig(
        models_dir=pathlib.Path(args.models) if args.models else None,
        max_upload_bytes=int(args.max_upload_mb * 1e6),
        max_extracted_bytes=int(args.max_extracted_mb * 1e6),
        work_dir=pathlib.Path(args.work_dir) if args.work_dir else None,
        slices=args.slices, precision=args.precision)
    try:
        web.serve(config, host=args.host, port=args.port)
    except (FileNotFoundError, ValueError) as e:
        print(f"spoils serve: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
