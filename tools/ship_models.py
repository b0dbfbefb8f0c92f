"""Publishes the shipped model bundle (``spoils_tf/weights``) with its model card.

    .venv/bin/python tools/ship_models.py \
        --seg runs/seg_dlv3_spider_cpu/final/model.keras \
        --cv runs/seg_dlv3_spider_cpu_cv1200 \
        --geometry-results runs/grade_geometry_logreg/patient/results.md \
        --orientation runs/orientation_cv/final/model.keras \
        --out spoils_tf/weights --drop-older

Runs ``spoils bundle`` (``assemble.assemble_bundle``, ``seg_format="keras"``: the ``.keras``
file alone, its sha256 on the card) as the next version, with ``--geometry`` the grader too
(otherwise the grader already in ``--out`` stays), and ``--drop-older`` removes the versions
it superseded; card fields for both models: training data and its
CC BY 4.0 attribution, recipe, command, the cross-validated numbers of the recipe (every
``fold_<k>/metrics.json`` under ``--cv``, mean ± SD over the folds that exist, with their
count), intended use and limits; with ``--orientation`` the orientation network (trained on
all patients; its cross-validation is ``cv_summary.json`` in its workdir) is copied into the
segmentation version with its sha256, pixel size and threshold on the card. Then writes
``<out>/MODEL_CARD.md`` from the same fields.
The numbers are read from the runs, never typed in.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

SPIDER_ATTRIBUTION = (
        "SPIDER lumbar spine MRI (van der Graaf JW et al., 'Lumbar spine segmentation in MR "
        "images: a dataset and a public benchmark', Scientific Data 11:264 (2024), "
        "doi:10.1038/s41597-024-03090-w; data doi:10.5281/zenodo.10159290), CC BY 4.0. The 32 "
        "patients of the project's shared sample (sagittal T2-SPACE slices, Siemens 1.5 T, "
        "0.47 mm pixels), as published in github.com/istiak769/Lumbar-Spine-MRI-Segementation.")
LICENCE = ("Weights derived from SPIDER (CC BY 4.0): redistribute with the attribution above. "
           "Code: Apache-2.0.")
INTENDED_USE = (
        "Research: segmentation of a sagittal T2 lumbar MRI slice into vertebral bodies L1-L5, "
        "discs T12-L1..L5-S1 and the spinal canal, as the first stage of spoils predict. Not a "
        "medical device; every level it names is to be checked by a reader.")
LIMITS = (
        "Trained on 32 patients from one vendor and one sequence (Siemens T2-SPACE, 1.5 T); "
        "scans from other scanners and ordinary 2D T2 TSE were not seen in training (augmentation "
        "only) and are not measured here. The sacrum (S1) and T12 are never labelled (SPIDER "
        "does not label them). Levels are counted from the lowest lumbar disc (L5-S1) by "
        "spoils_tf.levels; a transitional vertebra or a missing lowest disc can shift every "
        "level: the report flags what it sees but cannot rule this out. The cross-validation "
        "below covers only the folds listed; its per-fold training budget is stated.")
HEADLINE = ("tissue/dice/fg_macro", "tissue/dice/vertebra", "tissue/dice/disc",
            "tissue/dice/canal", "dice/fg_macro", "level_accuracy", "disc_detection")


def cv_summary(cv_dir: pathlib.Path) -> dict:
    """Mean, SD and fold count of the headline metrics over ``cv_dir/fold_*/metrics.json``."""
    folds = {}
    for path in sorted(cv_dir.glob("fold_*/metrics.json")):
        folds[int(path.parent.name.split("_")[1])] = json.loads(path.read_text())
    if not folds:
        raise SystemExit(f"{cv_dir}: no fold_*/metrics.json; run the cross-validation first")
    out = {"folds": sorted(folds), "of_k": 8, "steps_per_fold": sorted({int(m["steps"]) for m in folds.values()}),
           "train_minutes_per_fold": [round(m["train_seconds"] / 60.0, 1) for m in folds.values()],
           "metrics": {}}
    for subset in ("middle", "all"):
        for variant in ("raw", "levels"):
            for key in HEADLINE:
                vals = [m.get(f"{subset}/{variant}/{key}") for m in folds.values()]
                vals = [v for v in vals if v is not None and not math.isnan(v)]
                if vals:
                    mean = sum(vals) / len(vals)
                    sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
                    out["metrics"][f"{subset}/{variant}/{key}"] = {"mean": round(mean, 4),
                                                                   "sd": round(sd, 4), "n": len(vals)}
    return out


def describe_network(model: dict) -> str:
    """One phrase for the network of a saved segmentation config (``config.json["model"]``)."""
    kw = model["kwargs"]
    if model["name"] == "unet":
        return f"2D U-Net {tuple(kw['filters'])} conv-BN-LeakyReLU"
    if model["name"] == "deeplabv3plus":
        return (f"DeepLabV3+ on the {kw['encoder']} residual encoder {tuple(kw['encoder_filters'])}, "
                f"output stride {kw['output_stride']}, ASPP {kw['aspp_filters']} filters at rates "
                f"{tuple(kw['atrous_rates'])}, decoder {kw['decoder_filters']}")
    return model["name"]


def describe_recipe(config: dict) -> str:
    """The training recipe of a fixed-spacing segmentation run, from its saved ``config.json``."""
    t, d = config["train"], config["data"]
    return (f"{describe_network(config['model'])}, one input channel; every slice resampled to "
            f"{d['target_spacing_mm']} mm, random {tuple(d['patch_size'])} patches with "
            f"augmentation (spoils_tf/data/spacing_pipeline.py), {t['loss']}, Adam "
            f"{t['learning_rate']} with {t['warmup_steps']} warm-up steps and {t['schedule']} "
            f"decay over {t['steps']} steps of batch {t['batch_size']}; levels assigned after "
            "the network by spoils_tf/levels.py")


def add_orientation(version_dir: pathlib.Path, model: pathlib.Path) -> dict:
    """Saves the orientation network (without optimizer state) into ``version_dir`` and puts
    its fields on the card; returns the card."""
    import spoils_tf.models
    from spoils_tf import fileio
    from spoils_tf.serve import bundle
    workdir = model.parent.parent
    config = json.loads((workdir / "config.json").read_text())
    cv = json.loads((workdir / "cv_summary.json").read_text())
    if len(cv["folds_done"]) < 8:
        raise SystemExit(f"{workdir}: cross-validation has folds {cv['folds_done']}; finish it")
    target = version_dir / "orientation.keras"
    # loaded uncompiled and saved again: the weights without the optimizer state
    fileio.atomic_save_keras(spoils_tf.models.load_model(model, compile=False), target)
    card = bundle.read_card(version_dir)
    module, _, experiment = config["experiment"].partition(":")
    card.update({
            "orientation_model": target.name, "orientation_sha256": fileio.sha256_file(target),
            "orientation_pixel_mm": float(config["model"]["pixel_mm"]),
            "orientation_threshold": float(config["eval"]["threshold"]),
            "orientation_command": (f"python -m experiments.orientation --config=configs/{module}.py:"
                                    f"{experiment} --fold=final --config.data.labelme_dir="
                                    f"runs/data/spider --workdir={workdir}"),
            "orientation_cross_validation": cv})
    bundle.write_card(version_dir, card)
    return card


def orientation_markdown(card: dict) -> list[str]:
    """The model card's section on the orientation network (empty without one)."""
    cv = card.get("orientation_cross_validation")
    if not cv:
        return []
    rows = ["| held-out slices | cases (slices x 4 flips) | top-1 accuracy, mean ± SD over folds "
            "| right | refused | wrong |", "| --- | --- | --- | --- | --- | --- |"]
    for name in ("middle", "all"):
        r = cv[name]
        rows.append(f"| {name} | {r['cases']} | {r['top1_mean']:.3f} ± {r['top1_sd']:.3f} | "
                    f"{r['right']} | {r['refused']} | {r['wrong']} |")
    return [f"## Orientation network (`{card['orientation_model']}`, beside the segmentation model)",
            "A small CNN (spoils_tf/models/orientation.py) that names which of four flips (as is, "
            "mirrored left-right, upside down, rotated 180 degrees) a 2-D picture was given in, from "
            f"the whole slice at {card['orientation_pixel_mm']:g} mm pixels. A picture is corrected "
            f"when its top probability is at least {card['orientation_threshold']:g} and the "
            "corrected segmentation puts the canal behind the bodies; otherwise it is refused. "
            "DICOM series and volumes are put in display orientation from their direction cosines; "
            "there a confident disagreement of this network only marks the levels as doubtful.",
            f"- **Command:** `{card['orientation_command']}`",
            f"- **sha256** (checked at every load): `{card['orientation_sha256']}`", "",
            f"Patient-grouped CV over the folds {cv['folds_done']} of `folds.json`, every held-out "
            "slice given in each of the four flips:", "", *rows, ""]


