"""Held-out Dice against CPU training minutes, for the segmentation recipes compared.

    .venv/bin/python tools/seg_curve.py --run "U-Net 0.75 mm patches=runs/seg_unet_spider_cpu" \
        --run "DeepLabV3+ mini, same recipe=runs/seg_dlv3_spider_cpu" \
        --point "old cpu config (DeepLabV3+ mini 256², 5 slices/patient)=4.2:0.563" \
        --out runs/seg_curve

Reads every ``fold_<i>/curve.csv`` of each run (``spoils_tf.train.seg_spacing_lib``: held-out
middle-slice scores at training checkpoints) and plots the 14-class and tissue fg-macro Dice
against training minutes (one line per fold, the fold mean as markers). ``--point`` adds a
recipe measured once (minutes:Dice), e.g. from an older table. Writes ``<out>.png`` and
``<out>.md`` (a table of every point).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import pandas as pd


def read_run(workdir: pathlib.Path) -> pd.DataFrame:
    """All folds' ``curve.csv`` rows of one run, with a ``fold`` column.

    Raises:
      FileNotFoundError: no ``fold_*/curve.csv`` under ``workdir``.
    """
    frames = []
    for path in sorted(workdir.glob("fold_*/curve.csv")):
        df = pd.read_csv(path)
        df["fold"] = int(path.parent.name.split("_")[1])
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"{workdir}: no fold_*/curve.csv (train with "
                                "--config.train.eval_every_epochs=N)")
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], help="LABEL=WORKDIR")
    ap.add_argument("--point", action="append", default=[], help="LABEL=MINUTES:DICE")
    ap.add_argument("--out", required=True, type=pathlib.Path, help="output path without suffix")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    rows = ["| recipe | fold | step | training minutes | 14-class Dice | tissue Dice | level acc. (raw) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for i, spec in enumerate(args.run):
        label, _, workdir = spec.partition("=")
        df = read_run(pathlib.Path(workdir))
        color = f"C{i}"
        for ax, key in zip(axes, ("dice_fg_macro", "tissue_dice_fg_macro")):
            for fold, g in df.groupby("fold"):
                ax.plot(g["train_minutes"], g[key], color=color, alpha=0.3, lw=1)
            mean = df.groupby("step")[[key, "train_minutes"]].mean()
            ax.plot(mean["train_minutes"], mean[key], "o-", color=color, label=label)
        for r in df.sort_values(["fold", "step"]).itertuples():
            rows.append(f"| {label} | {r.fold} | {r.step} | {r.train_minutes:.1f} | "
                        f"{r.dice_fg_macro:.3f} | {r.tissue_dice_fg_macro:.3f} | {r.level_accuracy:.3f} |")
    for j, spec in enumerate(args.point):
        label, _, value = spec.partition("=")
        minutes, dice = (float(v) for v in value.split(":"))
        axes[0].plot([minutes], [dice], "s", color=f"C{len(args.run) + j}", label=label)
        rows.append(f"| {label} | – | – | {minutes:.1f} | {dice:.3f} | – | – |")
    for ax, title in zip(axes, ("14-class fg-macro Dice", "tissue fg-macro Dice (bodies/discs/canal)")):
        ax.set_xlabel("training minutes (2 CPU cores)")
        ax.set_title(f"held-out {title}, middle 5 slices")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    args.out.with_suffix(".md").write_text("\n".join(rows) + "\n")
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
