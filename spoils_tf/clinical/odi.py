"""The Oswestry Disability Index (ODI, version 2.1a) from its ten questionnaire sections.

Each of the ten sections (:data:`SECTIONS`) is answered with one of six statements scored
0 (no disability) to 5 (:data:`MAX_SECTION_SCORE`). The standard scoring rule (Fairbank &
Pynsent, Spine 2000;25:2940-2953) is

    ODI (%) = sum of the answered sections' scores / (5 x number of answered sections) x 100

so an unanswered section (often "sex life") leaves the denominator instead of counting as 0.
With too few sections the index means little: :func:`odi_from_sections` refuses fewer than
:data:`MIN_ANSWERED_SECTIONS` answered (at most two left out).

The result is what ``spoils_tf.clinical.rules.validate_odi`` takes (a float in 0..100).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

SECTIONS: tuple[str, ...] = ("Pain intensity", "Personal care", "Lifting", "Walking",
                             "Sitting", "Standing", "Sleeping", "Sex life", "Social life",
                             "Travelling")
N_SECTIONS = len(SECTIONS)
MAX_SECTION_SCORE = 5
MIN_ANSWERED_SECTIONS = 8


@dataclasses.dataclass(frozen=True)
class OdiScore:
    """An ODI worked out from its sections.

    Attributes:
        percent: the index, 0..100 (%), not rounded.
        total: sum of the answered sections' scores (0..5 x answered).
        answered: how many sections were answered (``MIN_ANSWERED_SECTIONS``..10).
        unanswered: the names (:data:`SECTIONS`) of the sections left out.
    """
    percent: float
    total: int
    answered: int
    unanswered: tuple[str, ...]

    def explanation(self) -> str:
        """One sentence: the value, the formula with its numbers and what was left out."""
        text = (f"ODI {self.percent:.1f} % computed from {self.answered} of {N_SECTIONS} "
                f"questionnaire sections: {self.total} / ({MAX_SECTION_SCORE} x "
                f"{self.answered}) x 100")
        if self.unanswered:
            text += f"; unanswered (left out of the denominator): {', '.join(self.unanswered)}"
        return text


def _section_score(value: Any, name: str) -> Optional[int]:
    """One section's score: None for unanswered (None or blank), else an int 0..5."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"ODI section '{name}': {value!r}; expected a whole number "
                         f"0..{MAX_SECTION_SCORE} or blank (unanswered)")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"ODI section '{name}': {value!r} is not a number; expected a whole "
                         f"number 0..{MAX_SECTION_SCORE} or blank (unanswered)") from None
    if not math.isfinite(x) or x != int(x) or not 0 <= x <= MAX_SECTION_SCORE:
        raise ValueError(f"ODI section '{name}': {value!r}; expected a whole number "
                         f"0..{MAX_SECTION_SCORE} or blank (unanswered)")
    return int(x)


def odi_from_sections(scores: Sequence[Any],
                      min_answered: int = MIN_ANSWERED_SECTIONS) -> OdiScore:
    """The ODI from the ten section scores, unanswered sections left out of the denominator.

    Args:
        scores: 10 values in :data:`SECTIONS` order; each an int 0..5 (or a numeric string
            such as ``"3"``), or None / ``""`` for an unanswered section.
        min_answered: the fewest answered sections accepted.

    Returns:
        :class:`OdiScore`; e.g. scores ``[2, 3, 1, 0, 4, 2, 1, None, 3, 2]`` give
        18 / (5 x 9) x 100 = 40.0 %.

    Raises:
        ValueError: not 10 scores; a score that is not a whole number 0..5 (naming its
            section); fewer than ``min_answered`` sections answered (saying how many were).
    """
    scores = list(scores)
    if len(scores) != N_SECTIONS:
        raise ValueError(f"ODI sections: {len(scores)} given; expected {N_SECTIONS} "
                         f"({', '.join(SECTIONS)})")
    parsed = [_section_score(v, name) for v, name in zip(scores, SECTIONS)]
    answered = [s for s in parsed if s is not None]
    if len(answered) < min_answered:
        raise ValueError(f"ODI sections: {len(answered)} of {N_SECTIONS} answered; at least "
                         f"{min_answered} are needed to compute the ODI (or give the ODI "
                         "percentage directly)")
    total = sum(answered)
    percent = total / (MAX_SECTION_SCORE * len(answered)) * 100.0
    unanswered = tuple(name for s, name in zip(parsed, SECTIONS) if s is None)
    return OdiScore(percent=percent, total=total, answered=len(answered), unanswered=unanswered)
