"""tools/ship_grader.py: the nested-CV grader published into a copy of the shipped bundle, its
card (calibrated, threshold, CV numbers read from the run) and what the predictor makes of it."""

import importlib.util
import json
import pathlib
import shutil
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tool():
    sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location("ship_grader", ROOT / "tools" / "ship_grader.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from configs import grade_nested
    from spoils_tf.train import grade_nested_lib as gn
    tmp = tmp_path_factory.mktemp("ship")
    run = tmp / "run"
    config = grade_nested.get_config("smoke")
    config.targets = ("grade_class",)
    config.families = ("geometry",)
    config.data.synthetic.patients = 12
    config.eval.n_boot = 20
    gn.run(config, run)                 # the nested CV whose numbers go on the card
    config.fold = "final"
    (final,) = gn.run(config, run)["final"]
    out = tmp / "bundle"
    shutil.copytree(ROOT / "spoils_tf" / "weights", out,
                    ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    before = sorted(p.name for p in (out / "spoils_grade_geometry").iterdir())
    rc = _tool().main(["--final", final["path"], "--cv", str(run), "--out", str(out),
                       "--drop-older"])
    assert rc == 0
    return out, run, final, before


def test_card_carries_calibration_threshold_and_cv_numbers(shipped):
    from spoils_tf.classical import abstention
    from spoils_tf.serve import bundle
    out, run, final, before = shipped
    versions = bundle.versions(out / "spoils_grade_geometry")
    assert versions == [int(before[-1]) + 1]          # the older version dropped
    card = bundle.read_card(out / "spoils_grade_geometry" / str(versions[0]))
    assert card["calibrated"] is True and card["calibration_method"] == "sigmoid"
    summary = json.loads((run / "ground_truth" / "grade_class" / "geometry" /
                          "summary.json").read_text())
    gate = abstention.deployment_threshold(final["abstention"], summary["abstention"]["pooled"])
    assert card["intervention_min_probability"] == gate["threshold"]
    assert card["intervention_threshold_reason"] == gate["reason"]
    assert card["intervention_threshold_inner_choice"] == final["abstention"]["threshold"]
    assert card["cross_validation"]["metrics"]["accuracy"] == \
        summary["summary"]["metrics"]["accuracy"]
    md = (out / "MODEL_CARD.md").read_text()
    assert f"## Grader (`spoils_grade_geometry/{versions[0]}/model.skops`)" in md
    assert "## Geometry grader" not in md
    assert "## Segmentation" in md                    # the rest of the card kept
    acc = summary["summary"]["metrics"]["accuracy"]
    assert f"| accuracy | {acc['estimate']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}] |" in md


def test_predictor_takes_the_threshold_and_states_where_it_came_from(shipped):
    from spoils_tf.clinical import rules
    from spoils_tf.serve import bundle
    from spoils_tf.serve import predictor as pr
    out, _, _, _ = shipped
    version = bundle.versions(out / "spoils_grade_geometry")[-1]
    card = bundle.read_card(out / "spoils_grade_geometry" / str(version))
    p = pr.Predictor(out)
    t = card["intervention_min_probability"]
    assert p.decision_config.intervention_min_probability == t
    assert p.calibrated is True
    assert p.decision_config.threshold_origin.endswith(card["intervention_threshold_reason"])
    text = rules.abstention_rule_text(p.decision_config)
    assert f"below {t:.2f} (from the model card of spoils_grade_geometry" in text
