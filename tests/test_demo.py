"""The demo's summary counts come from the dataset files (checked on a tiny synthetic cohort)."""

import json

import pandas as pd
import pytest

from spoils_tf import labels
from spoils_tf.cli import demo, synth


def test_summary_counts_patients_slices_and_grade_classes(tmp_path):
    out = tmp_path / "synth"
    assert synth.main(["--patients", "2", "--slices-per-patient", "2", "--seed", "1",
                           "--size", "448", "--out", str(out), "--no-progress"]) == 0
    row = demo.summarize(out, "synthetic")
    assert row["patients"] == 2 and row["slices"] == 4
    discs = pd.read_csv(out / "discs.csv", dtype={"patient": str})
    per_disc = discs.drop_duplicates(["patient", "level"])
    assert row["graded_discs"] == len(per_disc) == 12  # 2 patients x 6 levels
    # Histogram in labels.GRADE_CLASSES order, counts summing to the graded discs.
    names = [item.split(":")[0] for item in row["grade_classes"].split()]
    assert names == sorted(names, key=labels.GRADE_CLASSES.index)
    assert sum(int(item.split(":")[1]) for item in row["grade_classes"].split()) == 12



def test_spoils_demo_help_names_its_options_without_loading_tensorflow():
    """``spoils demo --help`` (``python -m spoils_tf.cli demo``) exits 0, lists ``--out``, and
    imports neither TensorFlow nor Keras."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from spoils_tf import cli\n"
            "try:\n"
            "    cli.main(['demo', '--help'])\n"
            "except SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print('loaded:', ','.join(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--out" in proc.stdout and "--pipeline-config" in proc.stdout
    assert proc.stdout.rstrip().endswith("loaded:"), proc.stdout[-200:]

    proc = subprocess.run([sys.executable, "-m", "spoils_tf.cli", "demo", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: spoils demo" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_demo_pipeline_pushes_a_bundle_and_writes_both_reports(tmp_path):
    """Stages 6-7 with the smoke pipeline: a blessed bundle, then two HTML reports."""
    from spoils_tf.serve import bundle

    rc, reports = demo.run_pipeline_and_predict(tmp_path, "smoke")
    assert rc == 0
    assert set(bundle.load_bundle(tmp_path / "models")) == set(bundle.MODEL_NAMES)
    assert [p.parent.name for p in reports] == ["end_to_end", "annotated_mask"]
    for path in reports:
        assert path.is_file() and (path.parent / "report.json").is_file()
    annotated = json.loads((tmp_path / "reports" / "annotated_mask" / "report.json").read_text())
    # The annotated mask has every lumbar disc, so each is found and graded, and the synthetic
    # clinical table gives ODI/NRS, so there is a recommendation.
    assert annotated["status"] == "ok"
    assert all(d["found"] and d["predicted_class"] in labels.GRADE_CLASSES
               for d in annotated["discs"])
    # The smoke models grade with low probabilities: a surgical consultation or injection they
    # would drive is withheld (clinical.rules), so the report must match rules.decide on its
    # own grades and probabilities; otherwise there is a recommendation, as before.
    from spoils_tf.clinical import rules
    graded = {d["level"]: d["predicted_class"] for d in annotated["discs"]}
    expected = rules.decide(graded, annotated["scores"]["odi"], annotated["scores"]["nrs"],
                            probabilities={d["level"]: d["predicted_probability"]
                                           for d in annotated["discs"]})
    if expected.recommendation is None:
        assert annotated["recommendation"] is None
        assert annotated["recommendation_note"] == expected.abstention_note
    else:
        assert annotated["recommendation"]["recommendation"] == expected.recommendation
    assert "supports" in (tmp_path / "reports" / "annotated_mask" / "report.html").read_text()


def _numbers_without_timings(stdout: str) -> list[str]:
    """The demo's printed lines with durations (``12.3 s``, ``45 ms``) replaced by ``<t>``."""
    import re
    lines = [re.sub(r"\d+(\.\d+)? ?(s|ms)\b", "<t>", line) for line in stdout.splitlines()]
    return [line for line in lines
            if not line.lstrip().startswith(("stage ms", "seconds:", "timing_ms"))]


@pytest.mark.slow
def test_demo_prints_the_same_numbers_twice(tmp_path):
    """Two demo runs (synthetic cohort + smoke pipeline, in fresh processes) print the same lines.

    Training is seeded and runs with TensorFlow's op determinism, so a blessing decision or a
    Dice value cannot differ between two runs of ``make demo`` on one machine.
    """
    import subprocess
    import sys
    outs = []
    for run in ("a", "b"):
        proc = subprocess.run(
            [sys.executable, "-m", "spoils_tf.cli", "demo", "--out", str(tmp_path / run),
             "--spider", str(tmp_path / "no_spider"), "--synth-patients", "4",
             "--synth-slices", "1", "--pipeline-config", "smoke"],
            capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(_numbers_without_timings(proc.stdout.replace(str(tmp_path / run), "<out>")))
    assert any("Dice" in line or "dice" in line for line in outs[0]), outs[0]
    differing = [(a, b) for a, b in zip(*outs) if a != b]
    assert not differing and len(outs[0]) == len(outs[1]), differing
