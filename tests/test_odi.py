"""``spoils_tf.clinical.odi``: the ODI from its ten sections, checked on hand-worked numbers."""

from __future__ import annotations

import pytest

from spoils_tf.clinical import odi


def test_all_sections_answered():
    # 2+3+1+0+4+2+1+2+3+2 = 20 of 50 -> 40 %
    s = odi.odi_from_sections([2, 3, 1, 0, 4, 2, 1, 2, 3, 2])
    assert s.percent == pytest.approx(40.0)
    assert (s.total, s.answered, s.unanswered) == (20, 10, ())


def test_unanswered_section_leaves_the_denominator():
    # sex life blank: 18 of 5 x 9 = 45 -> 40 %, not 18 / 50 = 36 %
    s = odi.odi_from_sections([2, 3, 1, 0, 4, 2, 1, None, 3, 2])
    assert s.percent == pytest.approx(40.0)
    assert (s.total, s.answered, s.unanswered) == (18, 9, ("Sex life",))
    assert "18 / (5 x 9) x 100" in s.explanation() and "Sex life" in s.explanation()


def test_two_blank_strings_and_numeric_strings():
    # 5 x 8 = 40 of 40 -> 100 %
    s = odi.odi_from_sections(["5"] * 7 + ["", " ", "5"])
    assert s.percent == pytest.approx(100.0)
    assert s.unanswered == ("Sex life", "Social life")


def test_all_zero_is_zero():
    assert odi.odi_from_sections([0] * 10).percent == 0.0


def test_too_few_answered_is_refused():
    with pytest.raises(ValueError, match="7 of 10 answered; at least 8"):
        odi.odi_from_sections([1, 1, 1, 1, 1, 1, 1, None, None, None])
    assert odi.odi_from_sections([1] * 7 + [None] * 3, min_answered=7).percent == \
        pytest.approx(20.0)


@pytest.mark.parametrize("bad", [6, -1, 2.5, "x", float("nan"), True])
def test_bad_score_names_its_section(bad):
    scores = [1] * 10
    scores[3] = bad
    with pytest.raises(ValueError, match="ODI section 'Walking'"):
        odi.odi_from_sections(scores)


def test_wrong_number_of_sections():
    with pytest.raises(ValueError, match="9 given; expected 10"):
        odi.odi_from_sections([1] * 9)
