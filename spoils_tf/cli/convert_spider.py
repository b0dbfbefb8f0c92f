"""``spoils convert-spider``: SPIDER PNG masks -> 14-class LabelMe files and tables
(``spoils_tf.data.spider.convert_spider``).

Exit status: 0 converted (summary printed), 2 refused (a missing or malformed SPIDER file,
named).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from spoils_tf.data import layout, spider
from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    """``spoils convert-spider --src SPIDER_DIR --out DIR [--patients ...] [--no-progress]``."""
    parser = argparse.ArgumentParser(
        prog="spoils convert-spider",
        description="Convert SPIDER 4-value masks (disc/vertebra/canal) into 14-class LabelMe "
                    "files + patients.csv, discs.csv, issues.csv, conversion_summary.json.")
    parser.add_argument("--src", required=True, help="SPIDER directory (images/, masks/, "
                        "overview.csv, radiological_gradings.csv)")
    parser.add_argument("--out", required=True,
                        help="output dataset directory (re-runs overwrite)")
    parser.add_argument("--patients", nargs="*", default=None, help="only these patient ids")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = spider.convert_spider(args.src, args.out, args.patients,
                                        progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"spoils convert-spider: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(spider.format_summary(summary))
    print(f"wrote {args.out}/{{{layout.LABELME_DIR}/, {layout.PATIENTS_CSV}, {layout.DISCS_CSV}, "
          f"{layout.ISSUES_CSV}, {spider.SUMMARY_JSON}}}")
    return EXIT_OK
