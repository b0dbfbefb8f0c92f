"""GPU kit: FLOP counting and MFU by hand, the pack tool, and tools/gpu_run.sh's CPU dry run."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from spoils_tf.data import folds as folds_lib
from spoils_tf.data import seg_arrays, synthetic
from spoils_tf.models import flops

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import gpu_kit  # noqa: E402
import gpu_pack  # noqa: E402


def test_conv_macs_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)             # 8*8 * 3*3*3*4 = 6912
    inner = keras.Model(inputs, x)
    outer_in = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(2, 1, strides=2)(inner(outer_in))        # 4*4 * 1*1*4*2 = 128
    y = keras.layers.BatchNormalization()(y)                         # not counted
    model = keras.Model(outer_in, y)
    assert flops.conv_macs(model) == 6912 + 128
    assert flops.train_flops_per_image(model) == 6 * (6912 + 128)


def test_mfu_by_hand():
    r = gpu_kit.with_mfu({"images_per_s": 100.0}, 2e12, 989.4e12)
    assert r["tflop_per_s"] == pytest.approx(200.0)                  # 100 img/s * 2 TFLOP
    assert r["mfu"] == pytest.approx(200e12 / 989.4e12)               # 0.2021
    assert gpu_kit.with_mfu({"images_per_s": 1.0}, 1.0, None)["mfu"] is None


def test_pack_skips_without_data(tmp_path, capsys):
    rc = gpu_pack.main(["--dataset", str(tmp_path / "none"), "--spider", str(tmp_path / "no"),
                        "--out", str(tmp_path / "pack"), "--no-wheels"])
    assert rc == 0 and "skipped" in capsys.readouterr().out
    assert not (tmp_path / "pack").exists()


def test_pack_of_a_dataset(tmp_path):
    data = tmp_path / "data"
    synthetic.write_complete_cohort(data, 2, 3, 0, progress=False)
    folds_lib.write_dataset_folds(data, k=2, seed=0)
    out = tmp_path / "pack"
    assert gpu_pack.main(["--dataset", str(data), "--out", str(out), "--image-size", "64",
                          "--slices-per-patient", "2", "--no-wheels"]) == 0
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["slices"] == 4 and manifest["patients"] == 2
    assert manifest["total_bytes"] == sum(f["bytes"] for f in manifest["files"].values())
    arrays = seg_arrays.load_npz(out / "spider_64.npz")
    assert arrays.images.shape == (4, 64, 64) and arrays.images.dtype == np.uint8
    assert (out / "folds.json").read_bytes() == (data / "folds.json").read_bytes()
    # a limit the pack cannot meet fails with exit 1
    assert gpu_pack.main(["--dataset", str(data), "--out", str(out), "--image-size", "64",
                          "--slices-per-patient", "2", "--no-wheels", "--max-mib", "0.001"]) == 1


@pytest.mark.slow
def test_gpu_run_dry_run_on_cpu(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "OUT": str(out), "WORKDIR": str(tmp_path / "work"),
           "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(["bash", "tools/gpu_run.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_kit.json").read_text())
    assert report["env"]["backend"] == "jax" and report["env"]["peak_bf16"] is None
    assert report["precision_policy"] == "mixed_bfloat16"
    for key in ("throughput_jit", "throughput_nojit"):
        r = report[key]
        assert r["images_per_s"] > 0 and r["mfu"] is None and len(r["step_s"]) == 2
        assert r["jit_compile"] == (key == "throughput_jit")
        assert r["dtype_policy"] == "mixed_bfloat16"
    # the smoke model's FLOPs, counted again here under this process's backend
    from configs import seg_deeplabv3plus
    from spoils_tf.models import build_segmentation_model
    c = seg_deeplabv3plus.get_config("smoke")
    model = build_segmentation_model({"name": "deeplabv3plus",
                                      "kwargs": {**c.model.kwargs, "input_shape": (64, 64, 3)}})
    assert report["throughput_jit"]["train_flops_per_image"] == 6 * flops.conv_macs(model)
    summary = report["cv"]["summary"]
    assert summary["folds"] == [0, 1] and summary["backend"] == "jax"
    dice = summary["dice/fg_macro"]
    assert all(0.0 <= v <= 1.0 for v in dice["per_fold"].values())
    assert dice["mean"] == pytest.approx(np.mean(list(dice["per_fold"].values())))
    for fold in report["cv"]["folds"].values():
        assert len(fold["train_loss"]) == 2 and fold["epoch_seconds"]
        assert fold["augmented"] is True        # the smoke config's augment, via SegAugment
    table = (out / "cv_table.md").read_text().splitlines()
    assert len(table) == 2 + 2 + 1 and table[-1].startswith("| mean ± SD")
    assert (out / "nvidia_smi.txt").is_file() and (out / "gpu_kit.log").is_file()
    # every file fits the run tool's rules for what comes back (<= 8, plain names)
    assert len(list(out.iterdir())) <= 8