def card_markdown(seg_card: dict, grader_md: str, seg_file: str) -> str:
    cv = seg_card["cross_validation"]
    rows = ["| metric | middle 5 slices, network | middle 5, after level labelling | all slices, network | all slices, after labelling |",
            "| --- | --- | --- | --- | --- |"]
    for key in HEADLINE:
        cells = []
        for subset in ("middle", "all"):
            for variant in ("raw", "levels"):
                r = cv["metrics"].get(f"{subset}/{variant}/{key}")
                if r is None:
                    cells.append("n/a")
                else:   # one fold has no spread to show
                    cells.append(f"{r['mean']:.3f}" if r["n"] == 1 else f"{r['mean']:.3f} ± {r['sd']:.3f}")
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join([
            "# Model card: shipped spoils-tf models (`spoils_tf/weights`)", "",
            "Generated by `tools/ship_models.py` from the training runs; do not edit by hand.", "",
            f"## Segmentation (`{seg_file}`)",
            f"- **Training data:** {seg_card['training_data']}",
            f"- **Licence:** {seg_card['licence']}",
            f"- **Recipe:** {seg_card['recipe']}",
            f"- **Command:** `{seg_card['command']}`",
            f"- **sha256** (checked at every load): `{seg_card['sha256']}`",
            f"- **Intended use:** {seg_card['intended_use']}",
            f"- **Limits:** {seg_card['limits']}", "",
            f"### Cross-validated numbers (patient-grouped folds of `folds.json`: folds "
            f"{cv['folds']} of {cv['of_k']}; {cv['steps_per_fold']} steps per fold, "
            f"{cv['train_minutes_per_fold']} training minutes)",
            "Mean ± SD over the folds listed (a single value when one fold); each fold's model never saw "
            "its 4 test patients. `tissue` merges bodies, discs and canal; `level_accuracy` is the "
            "share of annotated discs whose predicted disc pixels name the right level; "
            "`disc_detection` the share of annotated discs at least half covered by predicted disc.", "",
            *rows, "",
            *orientation_markdown(seg_card), grader_md, ""])


