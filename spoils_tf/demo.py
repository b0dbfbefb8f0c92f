"""``make demo``: the main job on the embedded default data.

Stages (each prints what it did; the numbers are the run's own):
  1. SPIDER conversion, when ``../shared/data/spider_t2space`` exists (real data);
  2. the deterministic synthetic cohort (always available);
  3. patient-level folds for each dataset;
  4. both TFDS datasets built offline;
  5. the geometry feature table for each dataset;
  6. a summary table.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import pandas as pd

from spoils_tf import labels
from spoils_tf.data import layout

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SPIDER = REPO_ROOT.parent / "shared" / "data" / "spider_t2space"


def _stage(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"    ({time.perf_counter() - t0:.1f} s)", flush=True)


def summarize(data_dir: pathlib.Path, name: str) -> dict:
    """One summary row for a dataset directory (counts from its own files)."""
    jsons = layout.list_labelme_jsons(data_dir)
    patients = {p.parent.name for p in jsons}
    row = {"dataset": name, "patients": len(patients), "slices": len(jsons)}
    discs_csv = data_dir / layout.DISCS_CSV
    if discs_csv.exists():
        discs = pd.read_csv(discs_csv, dtype={"patient": str})
        row["disc_rows"] = len(discs)
        graded = discs.dropna(subset=["grade_class"])
        row["graded_discs"] = int(graded[["patient", "level"]].drop_duplicates().shape[0])
        counts = graded.drop_duplicates(["patient", "level"])["grade_class"].value_counts()
        row["grade_classes"] = " ".join(f"{c}:{counts[c]}" for c in labels.GRADE_CLASSES
                                        if c in counts)
    issues_csv = data_dir / layout.ISSUES_CSV
    row["issues"] = len(pd.read_csv(issues_csv)) if issues_csv.exists() else 0
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spoils-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--spider", default=str(DEFAULT_SPIDER),
                        help="SPIDER sample directory (skipped when absent)")
    parser.add_argument("--synth-patients", type=int, default=16)
    parser.add_argument("--synth-slices", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from spoils_tf.data import folds, spider, synthetic

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    datasets: dict[str, pathlib.Path] = {}

    spider_src = pathlib.Path(args.spider)
    if (spider_src / "images").is_dir():
        t0 = _stage(f"1. convert SPIDER ({spider_src})")
        rc = spider.main(["--src", str(spider_src), "--out", str(out / "spider")])
        if rc != 0:
            print(f"spoils-demo: SPIDER conversion failed (exit {rc})", file=sys.stderr)
            return rc
        datasets["spider"] = out / "spider"
        _done(t0)
    else:
        print(f"\n=== 1. SPIDER sample not found at {spider_src}: skipped (synthetic only) ===")

    t0 = _stage("2. synthetic cohort")
    rc = synthetic.main(["--patients", str(args.synth_patients), "--slices-per-patient",
                         str(args.synth_slices), "--seed", str(args.seed),
                         "--out", str(out / "synthetic")])
    if rc != 0:
        return rc
    datasets["synthetic"] = out / "synthetic"
    _done(t0)

    for name, d in datasets.items():
        t0 = _stage(f"3. patient-level folds ({name})")
        k = min(8, len({p.parent.name for p in layout.list_labelme_jsons(d)}))
        rc = folds.main(["--data", str(d), "--k", str(k), "--seed", str(args.seed)])
        if rc != 0:
            return rc
        _done(t0)

    from spoils_tf.data import tfds_builder
    for name, d in datasets.items():
        t0 = _stage(f"4. TFDS dataset spoils_labelme/{name}")
        ds, info = tfds_builder.load_dataset(str(d), str(out / "tfds"), name)
        print(f"    {info.full_name}: {info.splits['train'].num_examples} examples "
              f"-> {info.data_dir}")
        _done(t0)

    try:
        from spoils_tf.geometry import features
    except ModuleNotFoundError:
        features = None
    if features is not None:
        for name, d in datasets.items():
            t0 = _stage(f"5. geometry features ({name})")
            rc = features.main(["--data", str(d), "--out", str(out / f"features_{name}.parquet")])
            if rc != 0:
                return rc
            _done(t0)

    _stage("summary")
    table = pd.DataFrame([summarize(d, n) for n, d in datasets.items()])
    print(table.to_string(index=False))
    table.to_csv(out / "summary.csv", index=False)
    print(f"\nspoils-demo: finished in {time.perf_counter() - t_start:.0f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
