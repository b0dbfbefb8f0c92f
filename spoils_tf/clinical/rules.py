"""Decision support: per-disc grade classes + ODI + NRS -> a recommendation with its reasons.

The behaviour is the table in ``strata.py`` (held in a ``DecisionConfig``); this module only
validates inputs, bands the scores, finds the worst disc and picks the first matching rule.

    >>> d = decide({"L4-L5": "4M", "L5-S1": "3L"}, odi=45, nrs=7)
    >>> d.recommendation, d.rule_id, d.driving_discs
    ('surgical_consultation', 'SURG-HIGH', (('L4-L5', '4M'),))

Given the grader's probability for each disc's predicted class, a surgical consultation or an
injection (``strata.INTERVENTIONS``) is withheld when every disc driving it is below
``DecisionConfig.intervention_min_probability`` (``strata.INTERVENTION_MIN_PROBABILITY``):

    >>> d = decide({"L5-S1": "5H"}, odi=45, nrs=7, probabilities={"L5-S1": 0.4})
    >>> d.recommendation, d.withheld_recommendation
    (None, 'surgical_consultation')

This is decision SUPPORT for a clinician, not a diagnosis: every output carries the rule that
fired and whether that rule comes from the paper or is this project's choice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from spoils_tf import labels
from spoils_tf.clinical import strata
from spoils_tf.errors import SpoilsError

Band = tuple[str, float, str]


# === Config ===
@dataclasses.dataclass(frozen=True)
class DecisionConfig:
    """The decision table. Defaults are ``strata.py``; see there for sources and meaning.

    Attributes:
      odi_bands, nrs_bands: ascending ``(name, inclusive upper bound, meaning)``; the last
        upper bound must equal the top of the score range.
      high_odi_bands, high_nrs_bands: bands that make the symptom level ``high`` (either).
      minimal_odi_bands, minimal_nrs_bands: bands that make it ``minimal`` (both).
      class_tier: grade class -> tier (one of ``strata.TIERS``), for every grade class.
      rules: dicts with ``id, source, tiers, symptoms, recommendation, reason, follow_up``;
        every (tier, symptom level) pair must be covered by exactly one rule.
      odi_band_advice: band name -> extra follow-up sentence.
      intervention_min_probability: in [0, 1]; an intervention (``strata.INTERVENTIONS``) is
        withheld when the grader's probability of every driving disc's class is below it; 1
        withholds every intervention (the grader's were not reliable enough to act on).
      threshold_origin: how that threshold was set, in words (stated with the rule).

    Raises (on construction):
      SpoilsError: ``field`` names the attribute when the table is inconsistent.
    """

    odi_bands: tuple[Band, ...] = strata.ODI_BANDS
    nrs_bands: tuple[Band, ...] = strata.NRS_BANDS
    high_odi_bands: tuple[str, ...] = strata.HIGH_ODI_BANDS
    high_nrs_bands: tuple[str, ...] = strata.HIGH_NRS_BANDS
    minimal_odi_bands: tuple[str, ...] = strata.MINIMAL_ODI_BANDS
    minimal_nrs_bands: tuple[str, ...] = strata.MINIMAL_NRS_BANDS
    class_tier: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(strata.CLASS_TIER))
    rules: tuple[Mapping[str, Any], ...] = strata.RULES
    odi_band_advice: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(strata.ODI_BAND_ADVICE))
    intervention_min_probability: float = strata.INTERVENTION_MIN_PROBABILITY
    threshold_origin: str = strata.INTERVENTION_THRESHOLD_ORIGIN

    def __post_init__(self) -> None:
        t = self.intervention_min_probability
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0.0 <= float(t) <= 1.0:
            raise SpoilsError(None, "intervention_min_probability",
                              f"expected a probability in [0, 1], got {t!r}")
        for field, bands, (lo, hi) in (("odi_bands", self.odi_bands, strata.ODI_RANGE),
                                       ("nrs_bands", self.nrs_bands, strata.NRS_RANGE)):
            uppers = [float(b[1]) for b in bands]
            if not bands or uppers != sorted(uppers) or len(set(uppers)) != len(uppers) \
                    or uppers[0] < lo or uppers[-1] != hi:
                raise SpoilsError(None, field, f"upper bounds must rise strictly from >= {lo} "
                                               f"to exactly {hi}, got {uppers}")
        names = {"odi": [b[0] for b in self.odi_bands], "nrs": [b[0] for b in self.nrs_bands]}
        for field in ("high_odi_bands", "minimal_odi_bands", "high_nrs_bands",
                      "minimal_nrs_bands"):
            known = names[field.split("_")[1]]
            bad = [b for b in getattr(self, field) if b not in known]
            if bad:
                raise SpoilsError(None, field, f"unknown band(s) {bad}; expected some of "
                                               f"{known}")
        missing = [c for c in labels.GRADE_CLASSES if c not in self.class_tier]
        extra = [c for c in self.class_tier if c not in labels.GRADE_CLASSES]
        bad_tier = {c: t for c, t in self.class_tier.items() if t not in strata.TIERS}
        if missing or extra or bad_tier:
            raise SpoilsError(None, "class_tier", f"missing {missing}, unknown classes "
                                                  f"{extra}, unknown tiers {bad_tier}; tiers "
                                                  f"are {strata.TIERS}")
        keys = {"id", "source", "tiers", "symptoms", "recommendation", "reason", "follow_up"}
        for i, r in enumerate(self.rules):
            if set(r) != keys:
                raise SpoilsError(None, f"rules[{i}]", f"rule {r.get('id')!r} has keys "
                                                       f"{sorted(r)}, expected {sorted(keys)}")
            if r["recommendation"] not in strata.RECOMMENDATIONS:
                raise SpoilsError(None, f"rules[{i}].recommendation",
                                  f"rule {r['id']!r} recommendation {r['recommendation']!r} "
                                  f"not in {strata.RECOMMENDATIONS}")
        for tier in strata.TIERS:
            for level in strata.SYMPTOM_LEVELS:
                hits = [r["id"] for r in self.rules
                        if tier in r["tiers"] and level in r["symptoms"]]
                if len(hits) != 1:
                    raise SpoilsError(None, "rules", f"(tier={tier!r}, symptoms={level!r}) "
                                                     f"must match exactly one rule, matches "
                                                     f"{hits}")

    @property
    def worst_order(self) -> tuple[str, ...]:
        """Grade classes least -> most severe (``strata.worst_order`` of ``class_tier``)."""
        return strata.worst_order(dict(self.class_tier))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DecisionConfig":
        """Defaults overridden by the keys of ``d`` (e.g. parsed JSON; lists become tuples).

        Raises:
          SpoilsError: ``field`` names the key: an unknown key, a value of the wrong JSON type
            (:func:`_check_types`), or a resulting table that is inconsistent.
        """
        if not isinstance(d, Mapping):
            raise SpoilsError(None, None, f"expected a JSON object of DecisionConfig keys, got "
                                          f"{type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - fields)
        if bad:
            raise SpoilsError(None, ", ".join(bad), f"unknown key(s) {bad}; expected some of "
                                                    f"{sorted(fields)}")
        _check_types(d)

        def tup(x):
            return tuple(tup(v) for v in x) if isinstance(x, list) else x
        kw = {}
        for k, v in d.items():
            if k == "rules":
                kw[k] = tuple({rk: tup(rv) for rk, rv in r.items()} for r in v)
            else:
                kw[k] = tup(v)
        return cls(**kw)

    @classmethod
    def from_json(cls, path: Union[str, os.PathLike]) -> "DecisionConfig":
        """``from_dict`` of a JSON file.

        Raises:
          SpoilsError: naming the file and the key: unreadable, not JSON, or any refusal of
            :meth:`from_dict`.
        """
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except OSError as e:
            raise SpoilsError(path, None, f"cannot be read ({e})") from e
        except ValueError as e:     # JSONDecodeError, UnicodeDecodeError
            raise SpoilsError(path, None, f"not a valid JSON decision config ({e})") from e
        try:
            return cls.from_dict(d)
        except SpoilsError as e:
            raise SpoilsError(path, e.field, e.reason) from None


def _check_types(d: Mapping[str, Any]) -> None:
    """Checks the JSON type of every value of a ``DecisionConfig`` override, before any is used.

    Raises:
      SpoilsError: ``field`` names the key and the element, e.g. ``odi_bands[2][1]``,
        ``rules[0].tiers``; ``reason`` what was expected and what was found.
    """
    def expect(ok: bool, field: str, what: str, value: Any) -> None:
        if not ok:
            raise SpoilsError(None, field, f"expected {what}, got {value!r:.80} "
                                           f"({type(value).__name__})")

    def strings(v: Any) -> bool:
        return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)

    for key, value in d.items():
        if key in ("odi_bands", "nrs_bands"):
            expect(isinstance(value, (list, tuple)), key,
                   "a list of [name, inclusive upper bound, meaning]", value)
            for i, band in enumerate(value):
                f = f"{key}[{i}]"
                expect(isinstance(band, (list, tuple)) and len(band) == 3, f,
                       "[name, inclusive upper bound, meaning]", band)
                expect(isinstance(band[0], str), f"{f}[0]", "a band name (string)", band[0])
                expect(isinstance(band[1], numbers.Real) and not isinstance(band[1], bool)
                       and math.isfinite(band[1]), f"{f}[1]", "an upper bound (number)",
                       band[1])
                expect(isinstance(band[2], str), f"{f}[2]", "a meaning (string)", band[2])
        elif key in ("high_odi_bands", "high_nrs_bands", "minimal_odi_bands",
                     "minimal_nrs_bands"):
            expect(strings(value), key, "a list of band names (strings)", value)
        elif key in ("class_tier", "odi_band_advice"):
            expect(isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()),
                   key, "an object whose values are strings", value)
        elif key == "intervention_min_probability":
            expect(isinstance(value, numbers.Real) and not isinstance(value, bool), key,
                   "a probability (number in [0, 1])", value)
        elif key == "threshold_origin":
            expect(isinstance(value, str), key, "a sentence (string)", value)
        elif key == "rules":
            expect(isinstance(value, (list, tuple)), key, "a list of rule objects", value)
            for i, rule in enumerate(value):
                expect(isinstance(rule, Mapping), f"rules[{i}]", "a rule object", rule)
                for rk, rv in rule.items():
                    if rk in ("tiers", "symptoms"):
                        expect(strings(rv), f"rules[{i}].{rk}", "a list of strings", rv)
                    else:
                        expect(isinstance(rv, str), f"rules[{i}].{rk}", "a string", rv)


DEFAULT_CONFIG = DecisionConfig()


# === Input validation ===
def _number(value: Any, field: str) -> float:
    if value is None:
        raise ValueError(f"{field} is missing (None)")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ValueError(f"{field} must be a number, got {value!r} ({type(value).__name__})")
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{field} must be a number, got {value!r}") from None
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    return x


def validate_odi(value: Any) -> float:
    """ODI (%) as float in 0..100; accepts numbers and numeric strings.

    Raises:
      ValueError: naming ``ODI`` and the value when missing, non-numeric, NaN/inf or outside
        0..100.
    """
    x = _number(value, "ODI")
    lo, hi = strata.ODI_RANGE
    if not lo <= x <= hi:
        raise ValueError(f"ODI must be in {lo:g}..{hi:g} (%), got {value!r}")
    return x


def validate_nrs(value: Any) -> int:
    """NRS as int in 0..10; the scale is integer, so 5.5 is rejected like 10.5.

    Raises:
      ValueError: naming ``NRS`` and the value when missing, non-numeric, NaN/inf, not a
        whole number, or outside 0..10.
    """
    x = _number(value, "NRS")
    lo, hi = strata.NRS_RANGE
    if not lo <= x <= hi:
        raise ValueError(f"NRS must be an integer in {lo}..{hi}, got {value!r}")
    if x != int(x):
        raise ValueError(f"NRS must be a whole number (0..10 integer scale), got {value!r}")
    return int(x)


def band_of(score: float, bands: Sequence[Band]) -> Band:
    """The first band whose inclusive upper bound is ``>= score`` (scores already validated)."""
    for b in bands:
        if score <= b[1]:
            return b
    raise ValueError(f"score {score} above the last band {bands[-1]}")


def _validate_probabilities(probabilities: Mapping[str, Any],
                            items: Sequence[tuple[str, str]]) -> dict[str, float]:
    levels = [lvl for lvl, _ in items]
    if not isinstance(probabilities, Mapping) or set(probabilities) != set(levels):
        got = sorted(probabilities) if isinstance(probabilities, Mapping) else probabilities
        raise ValueError(f"probabilities: expected one per disc level {levels}, got {got!r}")
    out = {}
    for lvl in levels:
        p = probabilities[lvl]
        ok = isinstance(p, numbers.Real) and not isinstance(p, bool) and 0.0 <= float(p) <= 1.0
        if not ok:
            raise ValueError(f"probabilities: {lvl} must be a probability in [0, 1], got {p!r}")
        out[lvl] = float(p)
    return out


def _validate_discs(discs: Union[Mapping[str, str], Iterable[tuple[str, str]]]
                    ) -> list[tuple[str, str]]:
    items = list(discs.items()) if isinstance(discs, Mapping) else list(discs)
    if not items:
        raise ValueError("discs is empty: need at least one (level, grade class), e.g. "
                         "{'L4-L5': '4M'}")
    out, seen = [], set()
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"discs: each entry must be (level, grade class), got {item!r}")
        level, cls = item
        if level not in labels.DISC_NAMES:
            raise ValueError(f"discs: unknown disc level {level!r}; expected one of "
                             f"{labels.DISC_NAMES}")
        if level in seen:
            raise ValueError(f"discs: level {level!r} given twice")
        if not isinstance(cls, str) or cls not in labels.GRADE_CLASS_ID:
            raise ValueError(f"discs: unknown grade class {cls!r} at {level}; expected one of "
                             f"{labels.GRADE_CLASSES}")
        seen.add(level)
        out.append((level, cls))
    return out


# === Decision ===
@dataclasses.dataclass(frozen=True)
class Decision:
    """One recommendation and everything that explains it.

    Attributes:
      recommendation: one of ``strata.RECOMMENDATIONS``, or None when withheld (below).
      rule_id, rule_source: the rule that fired; ``"paper"`` or ``"project"`` (our choice where
        the paper is silent).
      reason: plain-language reason.
      follow_up: follow-up advice.
      worst_class, tier: the worst grade class and its tier.
      driving_discs: ``((level, class), ...)`` every disc with the worst class, top -> bottom.
      odi, odi_band, odi_band_meaning, nrs, nrs_band, symptom_level: the scores and bands.
      discs: all input ``(level, class)`` pairs, top -> bottom.
      grade_probabilities: ``((level, probability of its class), ...)`` top -> bottom, as
        given to :func:`decide` (empty: none given, the grades were taken as certain).
      intervention_min_probability: the threshold in force.
      withheld_recommendation: the rule's recommendation when it was withheld, else None.
      abstention_note: why it was withheld (disc, grade, probability, threshold), else None.
    """

    recommendation: str
    rule_id: str
    rule_source: str
    reason: str
    follow_up: str
    worst_class: str
    tier: str
    driving_discs: tuple[tuple[str, str], ...]
    odi: float
    odi_band: str
    odi_band_meaning: str
    nrs: int
    nrs_band: str
    symptom_level: str
    discs: tuple[tuple[str, str], ...]
    grade_probabilities: tuple[tuple[str, float], ...] = ()
    intervention_min_probability: float = strata.INTERVENTION_MIN_PROBABILITY
    withheld_recommendation: Optional[str] = None
    abstention_note: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["driving_discs"] = [list(x) for x in self.driving_discs]
        d["discs"] = [list(x) for x in self.discs]
        d["grade_probabilities"] = [list(x) for x in self.grade_probabilities]
        return d

    def summary(self) -> str:
        """Multi-line plain-text report."""
        source = ("from the paper" if self.rule_source == "paper"
                  else "project choice, the paper is silent")
        driving = ", ".join(f"{lvl}={c}" for lvl, c in self.driving_discs)
        all_discs = ", ".join(f"{lvl}={c}" for lvl, c in self.discs)
        if self.recommendation is None:
            head = [f"Recommendation: none ({self.withheld_recommendation} withheld)",
                    f"Why: {self.abstention_note}"]
            follow = "Follow-up: review the grades and the images; no intervention is advised " \
                     "on this grading."
        else:
            head = [f"Recommendation: {self.recommendation}"]
            follow = f"Follow-up: {self.follow_up}"
        return "\n".join(head + [
            f"Driven by: {driving} (worst of {all_discs}; tier {self.tier})",
            f"ODI {self.odi:g}% -> {self.odi_band} ({self.odi_band_meaning}); "
            f"NRS {self.nrs} -> {self.nrs_band}; symptom level: {self.symptom_level}",
            f"Rule {self.rule_id} ({source}):",
            f"  {self.reason}",
            follow,
            "Decision support only; the treating clinician decides.",
        ])


def symptom_level(odi_band: str, nrs_band: str, config: DecisionConfig = DEFAULT_CONFIG) -> str:
    """``"high"`` | ``"minimal"`` | ``"moderate"`` from the two band names (see strata.py)."""
    if odi_band in config.high_odi_bands or nrs_band in config.high_nrs_bands:
        return "high"
    if odi_band in config.minimal_odi_bands and nrs_band in config.minimal_nrs_bands:
        return "minimal"
    return "moderate"


def worst_discs(discs: Union[Mapping[str, str], Iterable[tuple[str, str]]],
                config: DecisionConfig = DEFAULT_CONFIG) -> tuple[tuple[str, str], ...]:
    """Every ``(level, class)`` whose class is the most severe in ``config.worst_order``,
    ordered top -> bottom.

    Raises:
      ValueError: empty input, unknown level, repeated level, or unknown grade class.
    """
    items = _validate_discs(discs)
    order = config.worst_order
    top = max(order.index(c) for _, c in items)
    hits = [(lvl, c) for lvl, c in items if order.index(c) == top]
    return tuple(sorted(hits, key=lambda x: labels.DISC_NAMES.index(x[0])))


def abstention_note(recommendation: str, rule_id: str,
                    driving: Sequence[tuple[str, str, float]], min_probability: float) -> str:
    """The sentence saying why ``recommendation`` was withheld: each driving disc
    ``(level, class, probability)``, the threshold and that the grades are kept for review."""
    discs = ", ".join(f"{lvl} graded {cls} with probability {p:.2f}" for lvl, cls, p in driving)
    if min_probability >= 1.0:
        return (f"{recommendation.replace('_', ' ')} (rule {rule_id}) withheld: it would be "
                f"driven by {discs}, and this grader's surgical and injection grades were not "
                "reliable enough in cross-validation to act on at any probability; the grades "
                "are shown for review")
    return (f"{recommendation.replace('_', ' ')} (rule {rule_id}) withheld: it would be driven "
            f"by {discs}, below the threshold {min_probability:.2f} for a surgical or injection "
            "recommendation; the grade is too uncertain to act on, the grades are shown for "
            "review")


def decide(discs: Union[Mapping[str, str], Iterable[tuple[str, str]]], odi: Any, nrs: Any,
           config: Optional[DecisionConfig] = None, *,
           probabilities: Optional[Mapping[str, float]] = None) -> Decision:
    """Recommendation for one patient.

    Args:
      discs: disc level (``labels.DISC_NAMES``) -> grade class (``labels.GRADE_CLASSES``), as a
        mapping or ``(level, class)`` pairs. The worst disc drives the decision.
      odi: Oswestry Disability Index, % in 0..100 (float or numeric string).
      nrs: pain Numerical Rating Scale, integer 0..10 (int or numeric string).
      config: the decision table; ``DEFAULT_CONFIG`` (strata.py) if None.
      probabilities: level -> the grader's probability (0..1) for that disc's class, one per
        disc. When the rule's recommendation is in ``strata.INTERVENTIONS`` and every driving
        disc is below ``config.intervention_min_probability`` (or that is 1: interventions
        always withheld), ``recommendation`` is None,
        ``withheld_recommendation`` names it and ``abstention_note`` says why. None: the grades
        are taken as certain (e.g. a clinician's own reading).

    Raises:
      ValueError: naming the field and value for bad ODI/NRS (missing, non-numeric, NaN,
        out of range, fractional NRS), an empty disc list, an unknown level or grade class,
        probabilities not one per disc or outside [0, 1].
    """
    cfg = config or DEFAULT_CONFIG
    items = _validate_discs(discs)
    probs = _validate_probabilities(probabilities, items) if probabilities is not None else {}
    odi_v = validate_odi(odi)
    nrs_v = validate_nrs(nrs)
    odi_b = band_of(odi_v, cfg.odi_bands)
    nrs_b = band_of(nrs_v, cfg.nrs_bands)
    level = symptom_level(odi_b[0], nrs_b[0], cfg)
    driving = worst_discs(items, cfg)
    worst = driving[0][1]
    tier = cfg.class_tier[worst]
    rule = next(r for r in cfg.rules if tier in r["tiers"] and level in r["symptoms"])
    follow = rule["follow_up"]
    if odi_b[0] in cfg.odi_band_advice:
        follow = f"{follow} {cfg.odi_band_advice[odi_b[0]]}"
    recommendation, withheld, note = rule["recommendation"], None, None
    threshold = float(cfg.intervention_min_probability)
    if probs and recommendation in strata.INTERVENTIONS and (
            threshold >= 1.0 or all(probs[lvl] < threshold for lvl, _ in driving)):
        withheld, recommendation = recommendation, None
        note = abstention_note(withheld, rule["id"],
                               [(lvl, c, probs[lvl]) for lvl, c in driving], threshold)
    order = sorted(items, key=lambda x: labels.DISC_NAMES.index(x[0]))
    return Decision(
        recommendation=recommendation, rule_id=rule["id"], rule_source=rule["source"],
        reason=rule["reason"].format(worst=worst), follow_up=follow, worst_class=worst,
        tier=tier, driving_discs=driving, odi=odi_v, odi_band=odi_b[0], odi_band_meaning=odi_b[2],
        nrs=nrs_v, nrs_band=nrs_b[0], symptom_level=level,
        discs=tuple(order),
        grade_probabilities=tuple((lvl, probs[lvl]) for lvl, _ in order if lvl in probs),
        intervention_min_probability=threshold, withheld_recommendation=withheld,
        abstention_note=note)


def rule_table_lines(config: Optional[DecisionConfig] = None) -> list[str]:
    """The decision table as plain-text lines: the tier of each grade class, each rule (id,
    source, tiers, symptom levels, recommendation) and the abstention threshold
    (``config.intervention_min_probability``) with the recommendations it applies to."""
    cfg = config or DEFAULT_CONFIG
    lines = ["Tiers: " + "; ".join(
        f"{t}: {' '.join(c for c in cfg.worst_order if cfg.class_tier[c] == t)}"
        for t in strata.TIERS)]
    for r in cfg.rules:
        lines.append(f"{r['id']} ({r['source']}): tier {'/'.join(r['tiers'])}, symptoms "
                     f"{'/'.join(r['symptoms'])} -> {r['recommendation']}")
    lines.append(abstention_rule_text(cfg))
    return lines


def abstention_rule_text(config: Optional[DecisionConfig] = None) -> str:
    """One sentence stating the abstention rule and its threshold."""
    cfg = config or DEFAULT_CONFIG
    return (f"Abstention: {' and '.join(strata.INTERVENTIONS)} are withheld when the grader's "
            f"probability for the class of every disc driving them is below "
            f"{float(cfg.intervention_min_probability):.2f} ({cfg.threshold_origin}); the grades "
            "are kept for review.")
