"""Plausible ranges of the per-disc measurements of an adult lumbar spine, and the check.

A measurement outside its range on a mid-sagittal lumbar slice is not a finding about the
patient: it comes from a segmentation error (a sliver or a merged label), a structure cut by
the image, a wrong pixel spacing, or a slice that is not a lumbar sagittal one. Such a disc is
reported with the measurement, its value and the range, and not graded
(``spoils_tf.serve.predictor``).

The ranges (:data:`PLAUSIBLE_RANGES`) are deliberately wide: each bound lies beyond what a
degenerated, stenotic or fractured adult lumbar spine still shows, so a real disease value is
not rejected, only an impossible one.

* ``disc_height_mm`` 1-25 mm: healthy adult lumbar discs are about 7-14 mm high on MRI and
  collapse to a few mm at Pfirrmann grade 5; no lumbar disc is 25 mm high, and below 1 mm no
  disc height can be measured on a 0.3-1 mm pixel grid.
* ``disc_width_mm``, ``disc_midpoint_width_mm`` 15-70 mm (anteroposterior): adult lumbar
  endplates and discs are about 30-50 mm deep; a disc under half that on the mid-sagittal
  slice is a partial label or a parasagittal cut.
* ``vert_above_height_mm``, ``vert_below_height_mm`` 5-45 mm: adult lumbar vertebral bodies
  are about 23-30 mm high; a severe compression fracture keeps more than 5 mm of mean height.
* ``vert_above_width_mm``, ``vert_below_width_mm`` 15-70 mm: the bodies are about 28-50 mm
  deep.
* ``disc_height_index`` 0.03-1.0 (disc height / adjacent vertebral body height,
  ``spoils_tf.geometry.measure``): healthy lumbar values are about 0.25-0.5; a disc as high as
  its vertebral bodies does not occur, and 0.03 is 1 mm over 33 mm.
* ``canal_ap_diameter_mm`` 2-30 mm (the canal label behind the disc): the normal lumbar canal
  is about 15-25 mm deep, severe central stenosis narrows the dural sac to a few mm; a canal
  under 2 mm or over 30 mm deep is a label error.

Measurements that may legitimately be negative or depend on the slice's placement
(``tilt_deg``, ``disc_bulge_mm``, centroids), the local heights at one point of the disc
(anterior, central, posterior: a wedge or a Schmorl's node moves them), areas and volumes
(follow from height and width) and signal intensities (scanner units) are not checked.

A NaN (not measured) is not implausible: it already carries its own reason code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

# Reason code added to a disc that is not graded because a measurement is implausible.
IMPLAUSIBLE_MEASUREMENT_REASON = "disc_implausible_measurement_not_graded"


@dataclasses.dataclass(frozen=True)
class PlausibleRange:
    """Closed range ``[low, high]`` of a measurement, in ``unit``."""
    low: float
    high: float
    unit: str


PLAUSIBLE_RANGES: dict[str, PlausibleRange] = {
    "disc_height_mm": PlausibleRange(1.0, 25.0, "mm"),
    "disc_width_mm": PlausibleRange(15.0, 70.0, "mm"),
    "disc_midpoint_width_mm": PlausibleRange(15.0, 70.0, "mm"),
    "vert_above_height_mm": PlausibleRange(5.0, 45.0, "mm"),
    "vert_below_height_mm": PlausibleRange(5.0, 45.0, "mm"),
    "vert_above_width_mm": PlausibleRange(15.0, 70.0, "mm"),
    "vert_below_width_mm": PlausibleRange(15.0, 70.0, "mm"),
    "disc_height_index": PlausibleRange(0.03, 1.0, "ratio"),
    "canal_ap_diameter_mm": PlausibleRange(2.0, 30.0, "mm"),
}


@dataclasses.dataclass(frozen=True)
class Implausible:
    """One measurement outside its plausible range."""
    measurement: str
    value: float
    range: PlausibleRange

    def to_dict(self) -> dict[str, Any]:
        """``{"measurement", "value", "unit", "plausible_range": [low, high]}`` (JSON-ready)."""
        return {"measurement": self.measurement, "value": float(self.value),
                "unit": self.range.unit,
                "plausible_range": [float(self.range.low), float(self.range.high)]}


def describe(item: Mapping[str, Any]) -> str:
    """One :meth:`Implausible.to_dict` as text: ``"disc_height_mm 0.4 mm (plausible 1-25
    mm)"``, with ``" on the slice at offset +1"`` when it carries a non-zero ``slice_offset``
    (0 is the mid-sagittal slice)."""
    unit = "" if item["unit"] == "ratio" else f" {item['unit']}"
    low, high = item["plausible_range"]
    text = (f"{item['measurement']} {float(item['value']):.3g}{unit} "
            f"(plausible {low:g}-{high:g}{unit})")
    if item.get("slice_offset"):
        text += f" on the slice at offset {int(item['slice_offset']):+d}"
    return text


def implausible_measurements(values: Mapping[str, Any],
                             ranges: Mapping[str, PlausibleRange] = PLAUSIBLE_RANGES
                             ) -> list[Implausible]:
    """The finite measurements of one disc outside their range, in the order of ``ranges``.

    Args:
        values: one disc's measurements by column name (``measure.MEASUREMENT_COLUMNS``; a
            missing key, None or NaN is skipped).
        ranges: column -> :class:`PlausibleRange`.

    Returns:
        one :class:`Implausible` per measurement strictly below ``low`` or above ``high``.
    """
    out = []
    for name, rng in ranges.items():
        v = values.get(name)
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v) and not rng.low <= v <= rng.high:
            out.append(Implausible(name, v, rng))
    return out
