"""Tests for spoils_tf.data.spider (SPIDER 4-value masks -> 14-class LabelMe dataset)."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import PIL.Image
import pytest

from spoils_tf import labels
from spoils_tf.data import layout, spider

SPACING = (1.0, 1.0)  # 1 mm pixels: every threshold in mm is also in pixels
H, W = 420, 200
DISC_X = (40, 100)  # anterior (left) .. posterior (right) extent of discs and bodies
CANAL_X = (106, 120)
POST_X = (126, 170)  # posterior elements
DISC_ROWS = (360, 310, 260, 210, 160, 110, 60)  # disc centre rows, bottom -> top (50 mm apart)
HALF = 3  # discs are 6 px thick


def synthetic_mask(disc_rows=DISC_ROWS) -> np.ndarray:
    """uint8 [H, W] SPIDER-like mask: discs, bodies between/above them, canal, posterior
    elements, and one pedicle bar joining the body between discs 1 and 2 to its posterior
    element straight through the canal (as in a lateral slice)."""
    m = np.zeros((H, W), np.uint8)
    m[:, CANAL_X[0]:CANAL_X[1]] = spider.SPIDER_CANAL
    rows = sorted(disc_rows, reverse=True)
    edges = [rows[0] + 40] + rows + [max(rows[-1] - 45, 0)]
    for lo, hi in zip(edges, edges[1:]):  # body rows between consecutive disc centres
        m[hi + HALF:lo - HALF, DISC_X[0]:DISC_X[1]] = spider.SPIDER_VERTEBRA
        m[hi + HALF + 8:lo - HALF - 8, POST_X[0]:POST_X[1]] = spider.SPIDER_VERTEBRA
    for r in rows:
        m[r - HALF:r + HALF, DISC_X[0]:DISC_X[1]] = spider.SPIDER_DISC
    m[330:340, DISC_X[1]:POST_X[1]] = spider.SPIDER_VERTEBRA  # pedicle bar, L5
    return m


def test_synthetic_mask_converts_to_expected_levels():
    conv = spider.convert_mask(synthetic_mask(), SPACING)
    assert conv.write and conv.reasons == []
    got = conv.mask
    sid = labels.SEG_ID
    expected = {  # (row, col) -> class name
        (360, 70): "L5-S1", (310, 70): "L4-L5", (260, 70): "L3-L4", (210, 70): "L2-L3",
        (160, 70): "L1-L2", (110, 70): "T12-L1",
        (335, 70): "L5", (285, 70): "L4", (235, 70): "L3", (185, 70): "L2", (135, 70): "L1",
        (85, 70): "background",   # T12 body: above T12-L1, outside the scheme
        (60, 70): "background",   # 7th disc from the bottom (T11-T12)
        (390, 70): "background",  # below L5-S1 (stands in for the unlabelled sacrum)
        (200, 112): "canal",
        (285, 150): "background",  # posterior element of L4
        (335, 150): "background",  # posterior element of L5, attached by the pedicle bar
        (335, 113): "background",  # the pedicle bar where it crosses the canal
    }
    for (r, c), name in expected.items():
        assert got[r, c] == sid[name], f"pixel ({r}, {c}): {labels.SEG_NAMES[got[r, c]]} != {name}"
    # The L5 body stops at the discs' posterior line (~col 98.5) + POSTERIOR_MARGIN_MM (1.5):
    # of the pedicle bar (cols 100..169) at most col 100 may remain.
    l5_cols = np.nonzero((got == sid["L5"]).any(axis=0))[0]
    assert l5_cols.min() == DISC_X[0] and DISC_X[1] - 1 <= l5_cols.max() <= DISC_X[1]
    assert (got == sid["S1"]).sum() == 0
    assert conv.levels == {labels.disc_from_bottom(n): n for n in range(1, 7)}


@pytest.mark.parametrize("n_findings,severity", [(0, "L"), (1, "L"), (2, "M"), (3, "M"), (4, "H")])
def test_severity_proxy_band_edges(n_findings, severity):
    order = ["narrowing", "bulging", "herniation", "spondylolisthesis", "modic"]
    f = {k: 0 for k in spider.GRADING_COLUMNS.values()}
    for k in order[:n_findings]:
        f[k] = 2 if k == "modic" else 1
    assert spider.severity_proxy(f) == (severity, n_findings)


def test_severity_proxy_endplates_count_once_and_modic_type():
    f = {k: 0 for k in spider.GRADING_COLUMNS.values()}
    f.update(up_endplate=1, low_endplate=1, modic=3)
    assert spider.severity_proxy(f) == ("M", 2)
    f["modic"] = 0
    assert spider.severity_proxy(f) == ("L", 1)
    with pytest.raises(ValueError, match="bulging"):
        spider.severity_proxy({k: 0 for k in spider.GRADING_COLUMNS.values() if k != "bulging"})


def test_fewer_than_five_discs_is_listed_and_not_written_without_reference():
    conv = spider.convert_mask(synthetic_mask(DISC_ROWS[:4]), SPACING)
    assert not conv.write and conv.mask is None
    assert any("only 4 discs" in r for r in conv.reasons)


def test_fewer_discs_with_reference_uses_alignment():
    full = spider.find_discs(synthetic_mask(), SPACING)
    ref = spider.choose_reference({0: full})
    assert len(ref.centroids_mm) == 7
    # Lateral slice without the two lowest discs: 5 discs, the lowest is L3-L4.
    conv = spider.convert_mask(synthetic_mask(DISC_ROWS[2:]), SPACING, ref)
    assert conv.write
    assert conv.mask[260, 70] == labels.SEG_ID["L3-L4"]
    assert conv.mask[235, 70] == labels.SEG_ID["L3"]
    assert conv.mask[285, 70] == labels.BACKGROUND_ID  # L4: its lower disc is missing
    assert any("not in this slice" in r for r in conv.reasons)


def test_split_disc_pieces_grouped_and_listed():
    m = synthetic_mask()
    m[255:265, 70:76] = spider.SPIDER_VERTEBRA  # cut disc L3-L4 into two pieces along its axis
    conv = spider.convert_mask(m, SPACING)
    assert conv.write
    assert conv.mask[260, 50] == conv.mask[260, 90] == labels.SEG_ID["L3-L4"]
    assert any("split into pieces" in r and "disc 3 from the bottom (2 pieces)" in r
               for r in conv.reasons)


def test_split_disc_offset_piece_is_ambiguous():
    m = synthetic_mask()
    # A piece 9 mm above disc L3-L4's axis (> SAME_DISC_PERP_MM = 6): not grouped with it,
    # and 19.7 mm from its centroid (< MIN_SPACING_RATIO x the 50 mm spacing).
    m[249:253, 45:60] = spider.SPIDER_DISC
    conv = spider.convert_mask(m, SPACING)
    assert not conv.write
    assert any("19.7 mm apart" in r and "ambiguous" in r for r in conv.reasons)
    # 3 mm above the axis it is grouped with the disc instead.
    m = synthetic_mask()
    m[255:257, 45:60] = spider.SPIDER_DISC
    m[257, 45:60] = spider.SPIDER_VERTEBRA
    conv = spider.convert_mask(m, SPACING)
    assert conv.write and conv.mask[255, 50] == labels.SEG_ID["L3-L4"]


def test_touching_discs_are_ambiguous():
    m = synthetic_mask()
    m[210:260, 60:70] = spider.SPIDER_DISC  # bridge joining L2-L3 and L3-L4
    conv = spider.convert_mask(m, SPACING)
    assert not conv.write
    assert any("thick" in r for r in conv.reasons)


def test_specks_become_background():
    m = synthetic_mask()
    m[20, 20] = spider.SPIDER_DISC  # 1 mm^2 < SPECK_AREA_MM2
    conv = spider.convert_mask(m, SPACING)
    assert conv.write and conv.mask[20, 20] == labels.BACKGROUND_ID


def _write_png(path: pathlib.Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(arr).save(path)


def test_convert_spider_tiny_source_lists_every_slice(tmp_path):
    src = tmp_path / "spider"
    good, few = synthetic_mask(), synthetic_mask(DISC_ROWS[:4])
    touching = synthetic_mask()
    touching[210:260, 60:70] = spider.SPIDER_DISC
    img = np.full((H, W), 80, np.uint8)
    for k, m in ((10, good), (11, good), (12, few), (13, touching)):
        name = f"9_t2_SPACE_slice{k}.png"
        _write_png(src / "images" / name, np.dstack([img, img, img, np.full_like(img, 255)]))
        _write_png(src / "masks" / name, m)
    (src / "overview.csv").write_text(
        "new_file_name,sex,birth_date,subset,MagneticFieldStrength,Manufacturer,"
        "ManufacturerModelName,PixelSpacing,SliceThickness,SpacingBetweenSlices\n"
        '9_t2_SPACE,F,61.0,training,1.5,SIEMENS,Avanto_fit,"[1.0, 1.0]",0.9,1.0\n')
    rows = ["Patient,IVD label,Modic,UP endplate,LOW endplate,Spondylolisthesis,"
            "Disc herniation,Disc narrowing,Disc bulging,Pfirrman grade"]
    rows += [f"9,{n},0,0,0,0,0,{int(n == 1)},{int(n == 1)},{3 if n == 1 else 2}" for n in range(1, 8)]
    (src / "radiological_gradings.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    s = spider.convert_spider(src, out, progress=False)
    assert (s.n_slices, s.n_written, s.n_skipped, s.n_written_with_issue) == (4, 3, 1, 1)
    with open(out / layout.ISSUES_CSV) as fh:
        issues = list(csv.DictReader(fh))
    assert [(i["slice"], i["action"]) for i in issues] == [("12", "written"), ("13", "skipped")]
    assert "only 4 discs" in issues[0]["reason"] and "confirmed by reference" in issues[0]["reason"]
    assert "thick" in issues[1]["reason"]
    assert not layout.labelme_json_path(out, "9", 13).exists()
    assert layout.labelme_json_path(out, "9", 12).exists()
    with open(out / layout.DISCS_CSV) as fh:
        discs = list(csv.DictReader(fh))
    assert len(discs) == 6 + 6 + 4  # levels in the written slices 10, 11, 12
    l5s1 = [d for d in discs if d["level"] == "L5-S1"]
    assert {d["grade_class"] for d in l5s1} == {"3M"} and l5s1[0]["n_findings"] == "2"
    with open(out / layout.PATIENTS_CSV) as fh:
        pats = list(csv.DictReader(fh))
    assert pats[0]["pixel_spacing_row_mm"] == "1.0" and "birth_date" not in pats[0]
    assert s.n_gradings == 7 and s.n_gradings_matched == 6
    assert s.unmatched_gradings[0]["ivd_label"] == 7 and "above T12-L1" in s.unmatched_gradings[0]["reason"]
    summary = json.loads((out / spider.SUMMARY_JSON).read_text())
    assert summary["class_pixels"]["S1"] == 0 and summary["n_written"] == 3
    # Re-running into the same DIR overwrites and gives the same result.
    s2 = spider.convert_spider(src, out, progress=False)
    assert s2.to_json() == s.to_json()


@pytest.mark.slow  # ~25 s on 2 shared cores (27 real slices, LabelMe writing included)
def test_real_spider_two_patients(shared_spider_dir, tmp_path):
    from spoils_tf.data import labelme_io
    out = tmp_path / "conv"
    s = spider.convert_spider(shared_spider_dir, out, patients=["22", "107"], progress=False)
    n_files = len(list((shared_spider_dir / "images").glob("22_t2_SPACE_*.png"))) + \
        len(list((shared_spider_dir / "images").glob("107_t2_SPACE_*.png")))
    assert s.n_slices == n_files == 27
    assert s.n_written + s.n_skipped == s.n_slices
    assert s.class_pixels["S1"] == 0
    # 22 grades IVD labels 1-8, 107 grades 0-6: labels 1..6 must all map to a level.
    assert s.n_gradings == 15 and s.n_gradings_matched == 12
    assert sorted((u["patient"], u["ivd_label"]) for u in s.unmatched_gradings) == \
        [("107", 0), ("22", 7), ("22", 8)]
    sid = labels.SEG_ID
    for path in layout.list_labelme_jsons(out):
        rec = labelme_io.read_labelme(path)
        assert rec.pixel_spacing_mm == pytest.approx((0.46875, 0.46875))
        rows = {n: np.nonzero(rec.mask == sid[n])[0].mean() for n in labels.SEG_NAMES[1:]
                if (rec.mask == sid[n]).any()}
        discs = [rows[d] for d in labels.DISC_NAMES if d in rows]
        assert discs == sorted(discs), f"{path.name}: discs not ordered top -> bottom"
        if "L5" in rows:  # L5 body between L4-L5 and L5-S1
            assert rows["L4-L5"] < rows["L5"] < rows["L5-S1"], path.name
        cols = lambda n: np.nonzero(rec.mask == sid[n])[1].mean()  # noqa: E731
        assert cols("canal") > cols("L3"), f"{path.name}: canal not posterior of L3"
