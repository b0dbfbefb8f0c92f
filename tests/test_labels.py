import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.serve import overlay


def test_fourteen_consecutive_classes_background_zero():
    assert labels.NUM_SEG_CLASSES == 14
    assert [c.id for c in labels.SEG_CLASSES] == list(range(14))
    assert labels.SEG_CLASSES[0].name == "background"
    assert labels.VERTEBRA_NAMES == ("L1", "L2", "L3", "L4", "L5", "S1")
    assert labels.DISC_NAMES == ("T12-L1", "L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
    assert labels.SEG_NAMES[labels.CANAL_ID] == "canal"
    assert len(set(labels.SEG_PALETTE)) == 14  # every class has its own colour


def test_labelme_strings_resolve_to_ids():
    for c in labels.SEG_CLASSES:
        assert labels.LABELME_TO_ID[c.labelme.lower()] == c.id
    assert labels.LABELME_TO_ID["spinal canal"] == labels.CANAL_ID


def test_disc_neighbours_and_bottom_numbering():
    assert labels.disc_neighbours("L4-L5") == ("L4", "L5")
    assert labels.disc_neighbours("L5-S1") == ("L5", "S1")
    assert labels.disc_neighbours("T12-L1") == (None, "L1")
    assert labels.disc_from_bottom(1) == "L5-S1"
    assert labels.disc_from_bottom(6) == "T12-L1"
    with pytest.raises(ValueError):
        labels.disc_from_bottom(7)
    with pytest.raises(KeyError):
        labels.disc_neighbours("L6-S1")


def test_grade_classes_and_mapping():
    assert labels.GRADE_CLASSES == ("1L", "2L", "3L", "3M", "3H", "4L", "4M", "4H", "5L", "5M", "5H")
    assert labels.grade_class(1, "H") == "1L"  # grades 1-2 are always L
    assert labels.grade_class(2, "M") == "2L"
    assert labels.grade_class(3, "M") == "3M"
    assert labels.grade_class_id(5, "H") == 10
    assert labels.pfirrmann_of("4M") == 4 and labels.severity_of("4M") == "M"
    assert [labels.binary_of(g) for g in (1, 2, 3, 4, 5)] == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError):
        labels.grade_class(6, "L")
    with pytest.raises(ValueError):
        labels.grade_class(3, "X")
    with pytest.raises(ValueError):
        labels.grade_class(2.5, "L")


def test_colorize_and_overlay():
    mask = np.array([[0, 1], [13, 12]])
    rgb = overlay.colorize(mask)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == labels.SEG_CLASSES[1].color
    img = np.full((2, 2), 100, np.uint8)
    out = overlay.overlay(img, mask, alpha=0.5)
    assert tuple(out[0, 0]) == (100, 100, 100)  # background untouched
    r, g, b = labels.SEG_CLASSES[1].color
    assert tuple(out[0, 1]) == tuple(int(0.5 * 100 + 0.5 * c + 0.5) for c in (r, g, b))
    with pytest.raises(ValueError):
        overlay.colorize(np.array([[14]]))
