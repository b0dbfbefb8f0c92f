"""Radiomics per disc of a spoils dataset: a thin entry around
``spoils_tf.radiomics.table.run``; writes ``<workdir>/radiomics.parquet`` (+ .csv,
``radiomics_issues.csv``, ``radiomics_settings.json``, ``config.json``).

    python -m experiments.radiomics_features --config=configs/radiomics.py \
        --config.data.data_dir=runs/data/spider --workdir=runs/radiomics_spider
"""

from __future__ import annotations

from absl import app

from experiments import common

_FLAGS = common.define_flags("configs/radiomics.py:smoke", fold=False)


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.radiomics import table

    result = table.run(config, _FLAGS.workdir.value)
    print(result["summary"])


if __name__ == "__main__":
    app.run(main)
