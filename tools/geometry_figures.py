"""Figures for the geometry closing note.

    python tools/geometry_figures.py --features FEATURES.parquet --data DATASET_DIR --out DIR
                                     [--slice PATIENT:SLICE]

1. ``DIR/geometry_vs_pfirrmann.png``: disc height index and CSF-normalised disc signal
   (``disc_si_csf_ratio``) against the Pfirrmann grade. One point per disc (patient, level):
   the median over that disc's slices with a valid value (slices of one disc are not
   independent). Spearman's rho (scipy) is printed and written to
   ``DIR/geometry_vs_pfirrmann.json``; rows with NaN are left out and counted.
2. ``DIR/measured_slice.png``: one slice (default: the first patient's middle slice) with the
   measured lines drawn: per disc the anterior / central / posterior heights (t = 0.1, 0.5,
   0.9, green), the mid-point width through the centroid (yellow), the central height of the
   vertebral bodies above/below (blue) and the canal chord on the disc mid-line (magenta).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import cv2
import numpy as np
import pandas as pd

from spoils_tf.serve import overlay
from spoils_tf.data import layout
from spoils_tf.geometry import features, measure
from spoils_tf.geometry.extents import Extent
from spoils_tf.geometry.frame import Frame


def plot_vs_pfirrmann(table: pd.DataFrame, out_dir: pathlib.Path) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    t = table[table["pfirrmann"].notna()].copy()
    t["pfirrmann"] = t["pfirrmann"].astype(int)
    result = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, col, label in zip(axes, ("disc_height_index", "disc_si_csf_ratio"),
                              ("disc height index", "disc signal / CSF signal")):
        per_disc = (t.dropna(subset=[col]).groupby(["patient", "level"])
                    .agg(value=(col, "median"), pfirrmann=("pfirrmann", "first")).reset_index())
        n_rows_nan = int(t[col].isna().sum())
        rho, p = stats.spearmanr(per_disc["pfirrmann"], per_disc["value"])
        rho_rows, p_rows = stats.spearmanr(t.dropna(subset=[col])["pfirrmann"],
                                           t.dropna(subset=[col])[col])
        result[col] = {"spearman_rho_per_disc": float(rho), "p_per_disc": float(p),
                       "n_discs": int(len(per_disc)), "spearman_rho_per_slice": float(rho_rows),
                       "p_per_slice": float(p_rows), "n_slice_rows": int(t[col].notna().sum()),
                       "n_slice_rows_nan": n_rows_nan,
                       "median_by_grade": {int(g): float(v) for g, v in
                                           per_disc.groupby("pfirrmann")["value"].median().items()},
                       "n_by_grade": {int(g): int(v) for g, v in
                                      per_disc.groupby("pfirrmann")["value"].size().items()}}
        grades = sorted(per_disc["pfirrmann"].unique())
        data = [per_disc.loc[per_disc["pfirrmann"] == g, "value"].to_numpy() for g in grades]
        ax.boxplot(data, positions=grades, widths=0.5, showfliers=False)
        rng = np.random.default_rng(0)
        for g, d in zip(grades, data):
            ax.scatter(g + rng.uniform(-0.15, 0.15, len(d)), d, s=8, alpha=0.6)
        ax.set_xlabel("Pfirrmann grade")
        ax.set_ylabel(label + " (median over slices)")
        ax.set_title(f"{label}: Spearman rho = {rho:.2f} (p = {p:.1e}, n = {len(per_disc)} discs)",
                     fontsize=8)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "geometry_vs_pfirrmann.png", dpi=120)
    plt.close(fig)
    (out_dir / "geometry_vs_pfirrmann.json").write_text(json.dumps(result, indent=2))
    return result


def _pt(fr: Frame, a: float, b: float, spacing, scale: float) -> tuple[int, int]:
    r, c = fr.to_pixel(a, b, spacing)
    return int(round(c * scale)), int(round(r * scale))


def _column_span(ext: Extent, a: float) -> tuple[float, float]:
    """(b_bottom, b_top) of the inside run at position a (mm)."""
    g = ext.grid
    i = min(max(int(round((a - g.a0) / g.step)), 0), g.values.shape[1] - 1)
    rows = np.flatnonzero(g.values[:, i] >= 0.5)
    return g.b1 - (rows[-1] + 0.5) * g.step, g.b1 - (rows[0] - 0.5) * g.step


def _row_span(ext: Extent, b: float) -> tuple[float, float]:
    g = ext.grid
    j = min(max(int(round((g.b1 - b) / g.step)), 0), g.values.shape[0] - 1)
    cols = np.flatnonzero(g.values[j] >= 0.5)
    return g.a0 + (cols[0] - 0.5) * g.step, g.a0 + (cols[-1] + 0.5) * g.step


def draw_measured_slice(data: pathlib.Path, patient: str, slice_index: int,
                        out_path: pathlib.Path, scale: int = 2) -> list[dict]:
    from spoils_tf.data.labelme_io import read_labelme
    rec = read_labelme(layout.labelme_json_path(data, patient, slice_index))
    spacing = features.spacing_for(rec, features.read_patient_table(data))
    results = measure.measure_slice_detailed(rec.mask, spacing, rec.image)
    rgb = overlay.overlay(rec.image, rec.mask, alpha=0.25)
    big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    big = np.ascontiguousarray(big)
    for res in results:
        if res.geometry is None:
            continue
        geo = res.geometry
        fr, ext = geo.frame, geo.extent
        for t in (0.1, 0.5, 0.9):
            a = ext.a_ant + t * (ext.a_post - ext.a_ant)
            b0, b1 = _column_span(ext, a)
            cv2.line(big, _pt(fr, a, b0, spacing, scale), _pt(fr, a, b1, spacing, scale),
                     (0, 255, 0), 1, cv2.LINE_AA)
        a0, a1 = _row_span(ext, 0.0)
        cv2.line(big, _pt(fr, a0, 0.0, spacing, scale), _pt(fr, a1, 0.0, spacing, scale),
                 (255, 255, 0), 1, cv2.LINE_AA)
        for side, vfr in geo.vert_frames.items():
            vext = geo.vert_extents[side]
            a = vext.a_ant + 0.5 * (vext.a_post - vext.a_ant)
            b0, b1 = _column_span(vext, a)
            cv2.line(big, _pt(vfr, a, b0, spacing, scale), _pt(vfr, a, b1, spacing, scale),
                     (60, 120, 255), 1, cv2.LINE_AA)
        if geo.canal_run is not None:
            cv2.line(big, _pt(fr, geo.canal_run[0], 0.0, spacing, scale),
                     _pt(fr, geo.canal_run[1], 0.0, spacing, scale), (255, 0, 255), 1, cv2.LINE_AA)
        x, y = _pt(fr, ext.a_post + 14.0, 0.0, spacing, scale)
        v = res.values
        cv2.putText(big, f"{v['level']} h={v['disc_height_mm']:.1f} w={v['disc_width_mm']:.1f} "
                         f"DHI={v['disc_height_index']:.2f}", (x, y), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (255, 255, 255), 1, cv2.LINE_AA)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    return [r.values for r in results]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", required=True, help="features.parquet from spoils features")
    ap.add_argument("--data", required=True, help="the dataset directory it was made from")
    ap.add_argument("--out", required=True, help="output directory for the PNGs + JSON")
    ap.add_argument("--slice", default=None, help="PATIENT:SLICE to draw (default: first "
                    "patient's middle slice)")
    args = ap.parse_args(argv)
    table = pd.read_parquet(args.features)
    out = pathlib.Path(args.out)
    res = plot_vs_pfirrmann(table, out)
    for col, r in res.items():
        print(f"{col}: Spearman rho vs Pfirrmann = {r['spearman_rho_per_disc']:.3f} "
              f"(p = {r['p_per_disc']:.2g}, n = {r['n_discs']} discs; per slice row "
              f"rho = {r['spearman_rho_per_slice']:.3f}, n = {r['n_slice_rows']}); "
              f"median by grade {r['median_by_grade']} n {r['n_by_grade']}")
    if args.slice:
        patient, k = args.slice.rsplit(":", 1)
        k = int(k)
    else:
        patient = sorted(table["patient"].unique())[0]
        ks = sorted(table.loc[table["patient"] == patient, "slice"].unique())
        k = int(ks[len(ks) // 2])
    rows = draw_measured_slice(pathlib.Path(args.data), patient, k, out / "measured_slice.png")
    for r in rows:
        print(f"  {patient} slice {k} {r['level']}: height {r['disc_height_mm']:.2f} mm, "
              f"width {r['disc_width_mm']:.2f} mm, DHI {r['disc_height_index']:.3f}, "
              f"canal {r['canal_ap_diameter_mm']:.2f} mm, reason '{r['reason']}'")
    print(f"wrote {out}/geometry_vs_pfirrmann.png, .json and measured_slice.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
