"""tf.distribute on one CPU host: the segmentation trainer (``tools/seg_worker.py``, i.e.
``python -m experiments.seg`` plus a weights dump and a self-kill hook) run as subprocesses.

* MirroredStrategy over 2 logical CPU devices gives the weights of one device with the same
  global batch;
* two ``MultiWorkerMirroredStrategy`` workers on 127.0.0.1 (``TF_CONFIG``) end with the same
  weights as each other and as one device; only the chief writes into the workdir;
* a worker killed mid-run (SIGKILL at the start of epoch 2) and both restarted resume from
  the chief's ``BackupAndRestore`` state to the weights of the uninterrupted run.

Every subprocess has a timeout and its process group is killed in a ``finally``; ports are
found by binding port 0 on 127.0.0.1. The library pieces (TF_CONFIG checks, roles, backup
callback) are tested in-process at the end.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = [sys.executable, str(REPO / "tools" / "seg_worker.py")]
EPOCHS = 4
# The unet smoke config shrunk further: 32x32, widths 4/8, fold 0 of the 4-patient synthetic
# cohort with 4 slices each = 8 training slices = 2 global batches of 4 per epoch.
SMOKE = ["--config=configs/seg_unet.py:smoke", "--fold=0", "--deterministic",
         "--config.data.image_size=(32,32)", "--config.model.kwargs.filters=(4,8)",
         "--config.data.synthetic.slices_per_patient=4", f"--config.train.epochs={EPOCHS}"]
RUN_TIMEOUT_S = 300
# Same global batches and same initial weights: the replicas' sums differ from one device's in
# float32 rounding only. Measured after the 8 steps (one device vs 2 CPU replicas): max |diff|
# 1.6e-6 over the trainable weights, 3e-4 on a BatchNorm moving variance of 259 (1.3e-6
# relative); per-epoch losses within 5e-7.
ATOL, RTOL = 5e-5, 1e-5


# === Processes ===
def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound to port 0 together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(tmp: pathlib.Path, tf_config: dict | None = None) -> dict[str, str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(REPO), TMPDIR=str(tmp))
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    tmp.mkdir(parents=True, exist_ok=True)
    return env


class Procs:
    """Started workers; every process group still alive is SIGKILLed on exit."""

    def __init__(self):
        self.procs: list[tuple[subprocess.Popen, pathlib.Path]] = []

    def start(self, args: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen:
        with open(log, "wb") as f:
            proc = subprocess.Popen(WORKER + args, cwd=REPO, env=env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def wait_all(self, timeout_s: float = RUN_TIMEOUT_S) -> None:
        """Waits for every started process; fails (with the log tails) on a timeout or a
        non-zero exit."""
        deadline = time.monotonic() + timeout_s
        for proc, log in self.procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{log.name} still running after {timeout_s} s:\n{_tail(log)}")
            assert proc.returncode == 0, f"{log.name} exited {proc.returncode}:\n{_tail(log)}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc, _ in self.procs:
            if proc.poll() is None:
                self.kill(proc)


def _tail(log: pathlib.Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:]


def _weights(path: pathlib.Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"weight_{i}"] for i in range(len(z.files))]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _assert_close(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert [x.shape for x in a] == [y.shape for y in b]
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_allclose(y, x, rtol=RTOL, atol=ATOL, err_msg=f"weight {i}")


def _history_epochs(path: pathlib.Path) -> list[int]:
    with open(path) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _cluster(ports: list[int]) -> list[dict]:
    """The TF_CONFIG of each of ``len(ports)`` workers on 127.0.0.1."""
    workers = [f"127.0.0.1:{p}" for p in ports]
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            for i in range(len(ports))]


def _start_workers(procs: Procs, root: pathlib.Path, workdir: pathlib.Path, tag: str,
                   extra: dict[int, list[str]] | None = None) -> list[subprocess.Popen]:
    started = []
    for i, tf_config in enumerate(_cluster(free_ports(2))):
        args = SMOKE + ["--strategy=multi_worker", f"--workdir={workdir}",
                        f"--weights_out={root / f'{tag}_w{i}.npz'}", *(extra or {}).get(i, [])]
        started.append(procs.start(args, _env(root / f"tmp_{tag}_w{i}", tf_config),
                                   root / f"{tag}_w{i}.log"))
    return started


# === Fixtures: the runs compared ===
@pytest.fixture(scope="module")
def one_device_and_mirrored(tmp_path_factory):
    """``(one device, 2 CPU replicas)``: the run dirs, weights and logs, run side by side."""
    root = tmp_path_factory.mktemp("mirrored")
    with Procs() as procs:
        procs.start(SMOKE + [f"--workdir={root / 'one'}", f"--weights_out={root / 'one.npz'}"],
                    _env(root / "tmp_one"), root / "one.log")
        procs.start(SMOKE + ["--strategy=mirrored", "--cpu_replicas=2",
                             f"--workdir={root / 'two'}", f"--weights_out={root / 'two.npz'}"],
                    _env(root / "tmp_two"), root / "two.log")
        procs.wait_all()
    return root


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Two MultiWorkerMirroredStrategy workers trained uninterrupted: the run root."""
    root = tmp_path_factory.mktemp("multi_worker")
    with Procs() as procs:
        _start_workers(procs, root, root / "workdir", "run")
        procs.wait_all()
    return root


