"""Modules without a Keras model import without TensorFlow: the scikit-learn trainers, the
ensemble, the tables, the file writers, the synthetic cohort, the SPIDER converter, the
feature table, the serving modules, the pipeline stages (which load TensorFlow when they run)
and the ``spoils`` dispatcher with the commands whose ``--help`` must stay fast (each checked
in a fresh interpreter)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TF_FREE_MODULES = (
        "spoils_tf.fileio",
        "spoils_tf.data.synthetic",
        "spoils_tf.metrics.tables",
        "spoils_tf.train.grade_geometry_lib",
        "spoils_tf.train.ensemble_lib",
        "spoils_tf.train.seg_spacing_report",
        "spoils_tf.train.predicted_masks",
        "spoils_tf.cli",
        "spoils_tf.cli.demo",
        "spoils_tf.cli.predicted_masks",
        "spoils_tf.pipeline",
        "spoils_tf.data.layout",
        "spoils_tf.data.spider",
        "spoils_tf.geometry.features",
        "spoils_tf.classical.models",
        "spoils_tf.serve.assemble",
        "spoils_tf.serve.predictor",
        "spoils_tf.serve.report_data",
        "spoils_tf.serve.run",
        "spoils_tf.serve.segmenter",
        "spoils_tf.serve.batch",
        "spoils_tf.cli.predict",
        "spoils_tf.cli.serve",
        "spoils_tf.serve.web",
        "spoils_tf.serve.dicom_results",
        "spoils_tf.serve.pacs",
        "spoils_tf.classical.abstention",
        "spoils_tf.classical.calibrated",
        "spoils_tf.data.seg_constants",
        "spoils_tf.machine",
        "configs.seg_deeplabv3plus",
)


@pytest.mark.parametrize("module", TF_FREE_MODULES)
def test_module_imports_without_tensorflow(module):
    code = (f"import sys, {module}; "
            "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules); "
            "print(','.join(loaded))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"{module} imported {proc.stdout.strip()}"
