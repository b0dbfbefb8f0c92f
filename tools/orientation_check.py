"""Does the orientation check undo flipped slices? Held-out slices, each given in the four
orientations of ``spoils_tf.levels.ORIENTATIONS``.

    .venv/bin/python tools/orientation_check.py --workdir runs/seg_dlv3_spider_cpu_cv1200 --fold 0 1 2 3 4 5 6 7 \
        --data runs/data/spider --tfds runs/tfds --out runs/seg_dlv3_spider_cpu_cv1200/orientation.json

The fold model (``fold_<k>/model.keras``, which never saw these patients) segments the middle
``--slices`` slices of each held-out patient after ``levels.orient(slice, t)`` for every
transform ``t``, through ``segmenter.SpacingSegmenter(orientation="auto")``; with
``--orientation-workdir`` (an ``experiments.orientation`` CV run on the same folds) that fold's
orientation network decides, as in the shipped bundle, otherwise the anatomy of four passes.
Since each transform is its own inverse, the answer is right when the segmenter undoes exactly
``t``; otherwise it refused (``OrientationError``: the safe outcome) or chose wrong (the
dangerous one: levels reversed). Prints and saves the counts per transform.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from spoils_tf import fileio


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, type=pathlib.Path)
    ap.add_argument("--fold", type=int, nargs="+", required=True,
                    help="one or more folds; each fold's model on its own held-out patients")
    ap.add_argument("--data", required=True, type=pathlib.Path)
    ap.add_argument("--tfds", required=True, type=pathlib.Path)
    ap.add_argument("--slices", type=int, default=5, help="middle slices per patient")
    ap.add_argument("--orientation-workdir", type=pathlib.Path,
                    help="experiments.orientation CV workdir: use its fold_<k>/model.keras")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    args = ap.parse_args(argv)
    from tqdm.auto import tqdm

    from spoils_tf import levels
    from spoils_tf.serve import segmenter
    from spoils_tf.data import folds as folds_lib, tfds_builder
    from spoils_tf.train import seg_spacing_lib

    config = json.loads((args.workdir / "config.json").read_text())
    examples, _ = tfds_builder.load_dataset(args.data, args.tfds, "spider")
    by_patient = {}
    for ex in examples.as_numpy_iterator():
        by_patient.setdefault(ex["patient"].decode(), []).append(
                (int(ex["slice"]), ex["key"].decode(), ex))
    folds = folds_lib.load_folds(args.data / "folds.json")
    total = {t: {"right": 0, "refused": 0, "wrong": 0} for t in levels.ORIENTATIONS}
    result = {"folds": {}, "slices": 0, "counts": total, "wrong": []}
    for fold in args.fold:
        net, threshold = None, segmenter.DEFAULT_ORIENTATION_THRESHOLD
        if args.orientation_workdir is not None:
            from spoils_tf.models import orientation
            o_config = json.loads((args.orientation_workdir / "config.json").read_text())
            net = orientation.OrientationNet.load(
                    args.orientation_workdir / f"fold_{fold}" / "model.keras",
                    float(o_config["model"]["pixel_mm"]))
            threshold = float(o_config["eval"]["threshold"])
        run = segmenter.SpacingSegmenter(args.workdir / f"fold_{fold}" / "model.keras",
                                         float(config["data"]["target_spacing_mm"]),
                                         orientation_net=net,
                                         orientation_threshold=threshold)
        _, test = folds.split(fold)
        rows = {p: v for p, v in by_patient.items() if p in test}
        keep = seg_spacing_lib.middle_keys({p: [(i, k) for i, k, _ in v] for p, v in rows.items()},
                                           args.slices)
        cases = [ex for v in rows.values() for _, k, ex in v if k in keep]
        counts = {t: {"right": 0, "refused": 0, "wrong": 0} for t in levels.ORIENTATIONS}
        for ex in tqdm(cases, desc=f"orientation fold {fold}", unit="slice"):
            grey = ex["image"][..., 0]
            spacing = tuple(float(v) for v in ex["pixel_spacing_mm"])
            for t in levels.ORIENTATIONS:
                try:
                    seg = run(np.ascontiguousarray(levels.orient(grey, t)), spacing)
                except segmenter.OrientationError:
                    outcome = "refused"
                else:
                    outcome = "right" if seg.orientation == t else "wrong"
                    if outcome == "wrong":
                        result["wrong"].append({"fold": fold, "key": ex["key"].decode(),
                                                "given": t, "undone": seg.orientation})
                counts[t][outcome] += 1
                total[t][outcome] += 1
        result["folds"][fold] = {"slices": len(cases), "counts": counts}
        result["slices"] += len(cases)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_json(args.out, result)
    for fold, r in result["folds"].items():
        print(f"fold {fold}: " + "; ".join(f"{t} {c['right']}/{c['refused']}/{c['wrong']}"
                                           for t, c in r["counts"].items())
              + f" (right/refused/wrong of {r['slices']})")
    for t, c in total.items():
        print(f"given {t:8s}: right {c['right']}, refused {c['refused']}, wrong {c['wrong']} "
              f"(of {result['slices']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
