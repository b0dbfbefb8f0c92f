"""``spoils decide``: decision support from per-disc grade classes + ODI + NRS.

    spoils decide --class L4-L5=4M --class L5-S1=3L --odi 45 --nrs 7 [--json] [--config t.json]

Exit status: 0 on success, 2 on bad arguments or a bad ``--config`` (the message names the
file, the key and the value).
"""

from __future__ import annotations

import argparse
import json
import sys

from spoils_tf import labels
from spoils_tf.clinical import rules
from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spoils decide",
        description="Treatment-pathway decision support (SPOILS strata). The worst disc drives "
                    "the decision. Decision support only; the treating clinician decides.")
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="LEVEL=CLASS",
                   help=f"a disc and its grade class, repeatable; LEVEL in {labels.DISC_NAMES}, "
                        f"CLASS in {labels.GRADE_CLASSES}")
    p.add_argument("--odi", required=True, help="Oswestry Disability Index, %% 0-100")
    p.add_argument("--nrs", required=True, help="pain Numerical Rating Scale, integer 0-10")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--config", default=None,
                   help="JSON file overriding keys of the decision table (see clinical/strata.py)")
    return p


def _parse_class(arg: str) -> tuple[str, str]:
    level, sep, cls = arg.partition("=")
    if not sep:
        raise ValueError(f"--class: expected LEVEL=CLASS such as L4-L5=4M, got {arg!r}")
    return level.strip(), cls.strip()


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv``, prints the decision (text or ``--json``) and returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if not args.classes:
            raise ValueError("--class: give at least one LEVEL=CLASS, e.g. --class L4-L5=4M")
        config = rules.DecisionConfig.from_json(args.config) if args.config else None
        decision = rules.decide([_parse_class(a) for a in args.classes], args.odi, args.nrs,
                                config)
    except (ValueError, OSError) as e:
        print(f"spoils decide: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
    else:
        print(decision.summary())
    return EXIT_OK
