"""Disc grading by nested patient-grouped CV (geometry / radiomics / both): a thin entry
around ``grade_nested_lib.run``.

    python -m experiments.grade_nested --config=configs/grade_nested.py:smoke \
        --workdir=runs/grade_nested_smoke
    nice -n 19 python -m experiments.grade_nested --config=configs/grade_nested.py:cpu \
        --config.data.radiomics_path=runs/radiomics_spider/radiomics.parquet \
        --workdir=runs/grade_nested [--fold=3]
"""

from __future__ import annotations

from absl import app

from experiments import common

_FLAGS = common.define_flags("configs/grade_nested.py:smoke")


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.train import grade_nested_lib

    result = grade_nested_lib.run(config, _FLAGS.workdir.value)
    print(result["markdown"])


if __name__ == "__main__":
    app.run(main)
