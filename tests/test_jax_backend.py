"""The backend-agnostic training path (keras_backend_lib + seg_arrays) under JAX and TensorFlow.

Two subprocesses train fold 0 of the ``smoke`` DeepLabV3+ config (augmentation off: the backends'
random draws differ) for the same number of steps
on the same synthetic cohort, the same folds and the same batch order, from the same initial
weights (a ``.weights.h5`` written by the TensorFlow run: Keras weight files are
backend-independent). Only dropout's random masks differ between the backends, so the losses
must agree closely, and the JAX process must not have imported TensorFlow at all.

The shipped segmentation network (saved by the TensorFlow path) loads under JAX and gives the
same probabilities and CE + soft-Dice loss as under TensorFlow: the model and loss code is
backend-agnostic (``keras.ops`` only).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from spoils_tf.data import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 6      # the training fold is one batch of 4: one step per epoch
# Stated tolerances. Same start and batches: the first step's loss differs only by dropout
# (rate 0.1 after ASPP) and float32 order of operations; each backend's relative decrease
# (last / first loss) after 6 Adam steps must agree within 0.03. Measured on 2 CPU cores:
# first loss 2.570 (TF) vs 2.579 (JAX), last / first 0.890 vs 0.883.
FIRST_LOSS_RTOL = 0.02
TREND_ATOL = 0.03

_SCRIPT = """
import json, sys
from configs import seg_deeplabv3plus
from spoils_tf.train import keras_backend_lib as k
data, workdir, init, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = seg_deeplabv3plus.get_config("smoke")
c.data.labelme_dir = data
c.fold = "0"
c.train.epochs = epochs
c.train.verbose = 0
c.data.augment = {}        # keras.random draws differ between backends
if sys.argv[5] == "save_init":
    k.set_seed(c.seed)
    k.compile_model(c).save_weights(init)
# XLA for JAX (its op-by-op mode compiles every primitive: slower here); TF as configured
r = k.run(c, workdir, init_weights=init, jit_compile=k.keras.backend.backend() == "jax")
m = r["folds"][0]
print("RESULT " + json.dumps({
        "backend": r["backend"], "loss": m["train_loss"], "dice": m["dice/fg_macro"],
        "seconds": m["train_seconds"] + m["eval_seconds"],
        "tf_modules": sorted(n for n in sys.modules if n == "tensorflow"
                             or n.startswith("tensorflow.")),
        "jax_modules": "jax" in sys.modules}))
"""


def _train(backend: str, data: pathlib.Path, workdir: pathlib.Path, init: pathlib.Path,
           mode: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(data), str(workdir), str(init),
                           str(EPOCHS), mode], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[-1][len("RESULT "):])


@pytest.mark.slow
def test_jax_and_tensorflow_train_alike(tmp_path):
    pytest.importorskip("jax")
    data = tmp_path / "cohort"
    synthetic.write_complete_cohort(data, 4, 2, 0, progress=False)   # the smoke cohort
    init = tmp_path / "init.weights.h5"
    tf_run = _train("tensorflow", data, tmp_path / "tf", init, "save_init")
    jax_run = _train("jax", data, tmp_path / "jax", init, "load_init")

    assert tf_run["backend"] == "tensorflow" and jax_run["backend"] == "jax"
    assert jax_run["tf_modules"] == [], "the JAX run imported TensorFlow"
    assert jax_run["jax_modules"]
    for run in (tf_run, jax_run):
        loss = run["loss"]
        assert len(loss) == EPOCHS
        assert loss[-1] < loss[0]
        assert sum(loss[EPOCHS // 2:]) < sum(loss[:EPOCHS // 2])
    print("losses: tf", tf_run["loss"], tf_run["seconds"], "jax", jax_run["loss"],
          jax_run["seconds"])
    assert jax_run["loss"][0] == pytest.approx(tf_run["loss"][0], rel=FIRST_LOSS_RTOL)
    trend_tf = tf_run["loss"][-1] / tf_run["loss"][0]
    trend_jax = jax_run["loss"][-1] / jax_run["loss"][0]
    assert abs(trend_tf - trend_jax) <= TREND_ATOL, (tf_run["loss"], jax_run["loss"])
    # both wrote the same workdir layout
    for name in ("tf", "jax"):
        summary = json.loads((tmp_path / name / "cv_summary.json").read_text())
        assert summary["folds"] == [0] and summary["augmented"] is False


_SHIPPED_SCRIPT = """
import sys
import numpy as np
from spoils_tf.models import load_model, losses
model = load_model(sys.argv[1])
shape = tuple(int(s) if s else 64 for s in model.input_shape[1:])
rng = np.random.default_rng(0)
x = rng.normal(0.0, 1.0, (2,) + shape).astype(np.float32)
y = rng.integers(0, model.output_shape[-1], (2,) + shape[:2]).astype(np.int32)
probs = np.asarray(model.predict_on_batch(x), np.float32)
loss = float(losses.segmentation_loss("ce+dice")(y, probs))
np.savez(sys.argv[2], x=x, y=y, probs=probs, loss=loss,
         tf_imported="tensorflow" in sys.modules)
"""


@pytest.mark.slow
def test_shipped_model_and_loss_alike_under_jax(tmp_path):
    """The shipped segmentation network (a .keras saved by the TF path) loads under JAX and gives
    the TensorFlow probabilities and CE + soft-Dice loss on the same input."""
    pytest.importorskip("jax")
    from spoils_tf import weights
    path = weights.DEFAULT_BUNDLE / "spoils_seg" / "2" / "model.keras"
    if not path.is_file():
        pytest.skip(f"{path} not shipped")
    out = {}
    for backend in ("jax", "tensorflow"):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
               "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", _SHIPPED_SCRIPT, str(path),
                               str(tmp_path / f"{backend}.npz")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[backend] = dict(np.load(tmp_path / f"{backend}.npz"))
    jax_out, tf_out = out["jax"], out["tensorflow"]
    assert not bool(jax_out["tf_imported"])
    np.testing.assert_array_equal(jax_out["x"], tf_out["x"])
    # float32 convolutions in another order of summation: probabilities agree to 1e-4
    np.testing.assert_allclose(jax_out["probs"], tf_out["probs"], atol=1e-4)
    agree = (jax_out["probs"].argmax(-1) == tf_out["probs"].argmax(-1)).mean()
    assert agree >= 0.999
    assert float(jax_out["loss"]) == pytest.approx(float(tf_out["loss"]), rel=1e-4)