# === MirroredStrategy ===
@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_matches_one_device(one_device_and_mirrored):
    root = one_device_and_mirrored
    assert "strategy mirrored with 2 replica(s)" in (root / "two.log").read_text()
    assert "strategy default with 1 replica(s)" in (root / "one.log").read_text()
    _assert_close(_weights(root / "one.npz"), _weights(root / "two.npz"))
    with open(root / "one" / "fold_0" / "history.csv") as f1, \
            open(root / "two" / "fold_0" / "history.csv") as f2:
        loss_one = [float(r["loss"]) for r in csv.DictReader(f1)]
        loss_two = [float(r["loss"]) for r in csv.DictReader(f2)]
    assert len(loss_one) == len(loss_two) == EPOCHS
    np.testing.assert_allclose(loss_two, loss_one, atol=1e-5)
    assert loss_one[-1] < loss_one[0] - 0.05      # it trained: 2.866 -> 2.777 here


# === MultiWorkerMirroredStrategy ===
@pytest.mark.slow
def test_two_workers_end_identical_and_only_the_chief_writes(two_workers,
                                                             one_device_and_mirrored):
    root = two_workers
    chief, other = _weights(root / "run_w0.npz"), _weights(root / "run_w1.npz")
    assert _max_diff(chief, other) == 0.0        # one all-reduced update, applied on both
    _assert_close(_weights(one_device_and_mirrored / "one.npz"), chief)
    fold = root / "workdir" / "fold_0"
    assert {"model.keras", "metrics.json", "history.csv"} <= {p.name for p in fold.iterdir()}
    assert not (fold / "backup").exists()        # removed after the finished fit
    assert _history_epochs(fold / "history.csv") == list(range(EPOCHS))
    metrics = json.loads((fold / "metrics.json").read_text())
    assert metrics["epochs_run"] == list(range(EPOCHS)) and "pixel_accuracy" in metrics
    other_log = (root / "run_w1.log").read_text()
    assert "the chief writes the results" in other_log
    # the non-chief wrote into a temporary folder (the path of its synthetic cohort is
    # printed) and removed it
    assert f"{root / 'tmp_run_w1'}/spoils_worker_" in other_log
    assert not list((root / "tmp_run_w1").glob("spoils_worker_*"))
    assert "strategy multi_worker with 2 replica(s)" in (root / "run_w0.log").read_text()


@pytest.mark.slow
def test_killed_worker_resumes_from_the_backup_to_the_same_weights(tmp_path, two_workers):
    workdir = tmp_path / "workdir"
    metadata = workdir / "fold_0" / "backup" / "training_metadata.json"
    with Procs() as procs:
        chief, other = _start_workers(procs, tmp_path, workdir, "killed",
                                      extra={1: ["--die_at_epoch=2"]})
        try:
            other.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker 1 did not die:\n{_tail(tmp_path / 'killed_w1.log')}")
        assert other.returncode == -signal.SIGKILL, _tail(tmp_path / "killed_w1.log")
        deadline = time.monotonic() + 60
        while not (metadata.is_file() and json.loads(metadata.read_text())["epoch"] == 2):
            assert time.monotonic() < deadline, _tail(tmp_path / "killed_w0.log")
            time.sleep(0.2)
        procs.kill(chief)                        # the chief waits for its peer: stop it too
    assert not (workdir / "fold_0" / "model.keras").exists()
    assert _history_epochs(workdir / "fold_0" / "history.csv") == [0, 1]

    with Procs() as procs:
        _start_workers(procs, tmp_path, workdir, "resumed")
        procs.wait_all()
    metrics = json.loads((workdir / "fold_0" / "metrics.json").read_text())
    assert metrics["epochs_run"] == [2, 3]
    assert _history_epochs(workdir / "fold_0" / "history.csv") == [0, 1, 2, 3]
    resumed = _weights(tmp_path / "resumed_w0.npz")
    assert _max_diff(resumed, _weights(tmp_path / "resumed_w1.npz")) == 0.0
    _assert_close(_weights(two_workers / "run_w0.npz"), resumed)


