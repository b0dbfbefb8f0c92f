"""Overlays of held-out mid slices from a cross-validated segmentation run.

    .venv/bin/python tools/seg_cv_overlays.py --workdir runs/seg_unet_spider_cpu \
        --data runs/data/spider --tfds runs/tfds --n 6 --out runs/seg_unet_spider_cpu/overlays.png

For each of ``--n`` held-out patients (spread over the folds; with fewer held-out patients than
``--n``, the next slices off each patient's middle) the slice nearest the patient's middle is
segmented by the fold model that never saw that patient (``fold_<i>/model.keras``,
through ``segmenter.SpacingSegmenter`` with ``orientation=as_is`` and the level labelling) and
shown as three panels: the slice, the annotation, the prediction (with its 14-class Dice and
level flags in the title). One PNG grid.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, type=pathlib.Path)
    ap.add_argument("--data", required=True, type=pathlib.Path, help="spoils dataset dir")
    ap.add_argument("--tfds", required=True, type=pathlib.Path, help="TFDS data dir")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spoils_tf.serve import overlay, segmenter
    from spoils_tf.data import folds as folds_lib, tfds_builder
    from spoils_tf.metrics import segmentation as seg_metrics
    from spoils_tf.train import seg_spacing_lib

    config = json.loads((args.workdir / "config.json").read_text())
    target = float(config["data"]["target_spacing_mm"])
    folds = folds_lib.load_folds(args.data / "folds.json")
    examples, _ = tfds_builder.load_dataset(args.data, args.tfds, "spider")
    rows = {}
    for ex in examples.as_numpy_iterator():
        rows.setdefault(ex["patient"].decode(), []).append((int(ex["slice"]), ex["key"].decode(), ex))
    trained = sorted(int(p.parent.name.split("_")[1]) for p in args.workdir.glob("fold_*/model.keras"))
    if not trained:
        raise SystemExit(f"{args.workdir}: no fold_*/model.keras")
    # (fold, patient, rank): round-robin over the trained folds' held-out patients; when there
    # are fewer patients than --n, further rounds take each patient's next slice off the middle
    picks = []
    held_out = [(f, p) for f in trained for p in folds.split(f)[1]]
    rank = 0
    while len(picks) < args.n and rank < 5:
        picks += [(f, p, rank) for f, p in held_out][: args.n - len(picks)]
        rank += 1
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3.6 * len(picks)))
    axes = np.atleast_2d(axes)
    segmenters = {}
    for row, (fold, patient, rank) in enumerate(picks):
        if fold not in segmenters:
            segmenters[fold] = segmenter.SpacingSegmenter(
                    args.workdir / f"fold_{fold}" / "model.keras", target, orientation="as_is")
        items = rows[patient]
        nearest = seg_spacing_lib.middle_keys({patient: [(i, k) for i, k, _ in items]}, rank + 1)
        previous = seg_spacing_lib.middle_keys({patient: [(i, k) for i, k, _ in items]}, rank)
        ex = next(e for _, k, e in items if k in nearest - previous)
        grey, truth = ex["image"][..., 0], ex["mask"][..., 0].astype(np.int32)
        seg = segmenters[fold](grey, tuple(float(v) for v in ex["pixel_spacing_mm"]))
        m = seg_metrics.SegmentationMetrics()
        m.update(truth, seg.label_map)
        dice = m.result()["dice/fg_macro"]
        for ax, img, title in zip(axes[row], (np.stack([grey] * 3, -1), overlay.overlay(grey, truth),
                                              overlay.overlay(grey, seg.label_map)),
                                  (f"patient {patient} slice {int(ex['slice'])} (fold {fold})",
                                   "annotation", f"prediction, Dice {dice:.3f}")):
            ax.imshow(img)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        if seg.levels.flags:
            axes[row][2].text(0, grey.shape[0] + 5, "\n".join(seg.levels.flags)[:300],
                              fontsize=6, va="top")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
