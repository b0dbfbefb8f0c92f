"""Input-pipeline throughput: host-side 512² images/s, host vs device augmentation.

    .venv/bin/python benchmarks/bench_input_pipeline.py \
        --out benchmarks/results/bench_input_pipeline_device.json

Measures ``seg_pipeline.make_seg_dataset`` (batch 8, 512², letterboxed from ``--n`` in-memory
640x512 uint8 slices, SPIDER's size) as images/s delivered to the consumer, median of
``--repeats`` timed passes after one warm-up pass (which also fills the cache):

* ``host_nocache``: augmentation on the host, no cache (``bench_seg.py``'s pipeline number:
  letterbox + augment + normalise every example, every pass);
* ``host_cached``: augmentation on the host, the letterboxed uint8 slices cached in memory
  (the training default ``config.data.cache=""``);
* ``device_cached``: ``augment_on="device"``: the host reads the cached uint8 slices,
  shuffles and batches; augmentation and normalisation are left to the train step;
* ``device_layer``: that train-step work alone on this CPU, ``augment_layers.SegAugment`` +
  ``normalize_images`` on a uint8 batch of 8 in a ``tf.function`` (on a GPU it runs there;
  on a CPU it costs the same CPU the host path spends);
* each mode at ``num_parallel_calls`` 1, 2 and AUTOTUNE;
* ``--cores-sweep``: the cached modes again in child processes pinned with ``taskset`` to
  1 and 2 cores.

Random pixels: the rate does not depend on their values. Every measurement records the
1-minute load average before and after (the machine may be shared), the process CPU seconds
per image and the cores kept busy (CPU seconds / wall seconds: how far the pipeline spreads
over the cores, readable even when other jobs slow the wall clock); the JSON carries the CPU
model (``/proc/cpuinfo``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spoils_tf import fileio, labels  # noqa: E402
from spoils_tf.data import augment_layers, seg_pipeline  # noqa: E402
from spoils_tf.train import common  # noqa: E402

MODES = ("host_nocache", "host_cached", "device_cached")
PARALLEL = {"1": 1, "2": 2, "autotune": tf.data.AUTOTUNE}


def _examples(n: int) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    return tf.data.Dataset.from_tensor_slices({
            "image": rng.integers(0, 256, (n, 640, 512, 1), dtype=np.uint8),
            "mask": rng.integers(0, labels.NUM_SEG_CLASSES, (n, 640, 512, 1), dtype=np.uint8),
            "patient": [f"p{i % 8}" for i in range(n)], "slice": np.arange(n, dtype=np.int32),
            "pixel_spacing_mm": np.ones((n, 2), np.float32), "key": [f"k{i}" for i in range(n)]})


def _load() -> float:
    return os.getloadavg()[0]


def bench_mode(mode: str, parallel: str, n: int, repeats: int, device_passes: int) -> dict:
    """Images/s of one pipeline mode: median of ``repeats`` timed runs of one pass over the
    ``n`` slices (``device_passes`` passes per run for the fast ``device_cached``)."""
    ds = seg_pipeline.make_seg_dataset(
            _examples(n), image_size=(512, 512), batch_size=8, training=True,
            cache=None if mode == "host_nocache" else "",
            augment_on="device" if mode == "device_cached" else "host",
            num_parallel_calls=PARALLEL[parallel], shuffle_buffer=n)
    t = time.perf_counter()
    count = sum(int(img.shape[0]) for img, _ in ds)        # warm-up; fills the cache
    t = time.perf_counter() - t
    passes = device_passes if mode == "device_cached" else 1
    rates, cpu, busy, load0 = [], [], [], _load()
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        images = 0
        for _ in range(passes):
            images += sum(int(img.shape[0]) for img, _ in ds)
        wall = time.perf_counter() - w
        rates.append(images / wall)
        cpu.append((time.process_time() - c) / images)
        busy.append((time.process_time() - c) / wall)
    return {"mode": mode, "num_parallel_calls": parallel, "images_per_pass": count,
            "passes_per_run": passes, "repeats": repeats, "warmup_pass_s": t,
            "images_per_s": statistics.median(rates), "images_per_s_all": rates,
            "cpu_s_per_image": statistics.median(cpu), "cores_busy": statistics.median(busy),
            "load1_before": load0, "load1_after": _load()}


def bench_device_layer(repeats: int, batch: int = 8) -> dict:
    """``SegAugment`` + ``normalize_images`` on a uint8 batch, on this machine's CPU."""
    layer = augment_layers.SegAugment(seed=0)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (batch, 512, 512, 1), dtype=np.uint8))
    masks = tf.constant(rng.integers(0, labels.NUM_SEG_CLASSES, (batch, 512, 512),
                                     dtype=np.int32))

    @tf.function
    def step(x, m):
        x, m = layer((x, m), training=True)
        return augment_layers.normalize_images(x), m

    for _ in range(2):
        step(images, masks)[0].numpy()
    rates, cpu, load0 = [], [], _load()
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        step(images, masks)[0].numpy()
        rates.append(batch / (time.perf_counter() - w))
        cpu.append((time.process_time() - c) / batch)
    return {"mode": "device_layer", "batch": batch, "repeats": repeats,
            "images_per_s": statistics.median(rates), "images_per_s_all": rates,
            "cpu_s_per_image": statistics.median(cpu), "load1_before": load0,
            "load1_after": _load()}


