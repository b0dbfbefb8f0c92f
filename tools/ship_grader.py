"""Publishes the nested-CV grader into the shipped bundle (``spoils_tf/weights``) with its card.

    .venv/bin/python tools/ship_grader.py \
        --final runs/grade_nested_pred/final/predicted/grade_class/geometry/model.skops \
        --cv runs/grade_nested_pred --out spoils_tf/weights --drop-older

``--final`` is the model ``python -m experiments.grade_nested --fold=final`` fitted on every
patient (``grade_nested_lib.fit_final``: candidate, calibration map and intervention threshold
chosen on inner folds); ``--cv`` the nested-CV workdir of the same recipe, whose
``<mask_source>/<target>/<family>/summary.json`` gives the cross-validated numbers with their
patient-bootstrap CIs and the abstention table. The card says the probabilities are
calibrated and carries the threshold as ``intervention_min_probability`` (the predictor's
decision table takes it from there): the final fit's inner-fold choice when the choosing
procedure held up on the outer folds (``classical.abstention.deployment_threshold``), else 1
(every intervention withheld), with the reason; then the rest of the model card; the grader section of
``<out>/MODEL_CARD.md`` is rewritten from the card. The numbers are read from the runs, never
typed in.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import ship_models  # noqa: E402  (tools/ is not a package)

GRADER_HEADING = "## Grader"
METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
           ("f1_macro", "macro-F1"), ("auroc_macro", "macro one-vs-rest AUROC"),
           ("kappa_quadratic", "quadratic weighted kappa"), ("brier", "Brier"),
           ("ece", "top-label ECE"))


def _ci(m: dict) -> str:
    return f"{m['estimate']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def grader_section(card: dict, model_file: str) -> str:
    """The grader's part of MODEL_CARD.md, from its card."""
    cv = card["cross_validation"]
    rows = ["| metric | pooled outer folds [95 % patient-bootstrap CI] |", "| --- | --- |"]
    rows += [f"| {label} | {_ci(cv['metrics'][key])} |" for key, label in METRICS
             if key in cv["metrics"]]
    ab = cv.get("abstention")
    lines = [f"{GRADER_HEADING} (`{model_file}`)",
             f"- **Training data:** {card['training_data']}",
             f"- **Licence:** {card['licence']}",
             f"- **Recipe:** {card['recipe']}",
             f"- **Command:** `{card['command']}`",
             f"- **Probabilities:** calibrated ({card['calibration_method']} map fitted on inner "
             "out-of-fold probabilities).",
             *([f"- **Intervention threshold:** {card['intervention_min_probability']:g} "
                f"({card['intervention_threshold_reason']})."]
               if "intervention_min_probability" in card else []),
             f"- **Intended use:** {card['intended_use']}",
             f"- **Limits:** {card['limits']}", "",
             f"### Nested patient-grouped CV of this recipe ({cv['n_discs']} discs of "
             f"{cv['n_patients']} patients, {cv['mask_source']} masks; model, features, "
             "calibration and threshold chosen on inner folds only)", "", *rows, ""]
    if ab:
        p = ab["pooled"]
        thresholds = ", ".join(f"{r['threshold']:g}" for r in ab["per_fold"])
        lines += [f"Thresholds chosen per outer fold: {thresholds}. On the held-out "
                  f"folds, of {p['calls']} discs read in an intervention tier, {p['acted']} "
                  f"reached the threshold and {p['over_treating']} of those over-treated "
                  f"(without a threshold: {p['over_treating_without']} of {p['calls']}).", ""]
    return "\n".join(lines)


