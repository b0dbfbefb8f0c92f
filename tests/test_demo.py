"""The demo's summary counts come from the dataset files (checked on a tiny synthetic cohort)."""

import pandas as pd

from spoils_tf import demo, labels
from spoils_tf.data import synthetic


def test_summary_counts_patients_slices_and_grade_classes(tmp_path):
    out = tmp_path / "synth"
    assert synthetic.main(["--patients", "2", "--slices-per-patient", "2", "--seed", "1",
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
