"""Figure of converted SPIDER slices: 14-class overlays with a legend of class names.

    python tools/spider_overlays.py --dir /tmp/spider_conv [--slices 11:64 152:74 ...] \
        [--out /tmp/spider_conv/overlays.png]

Reads ``DIR/labelme/<patient>/<patient>_slice<k>.json`` (written by ``spoils convert-spider``)
and shows each image next to its overlay (``spoils_tf.serve.overlay.overlay``, colours from
``spoils_tf.labels``). The default slices are the hard cases of the SPIDER sample: a thin
L5-S1 split into pieces (11), a patient with a disc below L5-S1 (152), a lateral slice with
6 discs (141) and one whose lowest discs are missing (50, levels from the reference slice).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as mpatches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spoils_tf import labels  # noqa: E402
from spoils_tf.serve import overlay
from spoils_tf.data import labelme_io, layout  # noqa: E402

DEFAULT_SLICES = ("11:64", "152:74", "141:60", "50:93")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True, help="dataset dir written by convert-spider")
    parser.add_argument("--slices", nargs="+", default=list(DEFAULT_SLICES),
                        help="patient:slice pairs")
    parser.add_argument("--out", default=None, help="PNG path (default DIR/overlays.png)")
    args = parser.parse_args(argv)
    root = pathlib.Path(args.dir)
    out = pathlib.Path(args.out) if args.out else root / "overlays.png"
    fig, axes = plt.subplots(1, len(args.slices), figsize=(4.2 * len(args.slices), 6.2))
    axes = np.atleast_1d(axes)
    for ax, spec in zip(axes, args.slices):
        patient, k = spec.split(":")
        path = layout.labelme_json_path(root, patient, int(k))
        rec = labelme_io.read_labelme(path, root)
        ax.imshow(overlay.overlay(rec.image, rec.mask, alpha=0.55))
        present = [labels.SEG_NAMES[i] for i in np.unique(rec.mask) if i != labels.BACKGROUND_ID]
        ax.set_title(f"patient {patient}, slice {k}\n{len(present)} classes", fontsize=10)
        ax.axis("off")
    handles = [mpatches.Patch(color=np.asarray(c.color) / 255.0, label=c.name)
               for c in labels.SEG_CLASSES if c.id != labels.BACKGROUND_ID]
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=9, frameon=False)
    fig.suptitle("SPIDER -> 14 classes (anterior left, posterior right; S1 not labelled in SPIDER)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