def replace_grader_section(card_md: str, section: str) -> str:
    """``card_md`` with everything from the first grader heading on replaced by ``section``."""
    for heading in (GRADER_HEADING, "## Geometry grader"):
        i = card_md.find("\n" + heading)
        if i >= 0:
            return card_md[:i + 1] + section
    return card_md.rstrip("\n") + "\n\n" + section


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--final", required=True, type=pathlib.Path,
                    help="final/<mask_source>/<target>/<family>/model.skops of the nested run")
    ap.add_argument("--cv", required=True, type=pathlib.Path,
                    help="the nested-CV workdir of the same recipe")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--drop-older", action="store_true",
                    help="remove the grader versions this one supersedes")
    args = ap.parse_args(argv)
    from spoils_tf.classical import io as cio
    from spoils_tf.serve import assemble, bundle

    _, side = cio.load_classifier(args.final)
    facts = side["extra"]["nested_cv_final"]
    target, family, source = facts["target"], facts["family"], facts["mask_source"]
    summary_path = args.cv / source / target / family / "summary.json"
    if not summary_path.is_file():
        print(f"ship_grader: {summary_path}: no nested-CV summary of this recipe", file=sys.stderr)
        return 2
    summary = json.loads(summary_path.read_text())
    final_workdir = args.final.parents[4]     # <workdir>/final/<source>/<target>/<family>/
    config = json.loads((final_workdir / "config.json").read_text())
    chosen = facts["chosen"]["name"]
    recipe = (f"{chosen} on the {family} features of each disc ({len(facts['selected_features'])} "
              f"kept by L1 selection), target {target} ({len(side['classes'])} classes), chosen "
              f"by inner {facts['inner_k']}-fold patient-grouped CV on {facts['n_train']} discs "
              f"of {facts['n_patients']} patients ({facts['selection_metric']}); features from "
              f"{source} masks (`spoils_tf.train.grade_nested_lib.fit_final`)")
    command = (f"python -m experiments.grade_nested --config=configs/grade_nested.py:cpu "
               f"--fold=final --config.targets='(\"{target}\",)' "
               f"--config.families='(\"{family}\",)' "
               f"--config.data.mask_source={source} "
               f"--config.data.features_path={config['data']['features_path']} "
               f"--config.data.radiomics_path={config['data']['radiomics_path']} "
               f"--config.data.folds_path={config['data']['folds_path']} "
               f"--workdir={final_workdir} (its cross-validation: the same with --fold=all "
               f"--workdir={args.cv})")
    abst = facts.get("abstention") or {}
    cv = {"mask_source": source, "n_discs": summary["summary"]["n"],
          "n_patients": summary["summary"]["n_patients"], "folds": summary["folds"],
          "chosen_per_fold": summary["chosen_per_fold"],
          "metrics": summary["summary"]["metrics"], "abstention": summary.get("abstention")}
    extra = {"training_data": ship_models.SPIDER_ATTRIBUTION, "licence": ship_models.LICENCE,
             "intended_use": ("Research: grades each disc the segmentation found (Pfirrmann x "
                              "the SPIDER severity proxy) for decision support. Not a medical "
                              "device."),
             "limits": ("32 patients of one scanner and sequence; 11-class accuracy well below "
                        "the paper's; the severity letter is a proxy built from SPIDER's "
                        "findings, not a clinical grade. Probabilities were calibrated on "
                        "SPIDER only. Training used the median of each feature over the 3 "
                        "slices nearest each disc's middle; the predictor averages the "
                        "probabilities of the slices it reads."),
             "recipe": recipe, "command": command, "calibrated": True,
             "calibration_method": facts["calibration"], "cross_validation": cv}
    if abst:
        from spoils_tf.classical import abstention
        pooled = (summary.get("abstention") or {}).get("pooled") or {"acted": 0,
                                                                     "over_treating": 0}
        gate = abstention.deployment_threshold(abst, pooled)
        extra["intervention_min_probability"] = gate["threshold"]
        extra["intervention_threshold_reason"] = gate["reason"]
        extra["intervention_threshold_inner_choice"] = float(abst["threshold"])
    published = assemble.assemble_bundle(args.out, geometry=args.final, card_extra=extra)
    if args.drop_older:
        ship_models.drop_older(args.out, published)
    version_dir = published[bundle.GEOMETRY]
    card = bundle.read_card(version_dir)
    md_path = args.out / "MODEL_CARD.md"
    section = grader_section(card, str(version_dir.relative_to(args.out) / card["model_file"]))
    md_path.write_text(replace_grader_section(md_path.read_text(), section))
    print(f"{bundle.GEOMETRY}: {version_dir}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
