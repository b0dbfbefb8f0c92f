"""Segmentation benchmarks: inference latency, inference paths, training and input throughput.

    .venv/bin/python benchmarks/bench_seg.py --out runs/bench_seg.json
    .venv/bin/python benchmarks/bench_seg.py --train-sizes 128,256 --latency-size 512
    .venv/bin/python benchmarks/bench_seg.py --paths all --skip-training --skip-pipeline
    .venv/bin/python benchmarks/bench_seg.py --sweep --skip-training --skip-pipeline

Measures, with random weights (speed does not depend on their values):

* a roofline: multiply-accumulates (MACs) of every convolution of DeepLabV3+ ResNet50 at
  ``latency_size``² and the float32 GEMM rate of this machine (a 2048² ``tf.matmul``, best of
  5); ``2 * MACs / rate`` is the least time one forward can take here (convolutions reach at
  most the GEMM rate);
* latency of one ``latency_size``² slice through the model (``model(x, training=False)`` in
  a ``tf.function`` with a fixed input signature), per precision policy (float32,
  mixed_bfloat16; mixed_float16 on GPU; the policy is set *before* the model is built):
  median, min and max wall time and median process CPU time of ``--repeats`` calls after
  2 warm-ups;
* ``--paths``: the same forward through each way the project or Keras can run it (``PATHS``),
  including ``seg_pipeline.make_predictor`` (the path of ``spoils segment``, the SavedModel and
  evaluation) and a reloaded SavedModel ``serving_default``, at 512x512 and 640x512 inputs;
  plus its pre- and post-processing alone;
* ``--sweep``: re-runs this script in child processes over oneDNN on/off
  (``TF_ENABLE_ONEDNN_OPTS``) and intra/inter-op thread settings (``--intra-op``,
  ``--inter-op``), which must be fixed before TensorFlow starts;
* training throughput (images/s) of ``train_on_batch`` at each ``--train-sizes`` (batch
  ``--train-batch``), float32 on CPU, mixed_float16 on GPU, median step time after warm-up;
* input pipeline throughput (images/s) of ``seg_pipeline.make_seg_dataset`` with
  augmentation at 512², from in-memory 640x512 uint8 slices.

Prints a summary and writes JSON with ``machine_info`` (CPU model, cores, SIMD flags, TF/Keras
versions, GPUs, thread settings). On a shared machine wall times grow with the load of other
jobs: each measurement records ``os.getloadavg()`` before and after, and the process CPU time
(all threads), which grows much less with the load than the wall time does.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spoils_tf import fileio, labels  # noqa: E402
from spoils_tf.data import seg_pipeline  # noqa: E402
from spoils_tf.models.deeplabv3plus import DeepLabV3Plus  # noqa: E402
from spoils_tf.models.flops import conv_macs  # noqa: E402
from spoils_tf.train import common  # noqa: E402

PATHS: tuple[str, ...] = (
        "graph",            # tf.function(model(x, training=False)), fixed input signature
        "graph_nosig",      # the same without an input signature (traced on first call)
        "eager",            # model(x, training=False) outside tf.function
        "predict",          # model.predict(x) (builds a tf.data pipeline per call)
        "predict_on_batch",
        "xla",              # tf.function(jit_compile=True)
        "predictor_512",    # seg_pipeline.make_predictor: uint8 512x512 -> label map
        "predictor_640x512",  # the same for a 640x512 SPIDER-size slice (letterbox + restore)
        "pre_post_640x512",   # make_predictor's pre- and post-processing without the model
        "savedmodel_640x512",  # export_saved_model + tf.saved_model.load: serving_default
)
_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def _stats(seconds: list[float], cpu_seconds: list[float] | None = None) -> dict[str, float]:
    out = {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
           "n": len(seconds)}
    if cpu_seconds:
        out["cpu_median_s"] = statistics.median(cpu_seconds)
    return out


def _time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Wall and process-CPU seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {**_stats(wall, cpu), "load1_before": load_before, "load1_after": os.getloadavg()[0]}


def machine_info() -> dict:
    """``common.machine_info()`` plus SIMD flags and the thread / oneDNN settings in force."""
    info = common.machine_info()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        flags = []
    info["simd_flags"] = [f for f in _SIMD_FLAGS if f in flags]
    info["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    info["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    info["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset)")
    return info


# === Roofline ===
def bench_roofline(size: int) -> dict:
    model = DeepLabV3Plus(input_shape=(size, size, 3))
    macs = conv_macs(model)
    n = 2048
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(tf.matmul, autograph=False)
    t = _time_calls(lambda: matmul(a, b).numpy(), repeats=5, warmup=1)
    gflops = 2 * n ** 3 / t["min_s"] / 1e9
    gflops_cpu = 2 * n ** 3 / t["cpu_median_s"] / 1e9
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"size": size, "conv_gmacs": macs / 1e9, "gemm_gflop_per_s": gflops,
            "gemm_gflop_per_cpu_s": gflops_cpu, "cores": cores, "gemm_load1": t["load1_before"],
            "least_forward_s": 2 * macs / (gflops * 1e9),
            "least_forward_idle_s": 2 * macs / (gflops_cpu * 1e9 * cores)}


# === Latency ===
def _forward(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """``x -> model(x, training=False)`` as a named function (AutoGraph cannot read lambdas
    that share a line)."""
    def forward(x):
        return model(x, training=False)
    return forward


def bench_latency(size: int, policy: str, repeats: int) -> dict:
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = DeepLabV3Plus(input_shape=(size, size, 3))
        fn = tf.function(_forward(model), jit_compile=False,
                         input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
        x = tf.random.uniform((1, size, size, 3), -120.0, 130.0)
        st = _time_calls(lambda: fn(x).numpy(), repeats)
        return {"size": size, "policy": policy, "params": model.count_params(), **st}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def bench_paths(size: int, policy: str, repeats: int, paths: list[str]) -> list[dict]:
    """One model (built under ``policy``), timed through each of ``paths`` (``PATHS``)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = DeepLabV3Plus(input_shape=(size, size, 3))
        rng = np.random.default_rng(0)
        x = tf.constant(rng.uniform(-120, 130, (1, size, size, 3)).astype(np.float32))
        img_sq = tf.constant(rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8))
        img_spider = tf.constant(rng.integers(0, 256, (1, size * 5 // 4, size, 3),
                                              dtype=np.uint8))
        results = []
        for name in paths:
            if name == "graph":
                f = tf.function(_forward(model),
                                input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
                call = lambda: f(x).numpy()  # noqa: E731
            elif name == "graph_nosig":
                g = tf.function(_forward(model))
                call = lambda: g(x).numpy()  # noqa: E731
            elif name == "eager":
                call = lambda: model(x, training=False).numpy()  # noqa: E731
            elif name == "predict":
                call = lambda: model.predict(x, verbose=0)  # noqa: E731
            elif name == "predict_on_batch":
                call = lambda: model.predict_on_batch(x)  # noqa: E731
            elif name == "xla":
                h = tf.function(_forward(model), jit_compile=True)
                call = lambda: h(x).numpy()  # noqa: E731
            elif name in ("predictor_512", "predictor_640x512"):
                p = seg_pipeline.make_predictor(model, "letterbox")
                img = img_sq if name == "predictor_512" else img_spider
                call = lambda p=p, img=img: p(img)["label_map"].numpy()  # noqa: E731
            elif name == "pre_post_640x512":
                call = _pre_post(size, img_spider)
            elif name == "savedmodel_640x512":
                from spoils_tf.export import serving
                tmp = tempfile.mkdtemp(prefix="bench_seg_")
                vdir = serving.export_saved_model(model, tmp, "seg", 1)
                sig = tf.saved_model.load(str(vdir)).signatures[serving.SIGNATURE_NAME]
                call = lambda: sig(**{serving.INPUT_NAME: img_spider})[  # noqa: E731
                        "label_map"].numpy()
            else:
                raise ValueError(f"--paths: unknown path {name!r}; expected one of {PATHS}")
            r = {"path": name, "size": size, "policy": policy, **_time_calls(call, repeats)}
            results.append(r)
            print(f"path {name:>20} {policy:>15}: median {1000 * r['median_s']:.0f} ms (min "
                  f"{1000 * r['min_s']:.0f}), CPU {1000 * r['cpu_median_s']:.0f} ms, load "
                  f"{r['load1_before']:.1f}->{r['load1_after']:.1f}", flush=True)
        return results
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _pre_post(size: int, images: tf.Tensor) -> Callable[[], object]:
    """``make_predictor``'s steps around the model, with a constant standing in for it."""
    num_classes = labels.NUM_SEG_CLASSES
    probs = tf.fill((1, size, size, num_classes), 1.0 / num_classes)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
                 autograph=False)
    def pre_post(imgs):
        shape = tf.shape(imgs)
        x = seg_pipeline.normalize_images(seg_pipeline.prepare_images(imgs, (size, size)))
        p = seg_pipeline.restore_resolution(probs + 0.0 * tf.reduce_mean(x), shape[1], shape[2])
        return tf.argmax(p, axis=-1, output_type=tf.int32)

    return lambda: pre_post(images).numpy()


# === Training and input pipeline ===
def bench_training(size: int, batch: int, steps: int, policy: str) -> dict:
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = DeepLabV3Plus(input_shape=(size, size, 3))
        model.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(),
                      jit_compile=False)
        x = np.random.uniform(-120, 130, (batch, size, size, 3)).astype(np.float32)
        y = np.random.randint(0, labels.NUM_SEG_CLASSES, (batch, size, size)).astype(np.int32)
        for _ in range(2):
            model.train_on_batch(x, y)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t)
        st = _stats(times)
        return {"size": size, "batch": batch, "policy": policy,
                "images_per_s": batch / st["median_s"], **st}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def bench_pipeline(n: int = 64, size: int = 512, batch: int = 8, repeats: int = 5) -> dict:
    """Augmented 512² examples/s of the training pipeline over ``n`` in-memory slices: median
    of ``repeats`` full passes after one warm-up batch."""
    rng = np.random.default_rng(0)
    examples = tf.data.Dataset.from_tensor_slices({
            "image": rng.integers(0, 256, (n, 640, 512, 1), dtype=np.uint8),
            "mask": rng.integers(0, labels.NUM_SEG_CLASSES, (n, 640, 512, 1), dtype=np.uint8),
            "patient": [f"p{i % 8}" for i in range(n)], "slice": np.arange(n, dtype=np.int32),
            "pixel_spacing_mm": np.ones((n, 2), np.float32), "key": [f"k{i}" for i in range(n)]})
    ds = seg_pipeline.make_seg_dataset(examples, image_size=(size, size), batch_size=batch,
                                       training=True, cache=None)
    for _ in ds.take(1):
        pass
    rates, load0 = [], os.getloadavg()[0]
    for _ in range(repeats):
        t = time.perf_counter()
        count = sum(int(img.shape[0]) for img, _ in ds)
        rates.append(count / (time.perf_counter() - t))
    return {"size": size, "images_per_pass": count, "repeats": repeats,
            "images_per_s": statistics.median(rates), "images_per_s_all": rates,
            "load1_before": load0, "load1_after": os.getloadavg()[0],
            "augment": True, "cache": False}


