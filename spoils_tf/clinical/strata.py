"""The decision-support table: bands, tiers and rules as DATA (no decision logic here).

Source: SPOILS paper, section "Clinical Decision Support Integration":

* 3H, 4M, 4H, 5M, 5H with high ODI or NRS -> surgical consultation;
* 3M, 4L, 5L -> transforaminal epidural steroid injection (TFESI), surgery considered if
  pain persists;
* 1L, 2L, 3L with mild-to-moderate ODI/NRS -> pharmacological therapy and physiotherapy,
  TFESI if refractory.

The paper leaves three combinations open; the rules marked ``source="project"`` close them
and say why (see each rule's ``reason``).

Bands:

* ODI (Oswestry Disability Index, %, 0-100), Fairbank & Pynsent, Spine 2000;25(22):2940-52:
  0-20 minimal disability, 21-40 moderate, 41-60 severe, 61-80 crippled, 81-100 bed-bound
  (or exaggerating). ODI is a percentage and may be fractional (e.g. 44.4 when a section is
  unanswered); a band holds values ``> previous upper`` and ``<= its upper``, so 20.5 is
  "moderate".
* NRS (0-10 integer pain Numerical Rating Scale): 0 none, 1-3 mild, 4-6 moderate,
  7-10 severe (the usual cut-points, e.g. Boonstra et al., Pain 2016;157(8):1631-8 / WHO
  ladder convention).

Symptom level (derived from the two bands, checked in this order):

* ``high``: ODI band in ``HIGH_ODI_BANDS`` (ODI >= 41) OR NRS band in ``HIGH_NRS_BANDS``
  (NRS >= 7) -- the paper's "high ODI or NRS";
* ``minimal``: ODI band in ``MINIMAL_ODI_BANDS`` (<= 20) AND NRS band in
  ``MINIMAL_NRS_BANDS`` (<= 3);
* ``moderate``: everything else. The paper's "mild to moderate" = ``minimal`` or
  ``moderate``.

Tiers: each grade class belongs to the paper stratum it is listed in. The worst-disc order
(``WORST_ORDER``) sorts first by tier, then by Pfirrmann grade, then by severity letter, so a
3H disc (surgical stratum) outranks a 5L disc (injection stratum): the worst disc is the one
that calls for the most intensive pathway, never one that would hide it.

Abstention: a surgical consultation or an injection (``INTERVENTIONS``) is withheld when the
grader's probability for the predicted class of every disc driving it is below
``INTERVENTION_MIN_PROBABILITY`` (a wrong 4H/5H grade must not send a patient to surgery).

Change the behaviour by editing this table (or pass an edited ``DecisionConfig``, e.g. from
JSON via ``DecisionConfig.from_dict``), not the rules engine.
"""

from __future__ import annotations

from spoils_tf import labels

# === Recommendations (enum-like strings) ===
SURGICAL_CONSULTATION = "surgical_consultation"
TFESI = "transforaminal_epidural_steroid_injection"
CONSERVATIVE_CARE = "conservative_care"
CONSERVATIVE_SPECIALIST_REVIEW = "conservative_care_with_specialist_review"
CLINICAL_REEVALUATION = "clinical_reevaluation"
RECOMMENDATIONS: tuple[str, ...] = (SURGICAL_CONSULTATION, TFESI, CONSERVATIVE_CARE,
                                    CONSERVATIVE_SPECIALIST_REVIEW, CLINICAL_REEVALUATION)

