"""Tests of the synthetic cohort (spoils_tf.data.synthetic and its modules polygons,
synthetic_anatomy, synthetic_slice, synthetic_render; ``spoils synth``)."""

from __future__ import annotations

import csv
import math
import pathlib

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from spoils_tf import labels
from spoils_tf.data import labelme_io, layout, polygons
from spoils_tf.cli import synth as synth_cmd
from spoils_tf.data import synthetic as sy
from spoils_tf.data import synthetic_anatomy as anatomy
from spoils_tf.data import synthetic_slice as synth_slice
from spoils_tf.geometry.frame import frame_axes, tilt_of, to_world

SEED = 0
SMALL = ["--size", "256", "--pixel-spacing", "1.2", "--no-progress"]


def _read_csv(path: pathlib.Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _tree_bytes(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> pathlib.Path:
    """2 patients x 2 slices at the default 512 px / 0.6 mm (about 3 s)."""
    out = tmp_path_factory.mktemp("synth") / "full"
    assert synth_cmd.main(["--patients", "2", "--slices-per-patient", "2", "--seed", str(SEED),
                    "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    assert synth_cmd.main(["--patients", "2", "--slices-per-patient", "2", "--seed", "7",
                    "--out", str(out)] + SMALL) == 0
    return out


# === Exact geometry on hand-made polygons ===
def test_rasterize_is_the_pixel_centre_rule():
    # a non-convex star; compare with matplotlib's point-in-polygon on pixel centres
    ang = np.linspace(0, 2 * np.pi, 15, endpoint=False)
    rad = np.where(np.arange(15) % 2 == 0, 20.3, 9.7)
    poly = np.stack([31.2 + rad * np.cos(ang), 27.9 + rad * np.sin(ang)], axis=1)
    got = polygons.rasterize(poly, (60, 70))
    yy, xx = np.mgrid[0:60, 0:70]
    want = MplPath(poly).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(60, 70)
    assert got.sum() > 300
    assert np.array_equal(got, want)


def test_rasterize_square_counts_centres():
    # square x, y in [0.5, 4.5]: centres 1..4 in each direction -> 16 pixels, area 16
    sq = np.array([[0.5, 0.5], [4.5, 0.5], [4.5, 4.5], [0.5, 4.5]])
    m = polygons.rasterize(sq, (8, 8))
    assert m.sum() == 16 and m[1:5, 1:5].all()


def test_trapezoid_measures_by_hand():
    # W = 20, h_a = 6, h_p = 4, tilt 0: h(t) = 6 - 2t, mean over [0.1, 0.9] = 5,
    # width: chord 20 for |s| <= 2, 10 * (6 - 2|s|) for 2 < |s| <= 3; central 80 %: |s| <= 2.4
    # -> mean (2 * 20 + 0.4 * (20 + 12) / 2) / 2.4 = 19.333 (the vertebral-body width rule);
    # disc width = area / mean height = 100 / 5 = 20 (the trapezoid's own width)
    poly = to_world(anatomy.disc_local_polygon(20, 6, 4), np.array([50.0, 40.0]), 0.0)
    u, v = frame_axes(0.0)
    m = polygons.measure_in_frame(poly, u, v)
    assert m.height_mm == pytest.approx(5.0)
    assert m.central_height_mm == pytest.approx(5.0)
    assert m.anterior_height_mm == pytest.approx(5.8)
    assert m.posterior_height_mm == pytest.approx(4.2)
    assert m.width_mm == pytest.approx(19.0 + 1 / 3)
    assert m.area_width_mm == pytest.approx(20.0)
    assert m.midpoint_width_mm == pytest.approx(20.0)
    assert m.area_mm2 == pytest.approx(100.0)
    # the same disc tilted by 35 degrees, measured in its own frame: identical numbers
    poly35 = to_world(anatomy.disc_local_polygon(20, 6, 4), np.array([50.0, 40.0]), 35.0)
    m35 = polygons.measure_in_frame(poly35, *frame_axes(35.0))
    assert m35.height_mm == pytest.approx(5.0) and m35.width_mm == pytest.approx(19.0 + 1 / 3)
    assert m35.area_width_mm == pytest.approx(20.0)


def test_bulge_moves_the_posterior_end():
    # W = 20, h_a = h_p = 4, bulge 3: t = 0.9 -> a = -10 + 0.9 * 23 = 10.7, inside the half
    # ellipse, h = 4 * sqrt(1 - (0.7 / 3)^2) = 3.890 (24-gon: within 1 %)
    poly = anatomy.disc_local_polygon(20, 4, 4, bulge_mm=3.0)
    m = polygons.measure_in_frame(poly, np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert m.posterior_height_mm == pytest.approx(4 * math.sqrt(1 - (0.7 / 3) ** 2), rel=0.01)
    assert m.anterior_height_mm == pytest.approx(4.0)
    assert m.area_mm2 == pytest.approx(80 + math.pi * 3 * 2 / 2, rel=0.01)


def test_untilted_disc_height_by_column_count_anisotropic():
    # independent pixel measurement: pixels per column x row spacing, over the central 80 %
    sr, sc = 0.5, 0.8
    poly = to_world(anatomy.disc_local_polygon(36, 11, 7, bulge_mm=2.0), np.array([40.0, 30.0]), 0.0)
    gt = polygons.measure_in_frame(poly, *frame_axes(0.0))
    mask = polygons.rasterize(poly / np.array([sc, sr]), (120, 100))
    cols = np.nonzero(mask.any(0))[0]
    lo, hi = cols.min(), cols.max()
    sel = [c for c in cols if lo + 0.1 * (hi - lo) <= c <= lo + 0.9 * (hi - lo)]
    height = np.mean([mask[:, c].sum() for c in sel]) * sr
    assert abs(height - gt.height_mm) <= sr
    assert mask.sum() * sr * sc == pytest.approx(gt.area_mm2, rel=0.02)


# === Sampling (no rendering) ===
def test_all_grade_classes_in_20_patients():
    hist = {c: 0 for c in labels.GRADE_CLASSES}
    for i in range(20):
        for d in sy.sample_patient(SEED, i).discs:
            hist[d.grade_class] += 1
    assert sum(hist.values()) == 20 * len(labels.DISC_NAMES)
    assert all(n > 0 for n in hist.values()), hist


def test_lower_levels_degenerate_more():
    grades = np.array([[d.pfirrmann for d in sy.sample_patient(SEED, i).discs] for i in range(60)])
    assert grades[:, -2:].mean() > grades[:, :2].mean() + 0.5


def test_grade_height_monotone_on_average():
    by_grade: dict[int, list[float]] = {g: [] for g in labels.PFIRRMANN_GRADES}
    for i in range(40):
        for d in sy.sample_patient(SEED, i).discs:
            mean_h = (d.anterior_height_mm + d.posterior_height_mm) / 2
            by_grade[d.pfirrmann].append(mean_h / anatomy.NOMINAL_DISC_HEIGHT_MM[d.level])
    means = [np.mean(by_grade[g]) for g in labels.PFIRRMANN_GRADES]
    assert all(len(by_grade[g]) >= 5 for g in labels.PFIRRMANN_GRADES)
    assert all(a > b for a, b in zip(means, means[1:])), means


def test_clinical_scores_ranges_and_relation():
    pats = [sy.sample_patient(SEED, i) for i in range(60)]
    assert all(20 <= p.age <= 80 and p.sex in ("M", "F") for p in pats)
    assert all(isinstance(p.odi, int) and 0 <= p.odi <= 100 for p in pats)
    assert all(isinstance(p.nrs, int) and 0 <= p.nrs <= 10 for p in pats)
    worst = [max(labels.GRADE_CLASS_ID[d.grade_class] for d in p.discs) for p in pats]
    hi = [p for p, w in zip(pats, worst) if w >= labels.GRADE_CLASS_ID["4M"]]
    lo = [p for p, w in zip(pats, worst) if w <= labels.GRADE_CLASS_ID["3L"]]
    assert hi and lo
    assert np.mean([p.odi for p in hi]) > np.mean([p.odi for p in lo]) + 10
    assert np.mean([p.nrs for p in hi]) > np.mean([p.nrs for p in lo]) + 1


def test_patient_is_independent_of_cohort_size():
    a, b = sy.sample_patient(3, 4), sy.sample_patient(3, 4)
    assert a.discs == b.discs and a.odi == b.odi
    assert sy.sample_patient(3, 4).discs != sy.sample_patient(4, 4).discs


def test_canal_narrows_with_severity_and_discs_shrink_laterally():
    fov = (sy.DEFAULT_FOV_MM, sy.DEFAULT_FOV_MM)
    canal = {s: [] for s in labels.SEVERITIES}
    for i in range(15):
        anat = sy.sample_patient(SEED, i)
        sev = {d.level: d.severity for d in anat.discs}
        mid = synth_slice.slice_truth(anat, synth_slice.build_slice(anat, 0.0, fov), 0, (0.6, 0.6))
        side = synth_slice.slice_truth(anat, synth_slice.build_slice(anat, 6.0, fov), 1, (0.6, 0.6))
        for r0, r1 in zip(mid, side):
            assert r0["level"] == r1["level"]
            canal[sev[r0["level"]]].append(r0["canal_ap_diameter_mm"])
            assert r1["disc_width_mm"] < r0["disc_width_mm"]
            assert r1["disc_height_mm"] < r0["disc_height_mm"]
            # ellipsoid: the trapezoid scales by sqrt(1 - (z/R)^2) with R in 20..24 mm
            ratio = r1["trapezoid_width_mm"] / r0["trapezoid_width_mm"]
            assert math.sqrt(1 - (6 / 20) ** 2) <= ratio <= math.sqrt(1 - (6 / 24) ** 2)
    means = {s: np.mean(v) for s, v in canal.items()}
    assert means["H"] < means["M"] < means["L"], means


# === The written cohort ===
def test_files_and_csv_layout(cohort):
    for name in (layout.PATIENTS_CSV, layout.DISCS_CSV, layout.GEOMETRY_TRUTH_CSV,
                 layout.CLINICAL_CSV, layout.ISSUES_CSV):
        assert (cohort / name).is_file(), name
    cols, rows = _read_csv(cohort / layout.PATIENTS_CSV)
    assert tuple(cols[:len(layout.PATIENT_COLUMNS)]) == layout.PATIENT_COLUMNS
    assert [r["patient"] for r in rows] == ["S0000", "S0001"]
    assert float(rows[0]["pixel_spacing_row_mm"]) == pytest.approx(0.6)
    cols, discs = _read_csv(cohort / layout.DISCS_CSV)
    assert tuple(cols) == layout.DISC_COLUMNS
    assert len(discs) == 2 * 2 * len(labels.DISC_NAMES)
    for r in discs:
        assert labels.disc_from_bottom(int(r["ivd_label"])) == r["level"]
        assert labels.grade_class(int(r["pfirrmann"]), r["severity"]) == r["grade_class"]
    cols, truth = _read_csv(cohort / layout.GEOMETRY_TRUTH_CSV)
    assert tuple(cols) == synth_slice.GEOMETRY_TRUTH_COLUMNS
    assert [(r["patient"], r["slice"], r["level"]) for r in truth] == \
        [(r["patient"], r["slice"], r["level"]) for r in discs]
    _, issues = _read_csv(cohort / layout.ISSUES_CSV)
    assert issues == []
    cols, clinical = _read_csv(cohort / layout.CLINICAL_CSV)
    assert tuple(cols) == sy.CLINICAL_COLUMNS and len(clinical) == 2


def test_masks_have_every_class_at_the_midline(cohort):
    for pid in ("S0000", "S0001"):
        rec = labelme_io.read_labelme(layout.labelme_json_path(cohort, pid, 0))
        ids = set(np.unique(rec.mask).tolist())
        assert ids <= set(range(labels.NUM_SEG_CLASSES))
        assert set(labels.FOREGROUND_IDS) <= ids


def test_labelme_round_trip_and_metadata(cohort):
    anat = sy.sample_patient(SEED, 1)
    image, mask, truth, _ = sy.generate_slice(anat, SEED, 1, 2)
    rec = labelme_io.read_labelme(layout.labelme_json_path(cohort, "S0001", 1))
    assert rec.patient == "S0001" and rec.slice == 1
    assert rec.pixel_spacing_mm == pytest.approx((0.6, 0.6))
    assert np.array_equal(rec.image, image)
    # the LabelMe polygons reproduce the mask up to one-pixel boundary effects
    assert (rec.mask != mask).mean() < 0.002


def test_discs_ordered_top_to_bottom(cohort):
    _, truth = _read_csv(cohort / layout.GEOMETRY_TRUTH_CSV)
    for pid in ("S0000", "S0001"):
        rec = labelme_io.read_labelme(layout.labelme_json_path(cohort, pid, 0))
        rows_y = []
        for name in labels.DISC_NAMES:
            rr, cc = np.nonzero(rec.mask == labels.SEG_ID[name])
            rows_y.append(rr.mean())
            gt = next(r for r in truth if r["patient"] == pid and r["slice"] == "0" and r["level"] == name)
            assert float(gt["y_px"]) == pytest.approx(rr.mean(), abs=1.0)
            assert float(gt["x_px"]) == pytest.approx(cc.mean(), abs=1.0)
            above, below = labels.disc_neighbours(name)
            for vert, sign in ((above, -1), (below, 1)):
                if vert is not None:
                    vy = np.nonzero(rec.mask == labels.SEG_ID[vert])[0].mean()
                    assert sign * (vy - rr.mean()) > 5
        assert all(a < b for a, b in zip(rows_y, rows_y[1:]))


def test_ground_truth_matches_pixels(cohort):
    _, truth = _read_csv(cohort / layout.GEOMETRY_TRUTH_CSV)
    sr = sc = 0.6
    total_px, total_gt = 0, 0.0
    for r in truth:
        rec = labelme_io.read_labelme(layout.labelme_json_path(cohort, r["patient"], int(r["slice"])))
        disc = rec.mask == labels.SEG_ID[r["level"]]
        n = int(disc.sum())
        area_px = float(r["disc_area_mm2"]) / (sr * sc)
        width_px = float(r["disc_width_mm"]) / sc
        # within 2 %, or half a pixel row along the width for thin untilted discs (row quantisation)
        assert abs(n - area_px) <= max(0.02 * area_px, 0.5 * width_px), r["level"]
        total_px += n
        total_gt += area_px
        # PCA of the pixels in mm recovers the tilt (the disc is symmetric about its mid-line)
        rr, cc = np.nonzero(disc)
        pts = np.stack([cc * sc, rr * sr], 1)
        w, vecs = np.linalg.eigh(np.cov((pts - pts.mean(0)).T))
        u = vecs[:, -1] * (1 if vecs[0, -1] > 0 else -1)
        assert tilt_of(u) == pytest.approx(float(r["tilt_deg"]), abs=1.5)
        # disc height: pixel count per column on nearly untilted discs (|tilt| < 6 deg)
        if abs(float(r["tilt_deg"])) < 6:
            cols = np.nonzero(disc.any(0))[0]
            lo, hi = cols.min(), cols.max()
            sel = [c for c in cols if lo + 0.1 * (hi - lo) <= c <= lo + 0.9 * (hi - lo)]
            height = np.mean([disc[:, c].sum() for c in sel]) * sr
            assert abs(height - float(r["disc_height_mm"])) <= sr, r["level"]
    assert total_px == pytest.approx(total_gt, rel=0.01)


def test_signal_ratio_falls_with_grade(cohort):
    _, truth = _read_csv(cohort / layout.GEOMETRY_TRUTH_CSV)
    _, discs = _read_csv(cohort / layout.DISCS_CSV)
    for t, d in zip(truth, discs):
        assert float(t["nucleus_ratio"]) == pytest.approx(
                anatomy.NUCLEUS_INTENSITY[int(d["pfirrmann"])] / anatomy.CSF_INTENSITY, rel=0.06)
        assert anatomy.ANNULUS_INTENSITY / anatomy.CSF_INTENSITY < float(t["signal_ratio"]) < float(t["nucleus_ratio"])


def test_deterministic_and_seed_dependent(small_run, tmp_path):
    again = tmp_path / "again"
    assert synth_cmd.main(["--patients", "2", "--slices-per-patient", "2", "--seed", "7",
                    "--out", str(again)] + SMALL) == 0
    first, second = _tree_bytes(small_run), _tree_bytes(again)
    assert first.keys() == second.keys() and len(first) > 8
    diff = [k for k in first if first[k] != second[k]]
    assert diff == []
    other = tmp_path / "other"
    assert synth_cmd.main(["--patients", "2", "--slices-per-patient", "2", "--seed", "8",
                    "--out", str(other)] + SMALL) == 0
    third = _tree_bytes(other)
    png = "labelme/S0000/S0000_slice0.png"
    assert third[png] != first[png]
    assert third[layout.GEOMETRY_TRUTH_CSV] != first[layout.GEOMETRY_TRUTH_CSV]


def test_patient_prefix_is_stable(small_run, tmp_path):
    one = tmp_path / "one"
    assert synth_cmd.main(["--patients", "1", "--slices-per-patient", "2", "--seed", "7",
                    "--out", str(one)] + SMALL) == 0
    a, b = _tree_bytes(one), _tree_bytes(small_run)
    for k in a:
        if k.startswith("labelme/"):
            assert a[k] == b[k], k
    for name in (layout.DISCS_CSV, layout.GEOMETRY_TRUTH_CSV, layout.CLINICAL_CSV, layout.PATIENTS_CSV):
        lines_one = a[name].decode().splitlines()
        lines_two = b[name].decode().splitlines()
        assert lines_one == [ln for ln in lines_two if not ln.startswith("S0001")], name


def test_cli_refuses_too_small_field_of_view(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        synth_cmd.main(["--patients", "1", "--slices-per-patient", "1", "--seed", "0",
                 "--out", str(tmp_path / "x"), "--size", "128", "--pixel-spacing", "1.0", "--no-progress"])
    assert e.value.code == 2
    assert "field of view" in capsys.readouterr().err


def test_vertebra_truth_is_the_rectangle_in_its_frame():
    # L1..L5 are drawn at the mean tilt of their two discs, the frame the definitions use, so
    # at the midline their measured height/width are exactly the rectangle's sides.
    anat = sy.sample_patient(SEED, 2)
    shapes = synth_slice.build_slice(anat, 0.0, (sy.DEFAULT_FOV_MM, sy.DEFAULT_FOV_MM))
    rows = {r["level"]: r for r in synth_slice.slice_truth(anat, shapes, 0, (0.6, 0.6))}
    parts = {p.name: p for p in anat.parts}
    for level, row in rows.items():
        above, below = labels.disc_neighbours(level)
        if above is not None:
            local = parts[above].local
            assert row["vert_above_height_mm"] == pytest.approx(np.ptp(local[:, 1]), rel=1e-9)
            assert row["vert_above_width_mm"] == pytest.approx(np.ptp(local[:, 0]), rel=1e-9)
        heights = [h for h in (row["vert_above_height_mm"], row["vert_below_height_mm"]) if h]
        assert row["disc_height_index"] == pytest.approx(row["disc_height_mm"] / np.mean(heights))
    assert rows["T12-L1"]["vert_above_height_mm"] is None


def test_write_complete_cohort_prints_the_synth_summary_and_refuses_bad_arguments(tmp_path,
                                                                                   capsys):
    """``write_complete_cohort`` prints the lines ``spoils synth`` prints (2 patients x 1 slice,
    6 lumbar discs each: the grade-class counts add up to 12) and turns a refused argument into
    a RuntimeError that names it."""
    summary = sy.write_complete_cohort(tmp_path / "c", 2, 1, 0, size=448, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == summary.report_lines()
    assert err[0].startswith(f"spoils synth: wrote 2 patients x 1 slices to {tmp_path / 'c'};")
    counts = [int(item.split(":")[1]) for item in err[0].split("grade classes ")[1].split()]
    assert sum(counts) == 12 and not summary.issues
    with pytest.raises(RuntimeError, match="--seed must be >= 0, got -1"):
        sy.write_complete_cohort(tmp_path / "d", 1, 1, -1, progress=False)
