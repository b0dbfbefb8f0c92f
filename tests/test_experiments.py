"""The experiment entry points (``python -m experiments.<name>``): flags, --fold, bad usage.

Each runs its ``smoke`` config in a fresh interpreter, as a user would; the science of each
experiment is tested in-process next to its library (test_grade_geometry.py, ...).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_grade_geometry_entry_runs_the_requested_fold(tmp_path):
    result = _run("experiments.grade_geometry", "--config=configs/grade_geometry.py:smoke",
                  f"--workdir={tmp_path}", "--fold=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "# Geometry classifiers (grade_geometry:smoke)" in result.stdout
    assert json.loads((tmp_path / "config.json").read_text())["fold"] == "1"
    for model in ("logreg", "xgboost", "gradient_boosting", "svm", "lightgbm"):
        rows = (tmp_path / "patient" / "grade_class" / model / "fold_metrics.csv").read_text()
        assert [r.split(",")[0] for r in rows.splitlines()[1:]] == ["1"], model


def test_ensemble_entry_with_config_override(tmp_path):
    result = _run("experiments.ensemble", "--config=configs/ensemble.py:smoke",
                  f"--workdir={tmp_path}", "--fold=0")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = (tmp_path / "fold_metrics.csv").read_text().splitlines()
    assert rows[0].startswith("method,fold,")
    # Every scored row is from fold 0, and the paper's ensemble (the mean) is among them.
    assert {r.split(",")[1] for r in rows[1:]} == {"0"}
    assert any(r.startswith("mean,0,") for r in rows[1:])


@pytest.mark.parametrize("entry,config", [
    ("experiments.seg", "configs/seg_unet.py:smoke"),
    ("experiments.grade_geometry", "configs/grade_geometry.py:smoke"),
    ("experiments.pipeline", "configs/pipeline.py:smoke"),
])
def test_positional_argument_is_a_usage_error_and_writes_nothing(tmp_path, entry, config):
    workdir = tmp_path / "w"
    result = _run(entry, f"--config={config}", f"--workdir={workdir}", "3")
    assert result.returncode != 0
    assert "unexpected arguments: ['3']" in result.stderr
    assert not workdir.exists()


def test_missing_workdir_is_refused(tmp_path):
    result = _run("experiments.ensemble", "--config=configs/ensemble.py:smoke")
    assert result.returncode != 0
    assert "--workdir" in result.stderr


def test_unknown_config_field_is_refused(tmp_path):
    # lock_config=True: a mistyped override must not silently add a field.
    result = _run("experiments.grade_geometry", "--config=configs/grade_geometry.py:smoke",
                  f"--workdir={tmp_path / 'w'}", "--config.trian.epochs=3")
    assert result.returncode != 0
    assert "trian" in result.stderr
    assert not (tmp_path / "w").exists()