# === Bands: (name, inclusive upper bound, meaning) in ascending order ===
ODI_RANGE: tuple[float, float] = (0.0, 100.0)
ODI_BANDS: tuple[tuple[str, float, str], ...] = (
    ("minimal", 20, "minimal disability: can cope with most activities of daily living"),
    ("moderate", 40, "moderate disability: more pain and difficulty sitting, lifting, standing"),
    ("severe", 60, "severe disability: pain is the main problem, daily life is affected"),
    ("crippled", 80, "crippled: back pain impinges on all aspects of life"),
    ("bed-bound", 100, "bed-bound, or exaggerating symptoms (Fairbank & Pynsent 2000)"),
)
NRS_RANGE: tuple[int, int] = (0, 10)
NRS_BANDS: tuple[tuple[str, float, str], ...] = (
    ("none", 0, "no pain"),
    ("mild", 3, "mild pain"),
    ("moderate", 6, "moderate pain"),
    ("severe", 10, "severe pain"),
)
HIGH_ODI_BANDS: tuple[str, ...] = ("severe", "crippled", "bed-bound")
HIGH_NRS_BANDS: tuple[str, ...] = ("severe",)
MINIMAL_ODI_BANDS: tuple[str, ...] = ("minimal",)
MINIMAL_NRS_BANDS: tuple[str, ...] = ("none", "mild")
SYMPTOM_LEVELS: tuple[str, ...] = ("minimal", "moderate", "high")

# === Tiers: the paper's stratum of each grade class ===
TIERS: tuple[str, ...] = ("conservative", "injection", "surgical")  # ascending intensity
CLASS_TIER: dict[str, str] = {
    "1L": "conservative", "2L": "conservative", "3L": "conservative",
    "3M": "injection", "4L": "injection", "5L": "injection",
    "3H": "surgical", "4M": "surgical", "4H": "surgical", "5M": "surgical", "5H": "surgical",
}

# === Rules: first match wins; every (tier, symptom level) pair must match exactly one ===
RULES: tuple[dict, ...] = (
    {
        "id": "SURG-HIGH",
        "source": "paper",
        "tiers": ("surgical",),
        "symptoms": ("high",),
        "recommendation": SURGICAL_CONSULTATION,
        "reason": "Severe degeneration/spondylosis ({worst}) with high disability or pain: the "
                  "paper's surgical stratum (3H, 4M, 4H, 5M, 5H with high ODI or NRS).",
        "follow_up": "Refer for spine surgical consultation; correlate the imaging level with "
                     "the clinical (dermatomal) level before any intervention.",
    },
    {
        "id": "SURG-LOW",
        "source": "project",
        "tiers": ("surgical",),
        "symptoms": ("minimal", "moderate"),
        "recommendation": CONSERVATIVE_SPECIALIST_REVIEW,
        "reason": "Severe imaging class ({worst}) but disability and pain are not high. The "
                  "paper only sends these classes to surgery WITH high ODI or NRS; imaging "
                  "degeneration alone is common in people without symptoms (Brinjikji et al., "
                  "AJNR 2015;36:811-6) and surgery for degenerative disease is decided on "
                  "symptoms, so we advise conservative care with specialist review.",
        "follow_up": "Conservative care (analgesics, physiotherapy); spine specialist review; "
                     "repeat ODI/NRS at 6-12 weeks and re-image only if symptoms progress or "
                     "neurological deficit appears.",
    },
    {
        "id": "INJ-SYMPTOMATIC",
        "source": "paper",
        "tiers": ("injection",),
        "symptoms": ("moderate", "high"),
        "recommendation": TFESI,
        "reason": "Intermediate class ({worst}): the paper's interventional pain management "
                  "stratum (3M, 4L, 5L) -> transforaminal epidural steroid injection.",
        "follow_up": "Reassess ODI/NRS after the injection; consider surgical consultation if "
                     "pain persists despite the intervention.",
    },
    {
        "id": "INJ-MINIMAL",
        "source": "project",
        "tiers": ("injection",),
        "symptoms": ("minimal",),
        "recommendation": CONSERVATIVE_CARE,
        "reason": "Intermediate class ({worst}) but minimal disability and no or mild pain. The "
                  "paper's injection stratum presupposes pain to treat (TFESI targets radicular "
                  "pain); with ODI <= 20 and NRS <= 3 there is none worth an invasive procedure, "
                  "so we advise conservative care.",
        "follow_up": "Conservative care; transforaminal steroid injection if pain rises to "
                     "moderate or becomes refractory.",
    },
    {
        "id": "CONS-MILD",
        "source": "paper",
        "tiers": ("conservative",),
        "symptoms": ("minimal", "moderate"),
        "recommendation": CONSERVATIVE_CARE,
        "reason": "Mild class ({worst}) with mild-to-moderate disability and pain: the paper's "
                  "conservative stratum (1L, 2L, 3L) -> pharmacological therapy and "
                  "physiotherapy.",
        "follow_up": "Analgesics and physiotherapy; consider transforaminal steroid injection "
                     "if symptoms remain refractory to conservative treatment.",
    },
    {
        "id": "CONS-DISCORDANT",
        "source": "project",
        "tiers": ("conservative",),
        "symptoms": ("high",),
        "recommendation": CLINICAL_REEVALUATION,
        "reason": "Symptoms out of proportion to imaging: mild class ({worst}) but high "
                  "disability or pain. The paper is silent here. Disc degeneration grade does "
                  "not explain this burden, so we advise clinical re-evaluation for other pain "
                  "generators (facet, sacroiliac joint, stenosis, a level not graded) and red "
                  "flags (NICE NG59, 2016) rather than escalating on imaging.",
        "follow_up": "Clinical re-evaluation and red-flag screen (infection, malignancy, "
                     "fracture, cauda equina); further imaging if indicated; conservative care "
                     "meanwhile.",
    },
)

