"""``spoils decide``: decision support from per-disc grade classes + ODI + NRS.

    spoils decide --class L4-L5=4M --class L5-S1=3L --odi 45 --nrs 7 [--json] [--config t.json]
        [--probability L4-L5=0.8 --probability L5-S1=0.7]
    spoils decide --rules [--config t.json]      # print the rule table and its threshold

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
    p.add_argument("--probability", dest="probabilities", action="append", default=[],
                   metavar="LEVEL=P",
                   help="the grader's probability (0-1) for that disc's class, repeatable, one "
                        "per --class or none; an intervention driven only by discs below the "
                        "threshold (see --rules) is withheld")
    p.add_argument("--odi", help="Oswestry Disability Index, %% 0-100 (required unless --rules)")
    p.add_argument("--nrs", help="pain Numerical Rating Scale, integer 0-10 (required unless "
                                 "--rules)")
    p.add_argument("--rules", action="store_true",
                   help="print the rule table (tiers, rules, abstention threshold) and exit")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--config", default=None,
                   help="JSON file overriding keys of the decision table (see clinical/strata.py)")
    return p


def _parse_class(arg: str) -> tuple[str, str]:
    level, sep, cls = arg.partition("=")
    if not sep:
        raise ValueError(f"--class: expected LEVEL=CLASS such as L4-L5=4M, got {arg!r}")
    return level.strip(), cls.strip()


def _parse_probability(arg: str) -> tuple[str, float]:
    level, sep, p = arg.partition("=")
    try:
        if not sep:
            raise ValueError
        return level.strip(), float(p)
    except ValueError:
        raise ValueError(f"--probability: expected LEVEL=P such as L4-L5=0.8, got {arg!r}") \
            from None


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv``, prints the decision (text or ``--json``) and returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = rules.DecisionConfig.from_json(args.config) if args.config else None
        if args.rules:
            print("\n".join(rules.rule_table_lines(config)))
            return EXIT_OK
        if args.odi is None or args.nrs is None:
            raise ValueError("--odi and --nrs are required (or --rules)")
        if not args.classes:
            raise ValueError("--class: give at least one LEVEL=CLASS, e.g. --class L4-L5=4M")
        probabilities = (dict(_parse_probability(a) for a in args.probabilities)
                         if args.probabilities else None)
        decision = rules.decide([_parse_class(a) for a in args.classes], args.odi, args.nrs,
                                config, probabilities=probabilities)
    except (ValueError, OSError) as e:
        print(f"spoils decide: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
    else:
        print(decision.summary())
    return EXIT_OK
