"""Which MR contrast a series has (T2, T1, PD, STIR, FLAIR or unknown), and on what evidence.

The grading models were trained on sagittal T2-weighted slices, and Pfirrmann grades are
defined on T2 (nucleus signal against cerebrospinal fluid). A T1-weighted or fat-suppressed
series must not be graded as if it were T2: :func:`is_gradable` says which weightings are
graded (``"T2"``, and ``"unknown"``, which is assumed T2 and noted).

Rules, in order:

1. **Timings** (:func:`from_timings`; DICOM ``EchoTime`` (0018,0081), ``RepetitionTime``
   (0018,0080), ``InversionTime`` (0018,0082), ms). Spin-echo contrast is set by TE and TR
   (Westbrook & Talbot, *MRI in Practice*, 5th ed. 2019, ch. 2 and 3; Radiopaedia
   "T1 weighted image", "T2 weighted image", "proton density weighted image"):

   * an inversion pulse (``InversionTime`` > 0): TI <= ``STIR_MAX_TI_MS`` is STIR (fat
     nulled; TI about 100-180 ms at 1.5-3 T), TI >= ``FLAIR_MIN_TI_MS`` with TE >=
     ``T2_MIN_TE_MS`` is (T2) FLAIR (fluid nulled), otherwise with TE <= ``T1_MAX_TE_MS``
     T1 (T1 inversion recovery / T1 FLAIR);
   * TE >= ``T2_MIN_TE_MS`` (60 ms) is T2, whatever TR: 3-D turbo spin echo (SPACE, CUBE,
     VISTA) reaches T2 contrast with TR of 1000-1500 ms through its long echo train;
   * TE <= ``T1_MAX_TE_MS`` (30 ms) and TR <= ``T1_MAX_TR_MS`` (1000 ms) is T1;
   * TE <= ``T1_MAX_TE_MS`` and TR >= ``PD_MIN_TR_MS`` (1500 ms) is proton density;
   * anything else (an intermediate TE, TR between the bounds, a missing value) is unknown.

2. **Description** (:func:`from_description`; ``SeriesDescription`` (0008,103E), else
   ``ProtocolName`` (0018,1030)): the words ``T1``, ``T2``, ``PD``, ``STIR`` / ``TIRM``,
   ``FLAIR`` as tokens, alone or after one word-initial letter (``T1W``, ``sag_T1_tse``,
   ``T2_space``, ``sT2W_TSE`` count; ``T12`` and ``PATIENT1`` do not). STIR
   or TIRM is STIR; FLAIR with T1 is T1, FLAIR otherwise FLAIR; T1 alone T1; T2 alone T2; PD
   alone PD; anything else unknown.

   When the timings decide, they win (they are what the scanner did; a description is typed
   by a person) and a disagreeing description is recorded in the evidence. The description
   is never copied: DICOM PS3.15 (Basic Application Level Confidentiality Profile) removes
   ``SeriesDescription`` because free text can hold identifiers, so the evidence names only
   the token that matched.

3. **Image** (:func:`from_disc_csf_ratio`), only when the header decides nothing (pictures,
   volumes, DICOM without these fields): the median ``disc_si_csf_ratio`` of the discs on the
   mid-sagittal slice (``spoils_tf.geometry.measure``: disc grey level over the grey level of
   the canal behind it). Cerebrospinal fluid is the brightest tissue of a T2 image and one of
   the darkest of a T1 image (long T1, long T2), while a disc is intermediate on T1; so a disc
   brighter than the CSF (ratio above ``IMAGE_T1_MIN_DISC_CSF_RATIO``) reads as T1. This needs
   a segmentation, which the T2-trained model may get wrong on a T1 image; how well the rule
   was checked is in BUILD.md / the input notes.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

WEIGHTINGS: tuple[str, ...] = ("T2", "T1", "PD", "STIR", "FLAIR", "unknown")
GRADABLE: tuple[str, ...] = ("T2", "unknown")
T2_MIN_TE_MS: float = 60.0
T1_MAX_TE_MS: float = 30.0
T1_MAX_TR_MS: float = 1000.0
PD_MIN_TR_MS: float = 1500.0
STIR_MAX_TI_MS: float = 300.0
FLAIR_MIN_TI_MS: float = 1500.0
IMAGE_T1_MIN_DISC_CSF_RATIO: float = 1.0

# A token stands alone or after one letter that starts a word (Philips "sT2W_TSE"), and is not
# followed by a digit ("T12" is a vertebra).
_TOKENS: dict[str, re.Pattern] = {
    name: re.compile(rf"(?<![A-Z0-9])[A-Z]?{pattern}(?![0-9])")
    for name, pattern in (("T1", "T1"), ("T2", "T2"), ("PD", "PD"), ("STIR", "(?:STIR|TIRM)"),
                          ("FLAIR", "FLAIR"))}


def is_gradable(weighting: str) -> bool:
    """True for the weightings the graders accept: ``"T2"`` and ``"unknown"`` (assumed T2)."""
    return weighting in GRADABLE


def not_graded_note(weighting: str, evidence: list[str] | tuple[str, ...]) -> str:
    """The sentence a report carries when ``weighting`` is not graded, e.g. ``"T1-weighted:
    grades not computed (EchoTime 12 ms ...)"``."""
    return (f"{weighting}-weighted: grades not computed ({'; '.join(evidence)}); the graders and "
            "the Pfirrmann scale need a sagittal T2-weighted series, so no recommendation is "
            "given either. Give the T2 series of the study.")