def run_cores_sweep(args) -> list[dict]:
    """The cached modes at AUTOTUNE in child processes pinned to 1 and 2 cores."""
    taskset = shutil.which("taskset")
    if taskset is None:
        print("cores sweep: no taskset on this machine; skipped", flush=True)
        return []
    cores = sorted(os.sched_getaffinity(0))
    out = []
    for k in (1, 2):
        if k > len(cores):
            continue
        cpu_list = ",".join(str(c) for c in cores[:k])
        with tempfile.TemporaryDirectory(prefix="bench_input_") as tmp:
            child_json = pathlib.Path(tmp) / "child.json"
            cmd = [taskset, "-c", cpu_list, sys.executable, __file__, "--modes",
                   "host_cached,device_cached", "--parallel", "autotune", "--n", str(args.n),
                   "--repeats", str(args.repeats), "--device-passes",
                   str(args.device_passes), "--skip-device-layer", "--out",
                   str(child_json)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  check=False)
            if proc.returncode != 0 or not child_json.is_file():
                tail = proc.stdout.decode("utf-8", "replace")[-500:]
                print(f"cores {k}: FAILED (exit {proc.returncode}): {tail}", flush=True)
                out.append({"cores": k, "error": f"exit {proc.returncode}: {tail}"})
                continue
            for r in json.loads(child_json.read_text())["pipeline"]:
                out.append({"cores": k, "cpu_list": cpu_list, **r})
                print(f"cores {k} ({cpu_list}): {r['mode']:>14} {r['images_per_s']:8.1f} img/s "
                      f"({r['cores_busy']:.2f} cores busy; load {r['load1_before']:.1f})",
                      flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--parallel", default="1,2,autotune", help="num_parallel_calls values")
    p.add_argument("--n", type=int, default=64, help="slices in the in-memory dataset")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device-passes", type=int, default=8,
                   help="passes per timed run of device_cached (one pass takes ~0.1 s)")
    p.add_argument("--skip-device-layer", action="store_true")
    p.add_argument("--cores-sweep", action="store_true")
    p.add_argument("--out", type=pathlib.Path,
                   default=pathlib.Path("benchmarks/results/bench_input_pipeline_device.json"))
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    parallel = [v for v in args.parallel.split(",") if v]
    for m in modes:
        if m not in MODES:
            p.error(f"--modes: unknown mode {m!r}; expected some of {MODES}")
    for v in parallel:
        if v not in PARALLEL:
            p.error(f"--parallel: unknown value {v!r}; expected some of {tuple(PARALLEL)}")
    result = {"machine": common.machine_info(), "loadavg_start": os.getloadavg(),
              "cores_available": len(os.sched_getaffinity(0)), "pipeline": [],
              "device_layer": None, "cores_sweep": []}
    for mode in modes:
        for v in parallel:
            r = bench_mode(mode, v, args.n, args.repeats, args.device_passes)
            result["pipeline"].append(r)
            print(f"{mode:>14} num_parallel_calls={v:>8}: {r['images_per_s']:8.1f} img/s "
                  f"(median of {r['repeats']}; {1000 * r['cpu_s_per_image']:.1f} CPU-ms/image; "
                  f"{r['cores_busy']:.2f} cores busy; load {r['load1_before']:.1f}->"
                  f"{r['load1_after']:.1f})", flush=True)
    if not args.skip_device_layer:
        r = bench_device_layer(args.repeats)
        result["device_layer"] = r
        print(f"{'device_layer':>14} (SegAugment + normalise, batch 8, on this CPU): "
              f"{r['images_per_s']:8.1f} img/s ({1000 * r['cpu_s_per_image']:.1f} "
              f"CPU-ms/image; load {r['load1_before']:.1f})", flush=True)
    if args.cores_sweep:
        result["cores_sweep"] = run_cores_sweep(args)
    result["loadavg_end"] = os.getloadavg()
    fileio.write_json(args.out, result, sort_keys=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
