"""Segmentation benchmarks: inference latency, training throughput, input-pipeline throughput.

    .venv/bin/python benchmarks/bench_seg.py --out runs/bench_seg.json
    .venv/bin/python benchmarks/bench_seg.py --train-sizes 128,256 --latency-size 512

Measures, with random weights (speed does not depend on their values):

* latency of one ``latency_size``² slice through DeepLabV3+ ResNet50 (``model(x,
  training=False)`` in a ``tf.function``), per precision policy (float32, mixed_bfloat16;
  mixed_float16 on GPU): median, min and max of ``--repeats`` timed calls after 2 warm-ups;
* training throughput (images/s) of ``train_on_batch`` at each ``--train-sizes`` (batch
  ``--train-batch``), float32 on CPU, mixed_float16 on GPU, median step time after warm-up;
* input pipeline throughput (images/s) of ``seg_pipeline.make_seg_dataset`` with
  augmentation at 512², from in-memory 640x512 uint8 slices.

Prints a summary and writes JSON with ``machine_info`` (CPU model, cores, TF/Keras versions,
GPUs). On a shared machine, numbers vary with the load: record ``os.getloadavg()`` too.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spoils_tf import labels  # noqa: E402
from spoils_tf.data import seg_pipeline  # noqa: E402
from spoils_tf.models.deeplabv3plus import DeepLabV3Plus  # noqa: E402
from spoils_tf.train import common  # noqa: E402


def _stats(seconds: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "n": len(seconds)}


def bench_latency(size: int, policy: str, repeats: int) -> dict:
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = DeepLabV3Plus(input_shape=(size, size, 3))
        fn = tf.function(lambda x: model(x, training=False), jit_compile=False)
        x = tf.random.uniform((1, size, size, 3), -120.0, 130.0)
        for _ in range(2):
            fn(x).numpy()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x).numpy()
            times.append(time.perf_counter() - t)
        return {"size": size, "policy": policy, "params": model.count_params(), **_stats(times)}
    finally:
        keras.mixed_precision.set_global_policy("float32")


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


def bench_pipeline(n: int = 64, size: int = 512, batch: int = 8) -> dict:
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
    t = time.perf_counter()
    count = sum(int(img.shape[0]) for img, _ in ds)
    dt = time.perf_counter() - t
    return {"size": size, "images": count, "seconds": dt, "images_per_s": count / dt,
            "augment": True, "cache": False}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--policies", default="float32,mixed_bfloat16")
    p.add_argument("--train-sizes", default="128,256")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench_seg.json"))
    args = p.parse_args(argv)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    policies = [s for s in args.policies.split(",") if s]
    if gpu and "mixed_float16" not in policies:
        policies.append("mixed_float16")
    result = {"machine": common.machine_info(), "loadavg_start": os.getloadavg(),
              "latency": [], "training": [], "pipeline": None}
    for policy in policies:
        r = bench_latency(args.latency_size, policy, args.repeats)
        result["latency"].append(r)
        print(f"latency {r['size']}² {policy:>15}: median {1000 * r['median_s']:.0f} ms "
              f"(min {1000 * r['min_s']:.0f}, max {1000 * r['max_s']:.0f}, n={r['n']}), "
              f"{r['params']:,} params", flush=True)
    train_policy = "mixed_float16" if gpu else "float32"
    for size in [int(s) for s in args.train_sizes.split(",") if s]:
        r = bench_training(size, args.train_batch, args.train_steps, train_policy)
        result["training"].append(r)
        print(f"training {size}² batch {r['batch']} {train_policy}: {r['images_per_s']:.2f} "
              f"images/s (median step {r['median_s']:.2f} s)", flush=True)
    if not args.skip_pipeline:
        r = bench_pipeline()
        result["pipeline"] = r
        print(f"input pipeline 512² with augmentation: {r['images_per_s']:.1f} images/s", flush=True)
    result["loadavg_end"] = os.getloadavg()
    common.write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