def _number(value: Any) -> Optional[float]:
    try:
        v = float(value[0] if isinstance(value, (list, tuple)) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return v if math.isfinite(v) else None


def from_timings(echo_time_ms: Any = None, repetition_time_ms: Any = None,
                 inversion_time_ms: Any = None) -> tuple[str, list[str]]:
    """``(weighting, evidence)`` from TE, TR and TI in ms (None or non-numbers: absent); the
    rule is step 1 of the module docstring. ``evidence`` is one sentence naming the values."""
    te, tr, ti = (_number(v) for v in (echo_time_ms, repetition_time_ms, inversion_time_ms))
    shown = ", ".join(f"{k} {v:g} ms" for k, v in (("EchoTime", te), ("RepetitionTime", tr),
                                                    ("InversionTime", ti)) if v is not None)
    if ti is not None and ti > 0:
        if ti <= STIR_MAX_TI_MS:
            return "STIR", [f"{shown}: inversion time <= {STIR_MAX_TI_MS:g} ms nulls fat (STIR)"]
        if te is not None and ti >= FLAIR_MIN_TI_MS and te >= T2_MIN_TE_MS:
            return "FLAIR", [f"{shown}: long inversion time and echo time (fluid-attenuated "
                             "T2, FLAIR)"]
        if te is not None and te <= T1_MAX_TE_MS:
            return "T1", [f"{shown}: inversion recovery with a short echo time (T1)"]
    if te is not None and te >= T2_MIN_TE_MS:
        return "T2", [f"{shown}: echo time >= {T2_MIN_TE_MS:g} ms (T2)"]
    if te is not None and tr is not None and te <= T1_MAX_TE_MS:
        if tr <= T1_MAX_TR_MS:
            return "T1", [f"{shown}: echo time <= {T1_MAX_TE_MS:g} ms and repetition time <= "
                          f"{T1_MAX_TR_MS:g} ms (T1)"]
        if tr >= PD_MIN_TR_MS:
            return "PD", [f"{shown}: short echo time, long repetition time (proton density)"]
    return "unknown", ([f"{shown}: between the T1, PD and T2 bounds"] if shown else [])


def from_description(description: Any, field: str = "SeriesDescription") -> tuple[str, list[str]]:
    """``(weighting, evidence)`` from a series description or protocol name (step 2 of the
    module docstring); the evidence names the tokens found, never the text itself."""
    text = str(description or "").upper().replace("*", "")
    found = [name for name, pattern in _TOKENS.items() if pattern.search(text)]
    if not found:
        return "unknown", []
    said = f"{field} names {'/'.join(found)}"
    if "STIR" in found:
        return "STIR", [said]
    if "FLAIR" in found:
        return ("T1" if "T1" in found else "FLAIR"), [said]
    single = [w for w in ("T1", "T2", "PD") if w in found]
    return (single[0] if len(single) == 1 else "unknown"), [said]


def from_header(*, description: Any = None, description_field: str = "SeriesDescription",
                echo_time_ms: Any = None, repetition_time_ms: Any = None,
                inversion_time_ms: Any = None) -> tuple[str, list[str]]:
    """``(weighting, evidence)`` from header values: the timings when they decide, else the
    description (steps 1-2 of the module docstring); ``("unknown", [...])`` when neither does.
    """
    by_time, time_evidence = from_timings(echo_time_ms, repetition_time_ms, inversion_time_ms)
    by_text, text_evidence = from_description(description, description_field)
    if by_time != "unknown":
        evidence = list(time_evidence)
        if by_text not in ("unknown", by_time):
            evidence.append(f"{text_evidence[0]}, which disagrees; the timings decide")
        elif by_text == by_time:
            evidence += text_evidence
        return by_time, evidence
    if by_text != "unknown":
        return by_text, text_evidence + time_evidence
    return "unknown", time_evidence + text_evidence + [
        "no EchoTime/RepetitionTime or SeriesDescription that decides the weighting"]


def from_dataset(ds: Any) -> tuple[str, list[str]]:
    """:func:`from_header` on a pydicom dataset (``SeriesDescription``, else ``ProtocolName``;
    ``EchoTime``, ``RepetitionTime``, ``InversionTime``)."""
    field = "SeriesDescription" if ds.get("SeriesDescription") else "ProtocolName"
    return from_header(description=ds.get(field), description_field=field,
                       echo_time_ms=ds.get("EchoTime"),
                       repetition_time_ms=ds.get("RepetitionTime"),
                       inversion_time_ms=ds.get("InversionTime"))


def from_disc_csf_ratio(ratio: Optional[float]) -> tuple[str, list[str]]:
    """``(weighting, evidence)`` from the median disc-to-CSF signal ratio of the mid-sagittal
    slice (step 3 of the module docstring): ``"T1"`` above ``IMAGE_T1_MIN_DISC_CSF_RATIO``,
    else ``"unknown"`` (the image does not contradict T2; it does not prove it either)."""
    if ratio is None or not math.isfinite(float(ratio)):
        return "unknown", ["image: no disc with a measurable disc-to-CSF signal ratio"]
    if float(ratio) > IMAGE_T1_MIN_DISC_CSF_RATIO:
        return "T1", [f"image: discs brighter than the CSF behind them (median disc-to-CSF "
                      f"signal ratio {float(ratio):.2f} > {IMAGE_T1_MIN_DISC_CSF_RATIO:g}; CSF "
                      "is bright on T2, dark on T1)"]
    return "unknown", [f"image: median disc-to-CSF signal ratio {float(ratio):.2f} "
                       f"(<= {IMAGE_T1_MIN_DISC_CSF_RATIO:g}, as on T2)"]