# === Abstention on an unconfident grade ===
# A rule whose recommendation is one of these is withheld when the grader's probability for
# the predicted class of every disc driving it is below ``INTERVENTION_MIN_PROBABILITY``.
INTERVENTIONS: tuple[str, ...] = (SURGICAL_CONSULTATION, TFESI)
# The least probability the grader must give a driving disc's predicted class for an
# intervention (``INTERVENTIONS``) to be recommended, when the grader's model card sets none.
# A FIXED, conservative fallback. A grader fitted by the nested CV carries a threshold chosen
# on its inner folds (``spoils_tf.classical.abstention``) in its card field
# ``intervention_min_probability`` (``spoils_tf.serve.predictor``); ``DecisionConfig`` carries
# the value in force and how it was set, and the rule table prints both.
INTERVENTION_MIN_PROBABILITY: float = 0.6
INTERVENTION_THRESHOLD_ORIGIN = ("a fixed project threshold, not chosen on cross-validation "
                                 "folds; a grader's model card can set its own")

# Extra advice appended whenever the ODI falls in this band.
ODI_BAND_ADVICE: dict[str, str] = {
    "bed-bound": "ODI 81-100: patient is bed-bound or symptoms may be magnified "
                 "(Fairbank & Pynsent 2000); assess in person promptly.",
}


def worst_order(class_tier: dict[str, str] = CLASS_TIER) -> tuple[str, ...]:
    """THE severity order of ``labels.GRADE_CLASSES``, least to most severe.

    Sorted by tier (``TIERS`` order), then Pfirrmann grade, then severity letter
    (``labels.SEVERITIES``). With the default table::

        1L 2L 3L | 3M 4L 5L | 3H 4M 4H 5M 5H

    Raises:
      KeyError: if ``class_tier`` lacks a grade class; ValueError: for an unknown tier
        (``rules.DecisionConfig`` checks both first and names the field).
    """
    def rank(grade_cls: str) -> tuple[int, int, int]:
        return (TIERS.index(class_tier[grade_cls]), labels.pfirrmann_of(grade_cls),
                labels.SEVERITIES.index(labels.severity_of(grade_cls)))
    return tuple(sorted(labels.GRADE_CLASSES, key=rank))


WORST_ORDER: tuple[str, ...] = worst_order()