# === Library pieces, in-process ===
@pytest.mark.parametrize("tf_config, message", [
        (None, "TF_CONFIG is not set"),
        ("{not json", "not JSON"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "TF_CONFIG.cluster"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
         "TF_CONFIG.task"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}',
         "TF_CONFIG.task"),
])
def test_tf_config_errors_name_the_field(tf_config, message):
    from spoils_tf.train import common
    environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
    with pytest.raises(ValueError, match=message):
        common.check_tf_config(environ)


def test_tf_config_accepted_and_unknown_strategy_refused():
    from spoils_tf.train import common
    cfg = common.check_tf_config({"TF_CONFIG": json.dumps(_cluster([1234, 1235])[1])})
    assert cfg["task"] == {"type": "worker", "index": 1}
    with pytest.raises(ValueError, match="unknown strategy 'horovod'"):
        common.get_strategy("horovod")


def test_default_strategy_is_the_chief_and_its_output_dir_is_the_workdir(tmp_path):
    import tensorflow as tf
    from spoils_tf.train import distribute
    strategy = tf.distribute.get_strategy()
    assert distribute.is_chief(strategy) and not distribute.is_multi_worker(strategy)
    with distribute.worker_output_dir(tmp_path, chief=True) as out:
        assert out == tmp_path
    with distribute.worker_output_dir(tmp_path, chief=False) as out:
        assert out != tmp_path and out.is_dir()
        (out / "x.txt").write_text("scratch")
    assert not out.exists()


def test_training_input_positions_the_passes(tmp_path):
    """Pass e+1 of a reshuffling dataset is epoch e; resuming at epoch 1 starts at pass 2."""
    import tensorflow as tf
    from spoils_tf.train import distribute

    def make():
        return tf.data.Dataset.range(6).shuffle(6, seed=1, reshuffle_each_iteration=True)

    reference = make()
    passes = [list(reference.as_numpy_iterator()) for _ in range(4)]
    assert len({tuple(p) for p in passes}) > 1          # the shuffles do differ
    strategy = tf.distribute.get_strategy()
    assert list(distribute.training_input(strategy, make()).as_numpy_iterator()) == passes[1]
    resumed = distribute.training_input(strategy, make(), first_epoch=1)
    assert list(resumed.as_numpy_iterator()) == passes[2]


def _tiny_model():
    import keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_synchronize_batchnorm_switches_every_bn_layer_once():
    import keras
    from spoils_tf.train import distribute
    inner = _tiny_model()
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.BatchNormalization()])
    assert distribute.synchronize_batchnorm(outer) == 2
    assert distribute.synchronize_batchnorm(outer) == 0
    assert all(layer.synchronized for layer in inner.layers
               if isinstance(layer, keras.layers.BatchNormalization))


def test_backup_chief_writes_and_resumes_other_worker_writes_nothing(tmp_path):
    import keras
    from spoils_tf.train import distribute
    x = np.ones((8, 4), np.float32)
    y = np.zeros((8, 2), np.float32)

    other = distribute.BackupAndRestore(tmp_path / "other_backup", chief=False)
    _tiny_model().fit(x, y, epochs=2, verbose=0, callbacks=[other])
    assert not (tmp_path / "other_backup").exists()

    class StopAt1(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("stop")

    chief = distribute.BackupAndRestore(tmp_path / "backup", chief=True)
    with pytest.raises(RuntimeError, match="stop"):
        _tiny_model().fit(x, y, epochs=3, verbose=0, callbacks=[chief, StopAt1()])
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
            "latest.weights.h5", "training_metadata.json"]        # no temporary files left
    assert distribute.BackupAndRestore(tmp_path / "backup").resume_epoch() == 1
    history = _tiny_model().fit(x, y, epochs=3, verbose=0,
                                callbacks=[distribute.BackupAndRestore(tmp_path / "backup")])
    assert history.epoch == [1, 2]
    assert not (tmp_path / "backup").exists()                     # removed after the fit
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "training_metadata.json").write_text('{"epoch": "two"}')
    with pytest.raises(ValueError, match="training_metadata.json: 'epoch' must be an integer"):
        distribute.BackupAndRestore(tmp_path / "bad").resume_epoch()


def test_fixed_spacing_configs_refuse_a_distribution_strategy(tmp_path):
    from configs import seg_unet
    from spoils_tf.train import seg_lib
    config = seg_unet.get_config("spider_cpu_smoke")
    with pytest.raises(ValueError, match="--strategy=mirrored: fixed-spacing configs"):
        seg_lib.run(config, tmp_path / "w", strategy_name="mirrored")
    assert not (tmp_path / "w").exists()