def drop_older(out: pathlib.Path, published: dict) -> None:
    """Removes every version of each published model but the one just published
    (``published``: bundle name -> its new version directory)."""
    import shutil
    from spoils_tf.serve import bundle
    for name, path in published.items():
        for version in bundle.versions(out / name):
            if version != int(path.name):
                shutil.rmtree(out / name / str(version))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seg", required=True, type=pathlib.Path)
    ap.add_argument("--cv", required=True, type=pathlib.Path, help="the recipe's CV workdir")
    ap.add_argument("--geometry", type=pathlib.Path,
                    help="the grader to publish (default: keep the one already in --out)")
    ap.add_argument("--geometry-results", required=True, type=pathlib.Path,
                    help="the geometry experiment's results.md (patient-split CV)")
    ap.add_argument("--orientation", type=pathlib.Path,
                    help="the orientation network (final/model.keras of experiments.orientation)")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--drop-older", action="store_true",
                    help="remove the older versions of the models published now (ship one version)")
    args = ap.parse_args(argv)
    from spoils_tf.serve import assemble, bundle

    workdir = args.seg.parent.parent
    config = json.loads((workdir / "config.json").read_text())
    recipe = describe_recipe(config)
    module, _, experiment = config["experiment"].partition(":")
    command = (f"python -m experiments.seg --config=configs/{module}.py:{experiment} --fold=final "
               f"--config.data.labelme_dir=runs/data/spider --workdir={workdir}")
    geo_rows = [ln.split("|") for ln in args.geometry_results.read_text().splitlines()
                if ln.startswith("| logreg")]
    geo = (f"accuracy {geo_rows[0][4].strip()} %, IoU {geo_rows[0][5].strip()} %, quadratic "
           f"weighted kappa {geo_rows[0][12].strip()}" if geo_rows else "n/a")
    geometry_note = (
            "Logistic regression on the geometry table (11 grade classes: Pfirrmann x the SPIDER "
            "severity proxy), trained on every labelled disc of the same 32 patients "
            "(`python -m experiments.grade_geometry --config=configs/grade_geometry.py:cpu "
            "--config.models='(\"logreg\",)' --config.targets='(\"grade_class\",)'`). "
            f"Patient-grouped 8-fold CV of that model (mean ± SD over folds; pooled kappa with "
            f"its bootstrap CI): {geo}. The severity part is a proxy built "
            "from SPIDER's findings, not a clinical severity grade.")
    extra = {"training_data": SPIDER_ATTRIBUTION, "licence": LICENCE, "intended_use": INTENDED_USE}
    cv = cv_summary(args.cv)
    level = cv["metrics"].get("middle/levels/level_accuracy", {}).get("mean", float("nan"))
    report_note = (f"Level names come from the shipped segmentation model, whose level accuracy "
                   f"on held-out SPIDER patients was {100 * level:.0f} % (folds {cv['folds']} of "
                   f"{cv['of_k']}): check every level on the overlay before acting on a grade.")
    seg_extra = {**extra, "recipe": recipe, "command": command, "limits": LIMITS,
                 "cross_validation": cv, "report_note": report_note}
    published = assemble.assemble_bundle(args.out, seg=args.seg, seg_format="keras",
                                         card_extra=seg_extra)
    if args.geometry is not None:
        # the grader's card gets its own fields (the segmentation recipe does not apply to it)
        published.update(assemble.assemble_bundle(args.out, geometry=args.geometry, card_extra={
                **extra, "recipe": geometry_note, "command": "see recipe",
                "limits": "11-class accuracy about 40 % in patient-grouped CV: a weak grader."}))
    if args.drop_older:
        drop_older(args.out, published)
    seg_card = bundle.read_card(published[bundle.SEG])
    if args.orientation is not None:
        seg_card = add_orientation(published[bundle.SEG], args.orientation)
    seg_file = published[bundle.SEG].relative_to(args.out) / seg_card["model_file"]
    grader_dir = args.out / bundle.GEOMETRY / str(bundle.versions(args.out / bundle.GEOMETRY)[-1])
    grader_card = bundle.read_card(grader_dir)
    grader_file = grader_dir.relative_to(args.out) / grader_card["model_file"]
    if "cross_validation" in grader_card:      # published by tools/ship_grader.py
        import ship_grader
        grader_md = ship_grader.grader_section(grader_card, str(grader_file))
    else:
        grader_md = f"## Geometry grader (`{grader_file}`)\n{geometry_note}"
    (args.out / "MODEL_CARD.md").write_text(card_markdown(seg_card, grader_md, str(seg_file)))
    for name, path in published.items():
        print(f"{name}: {path}")
    print(f"wrote {args.out / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