# === Sweep ===
# (TF_ENABLE_ONEDNN_OPTS, intra-op threads, inter-op threads); 0 threads = TensorFlow's default
SWEEP: tuple[tuple[str, int, int], ...] = (
        ("1", 0, 0), ("0", 0, 0), ("1", 2, 1), ("1", 1, 1), ("0", 2, 1))


def run_sweep(size: int, repeats: int, policies: list[str]) -> list[dict]:
    """Runs this script once per ``SWEEP`` setting (a fresh process each) and collects the
    ``latency`` entries; a failed child is reported with its exit status, not dropped."""
    out = []
    for onednn, intra, inter in SWEEP:
        with tempfile.TemporaryDirectory(prefix="bench_seg_sweep_") as tmp:
            child_json = pathlib.Path(tmp) / "child.json"
            cmd = [sys.executable, __file__, "--latency-size", str(size), "--repeats",
                   str(repeats), "--policies", ",".join(policies), "--skip-training",
                   "--skip-pipeline", "--skip-roofline", "--intra-op", str(intra),
                   "--inter-op", str(inter), "--out", str(child_json)]
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  check=False)
            setting = {"TF_ENABLE_ONEDNN_OPTS": onednn, "intra_op": intra, "inter_op": inter}
            if proc.returncode != 0 or not child_json.is_file():
                tail = proc.stdout.decode("utf-8", "replace")[-500:]
                print(f"sweep {setting}: FAILED (exit {proc.returncode}): {tail}", flush=True)
                out.append({**setting, "error": f"exit {proc.returncode}: {tail}"})
                continue
            for r in json.loads(child_json.read_text())["latency"]:
                out.append({**setting, **r})
                print(f"sweep oneDNN={onednn} intra={intra} inter={inter} {r['policy']:>15}: "
                      f"median {1000 * r['median_s']:.0f} ms (min {1000 * r['min_s']:.0f}), CPU "
                      f"{1000 * r['cpu_median_s']:.0f} ms, load {r['load1_before']:.1f}",
                      flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--policies", default="float32,mixed_bfloat16")
    p.add_argument("--paths", default="",
                   help=f"comma list of inference paths to time, or 'all': {','.join(PATHS)}")
    p.add_argument("--sweep", action="store_true",
                   help="oneDNN on/off x thread settings, each in a child process")
    p.add_argument("--intra-op", type=int, default=0, help="0 = TensorFlow's default")
    p.add_argument("--inter-op", type=int, default=0, help="0 = TensorFlow's default")
    p.add_argument("--train-sizes", default="128,256")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--pipeline-repeats", type=int, default=5)
    p.add_argument("--skip-roofline", action="store_true")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench_seg.json"))
    args = p.parse_args(argv)
    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    policies = [s for s in args.policies.split(",") if s]
    if gpu and "mixed_float16" not in policies:
        policies.append("mixed_float16")
    paths = list(PATHS) if args.paths == "all" else [s for s in args.paths.split(",") if s]
    result = {"machine": machine_info(), "loadavg_start": os.getloadavg(), "roofline": None,
              "latency": [], "paths": [], "sweep": [], "training": [], "pipeline": None}
    if not args.skip_roofline:
        r = bench_roofline(args.latency_size)
        result["roofline"] = r
        print(f"roofline {r['size']}²: {r['conv_gmacs']:.1f} GMAC conv, GEMM "
              f"{r['gemm_gflop_per_s']:.0f} GFLOP/s (load {r['gemm_load1']:.1f}) -> a forward "
              f"needs at least {1000 * r['least_forward_s']:.0f} ms here; GEMM "
              f"{r['gemm_gflop_per_cpu_s']:.0f} GFLOP per CPU-second -> at least "
              f"{1000 * r['least_forward_idle_s']:.0f} ms on {r['cores']} idle cores",
              flush=True)
    for policy in policies:
        r = bench_latency(args.latency_size, policy, args.repeats)
        result["latency"].append(r)
        print(f"latency {r['size']}² {policy:>15}: median {1000 * r['median_s']:.0f} ms "
              f"(min {1000 * r['min_s']:.0f}, max {1000 * r['max_s']:.0f}, n={r['n']}), CPU "
              f"{1000 * r['cpu_median_s']:.0f} ms, load {r['load1_before']:.1f}, "
              f"{r['params']:,} params", flush=True)
    if paths:
        for policy in policies:
            result["paths"] += bench_paths(args.latency_size, policy, args.repeats, paths)
    if args.sweep:
        result["sweep"] = run_sweep(args.latency_size, args.repeats, policies)
    train_policy = "mixed_float16" if gpu else "float32"
    if not args.skip_training:
        for size in [int(s) for s in args.train_sizes.split(",") if s]:
            r = bench_training(size, args.train_batch, args.train_steps, train_policy)
            result["training"].append(r)
            print(f"training {size}² batch {r['batch']} {train_policy}: "
                  f"{r['images_per_s']:.2f} images/s (median step {r['median_s']:.2f} s)",
                  flush=True)
    if not args.skip_pipeline:
        r = bench_pipeline(repeats=args.pipeline_repeats)
        result["pipeline"] = r
        print(f"input pipeline 512² with augmentation: median {r['images_per_s']:.1f} images/s "
              f"of {r['repeats']} passes (load {r['load1_before']:.1f})", flush=True)
    result["loadavg_end"] = os.getloadavg()
    fileio.write_json(args.out, result, sort_keys=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
