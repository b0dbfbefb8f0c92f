"""The single source of truth for every class name, id, colour and grade class.

Nothing else in spoils-tf hard-codes a class name, a class count or an index:
import from here.

Segmentation (14 classes, consecutive ids, 0 = background, as nnU-Net expects)::

        0 background | 1-5 L1..L5 | 6 S1 | 7-12 discs T12-L1..L5-S1 | 13 spinal canal

Grading (11 classes) combines the Pfirrmann grade (1-5, Pfirrmann et al., Spine 2001)
with a spondylosis severity (L = low/mild, M = moderate, H = high/severe) as in the SPOILS
paper: ``1L 2L 3L 3M 3H 4L 4M 4H 5L 5M 5H``. Grades 1 and 2 exist only as ``L``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class SegClass:
    """One segmentation class.

    Attributes:
        id: integer value in masks (``int32 [H, W]``).
        name: canonical display name, also the key suffix of metrics (``dice/L4-L5``).
        labelme: the label string written to / expected in LabelMe ``shapes[*].label``.
        color: RGB display colour, uint8 triple.
        kind: ``"background" | "vertebra" | "disc" | "canal"``.
    """

    id: int
    name: str
    labelme: str
    color: tuple[int, int, int]
    kind: str


# === Segmentation classes ===
SEG_CLASSES: tuple[SegClass, ...] = (
        SegClass(0, "background", "_background_", (0, 0, 0), "background"),
        SegClass(1, "L1", "L1", (230, 25, 75), "vertebra"),
        SegClass(2, "L2", "L2", (60, 180, 75), "vertebra"),
        SegClass(3, "L3", "L3", (255, 225, 25), "vertebra"),
        SegClass(4, "L4", "L4", (0, 130, 200), "vertebra"),
        SegClass(5, "L5", "L5", (245, 130, 48), "vertebra"),
        SegClass(6, "S1", "S1", (128, 128, 0), "vertebra"),
        SegClass(7, "T12-L1", "T12-L1", (70, 240, 240), "disc"),
        SegClass(8, "L1-L2", "L1-L2", (240, 50, 230), "disc"),
        SegClass(9, "L2-L3", "L2-L3", (210, 245, 60), "disc"),
        SegClass(10, "L3-L4", "L3-L4", (170, 110, 40), "disc"),
        SegClass(11, "L4-L5", "L4-L5", (0, 128, 128), "disc"),
        SegClass(12, "L5-S1", "L5-S1", (220, 190, 255), "disc"),
        SegClass(13, "canal", "canal", (255, 250, 200), "canal"),
)

NUM_SEG_CLASSES: int = len(SEG_CLASSES)
SEG_NAMES: tuple[str, ...] = tuple(c.name for c in SEG_CLASSES)
BACKGROUND_ID: int = 0
CANAL_ID: int = next(c.id for c in SEG_CLASSES if c.kind == "canal")
VERTEBRA_NAMES: tuple[str, ...] = tuple(c.name for c in SEG_CLASSES if c.kind == "vertebra")
DISC_NAMES: tuple[str, ...] = tuple(c.name for c in SEG_CLASSES if c.kind == "disc")
VERTEBRA_IDS: tuple[int, ...] = tuple(c.id for c in SEG_CLASSES if c.kind == "vertebra")
DISC_IDS: tuple[int, ...] = tuple(c.id for c in SEG_CLASSES if c.kind == "disc")
FOREGROUND_IDS: tuple[int, ...] = tuple(c.id for c in SEG_CLASSES if c.id != BACKGROUND_ID)

SEG_ID: dict[str, int] = {c.name: c.id for c in SEG_CLASSES}
# Accepted LabelMe label strings (case-insensitive) -> class id. The canonical strings come
# first; the aliases are spellings seen in hand annotations.
_LABELME_ALIASES: dict[str, str] = {
        "background": "background",
        "spinal canal": "canal",
        "spinal_canal": "canal",
        "sc": "canal",
        "sacrum": "S1",
}
LABELME_TO_ID: dict[str, int] = {c.labelme.lower(): c.id for c in SEG_CLASSES}
LABELME_TO_ID.update({a: SEG_ID[n] for a, n in _LABELME_ALIASES.items()})
LABELME_TO_ID.update({c.name.lower(): c.id for c in SEG_CLASSES})

# uint8 [NUM_SEG_CLASSES, 3] palette row i = colour of class id i (plain tuple; numpy users
# call ``np.asarray(SEG_PALETTE, np.uint8)``).
SEG_PALETTE: tuple[tuple[int, int, int], ...] = tuple(c.color for c in SEG_CLASSES)

# Discs ordered top -> bottom; DISC_NAMES[-1] is L5-S1, the lowest.
# A disc's neighbours: the vertebral body above and below it (None where the structure is
# outside the 14-class scheme, i.e. T12 above T12-L1).
_VERTEBRA_ORDER: tuple[Optional[str], ...] = ("T12",) + VERTEBRA_NAMES


def disc_neighbours(disc: str) -> tuple[Optional[str], Optional[str]]:
    """Returns ``(vertebra_above, vertebra_below)`` class names for a disc name.

    ``T12`` is not a class, so ``disc_neighbours("T12-L1") == (None, "L1")``.

    Raises:
        KeyError: if ``disc`` is not one of ``DISC_NAMES``.
    """
    if disc not in DISC_NAMES:
        raise KeyError(f"unknown disc level {disc!r}; expected one of {DISC_NAMES}")
    i = DISC_NAMES.index(disc)
    above = _VERTEBRA_ORDER[i]
    below = _VERTEBRA_ORDER[i + 1]
    return (above if above in SEG_ID else None, below)


def disc_from_bottom(n: int) -> str:
    """Disc name of the n-th disc counted from the bottom (1 = L5-S1, 6 = T12-L1).

    This is SPIDER's ``IVD label`` convention.

    Raises:
        ValueError: if ``n`` is outside 1..6.
    """
    if not 1 <= n <= len(DISC_NAMES):
        raise ValueError(f"disc number from the bottom must be 1..{len(DISC_NAMES)}, got {n}")
    return DISC_NAMES[-n]


# === Grade classes ===
PFIRRMANN_GRADES: tuple[int, ...] = (1, 2, 3, 4, 5)
SEVERITIES: tuple[str, ...] = ("L", "M", "H")
SEVERITY_NAMES: dict[str, str] = {"L": "low", "M": "moderate", "H": "high"}
GRADE_CLASSES: tuple[str, ...] = ("1L", "2L", "3L", "3M", "3H", "4L", "4M", "4H", "5L", "5M", "5H")
NUM_GRADE_CLASSES: int = len(GRADE_CLASSES)
GRADE_CLASS_ID: dict[str, int] = {c: i for i, c in enumerate(GRADE_CLASSES)}
# Two coarser targets reported next to the 11-class one.
PFIRRMANN_CLASSES: tuple[str, ...] = tuple(f"PG{g}" for g in PFIRRMANN_GRADES)
BINARY_CLASSES: tuple[str, ...] = ("PG1-3", "PG4-5")


def grade_class(pfirrmann: int, severity: str) -> str:
    """Maps (Pfirrmann grade 1-5, severity "L"|"M"|"H") to its 11-class name.

    Grades 1 and 2 are always ``L`` whatever the severity (the paper has no 1M/2H classes).

    Raises:
        ValueError: grade outside 1..5 or severity not in ``SEVERITIES``.
    """
    g = int(pfirrmann)
    if g not in PFIRRMANN_GRADES or g != pfirrmann:
        raise ValueError(f"Pfirrmann grade must be an integer 1..5, got {pfirrmann!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return f"{g}L" if g <= 2 else f"{g}{severity}"


def grade_class_id(pfirrmann: int, severity: str) -> int:
    """Index into ``GRADE_CLASSES`` of ``grade_class(pfirrmann, severity)``."""
    return GRADE_CLASS_ID[grade_class(pfirrmann, severity)]


def pfirrmann_of(grade_cls: str) -> int:
    """Pfirrmann grade (1-5) of an 11-class name such as ``"4M"``."""
    if grade_cls not in GRADE_CLASS_ID:
        raise ValueError(f"unknown grade class {grade_cls!r}; expected one of {GRADE_CLASSES}")
    return int(grade_cls[0])


def severity_of(grade_cls: str) -> str:
    """Severity letter of an 11-class name such as ``"4M"`` -> ``"M"``."""
    if grade_cls not in GRADE_CLASS_ID:
        raise ValueError(f"unknown grade class {grade_cls!r}; expected one of {GRADE_CLASSES}")
    return grade_cls[1]


def binary_of(pfirrmann: int) -> int:
    """0 for Pfirrmann 1-3 (``PG1-3``), 1 for 4-5 (``PG4-5``)."""
    return 0 if int(pfirrmann) <= 3 else 1
