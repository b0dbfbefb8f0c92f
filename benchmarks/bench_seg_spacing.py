"""Speed of the fixed-spacing segmentation recipe: the shipped model's CPU latency per slice
and the recipe's training throughput.

    .venv/bin/python benchmarks/bench_seg_spacing.py --out benchmarks/results/bench_seg_spacing.json

* latency: one 512 x 640 slice at 0.47 mm (SPIDER's size) through the shipped model
  (``spoils_tf.weights``): the network alone (``SpacingSegmenter.probabilities``: resample to
  the training spacing, network, back to 512 x 640) and the whole ``spoils segment`` path with
  the level labelling, once as given (``orientation="as_is"``), the orientation network alone,
  and a 2-D picture's whole path (orientation network, then the segmentation of the corrected
  slice: timed as the two calls in a row, because random pixels make the network refuse);
  ``--repeats`` timed calls after 2 warm-ups, median/min/max wall and median process CPU
  seconds;
* training: images/s of ``model.fit`` on random patches of the recipe (``--config``), median of
  ``--train-repeats`` timed chunks of ``--train-steps`` steps after one warm-up chunk.

The input is a real-looking slice only in size: speed does not depend on the pixel values.
Writes JSON with ``machine_info`` and the load average around each measurement.
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


def _timed(fn, repeats: int) -> dict:
    for _ in range(2):
        fn()
    wall, cpu = [], []
    load0 = os.getloadavg()[0]
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"median_s": statistics.median(wall), "min_s": min(wall), "max_s": max(wall),
            "median_cpu_s": statistics.median(cpu), "repeats": repeats,
            "load_before": load0, "load_after": os.getloadavg()[0]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--config", default="seg_deeplabv3plus:spider_cpu",
                    help="MODULE:EXPERIMENT of configs/, e.g. seg_unet:spider_cpu")
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--train-repeats", type=int, default=3)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/bench_seg_spacing.json"))
    args = ap.parse_args(argv)
    import numpy as np

    from spoils_tf import fileio
    from spoils_tf.serve import segmenter
    from spoils_tf.train import common

    rng = np.random.default_rng(0)
    grey = (rng.random((640, 512)) * 255).astype(np.uint8)
    spacing = (0.46875, 0.46875)
    seg = segmenter.Segmenter(None, orientation="as_is")
    seg_auto = segmenter.Segmenter(None, orientation="auto")
    result = {"machine": common.machine_info(), "slice_hw": [640, 512], "pixel_spacing_mm": spacing,
              "model": seg.label}
    result["network_only"] = _timed(lambda: seg._run.probabilities(grey, spacing), args.repeats)
    result["segment_as_is"] = _timed(lambda: seg(grey, spacing), args.repeats)

    net = seg_auto._run.orientation_net
    if net is not None:
        result["orientation_network"] = _timed(lambda: net.probabilities(grey, spacing),
                                               args.repeats)
        result["segment_picture_auto"] = _timed(
                lambda: (net.probabilities(grey, spacing), seg(grey, spacing)), args.repeats)
    if not args.skip_training:
        import importlib

        import keras
        from spoils_tf.data import spacing_pipeline
        from spoils_tf.models import losses
        from spoils_tf.train import seg_spacing_lib
        module, _, experiment = args.config.partition(":")
        c = importlib.import_module(f"configs.{module}").get_config(experiment)
        n = 16
        imgs = (rng.random((n, 400, 320)) * 255).astype(np.uint8)
        masks = rng.integers(0, 14, (n, 400, 320)).astype(np.uint8)
        slices = spacing_pipeline.ResampledSlices(
                imgs, masks, np.tile([400, 320], (n, 1)).astype(np.int32),
                np.tile([128.0, 60.0], (n, 1)).astype(np.float32),
                np.tile([0, 399, 0, 319], (n, 1)).astype(np.float32), [str(i) for i in range(n)])
        ds = spacing_pipeline.make_patch_dataset(slices, patch_hw=tuple(c.data.patch_size),
                                                 batch_size=int(c.train.batch_size))
        model = seg_spacing_lib.build_model(c)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.segmentation_loss(c.train.loss))
        model.fit(ds, epochs=1, steps_per_epoch=args.train_steps, verbose=0)
        rates = []
        load0 = os.getloadavg()[0]
        for _ in range(args.train_repeats):
            t0 = time.perf_counter()
            model.fit(ds, epochs=1, steps_per_epoch=args.train_steps, verbose=0)
            rates.append(args.train_steps * int(c.train.batch_size) / (time.perf_counter() - t0))
        result["training"] = {"config": args.config, "patch_hw": list(c.data.patch_size),
                              "batch_size": int(c.train.batch_size),
                              "median_images_per_s": statistics.median(rates), "images_per_s": rates,
                              "load_before": load0, "load_after": os.getloadavg()[0]}
    fileio.write_json(args.out, result)
    print(f"CPU: {result['machine']['cpu_model']} ({result['machine']['cpu_count']} cores)")
    for key in ("network_only", "segment_as_is", "orientation_network", "segment_picture_auto"):
        if key not in result:
            continue
        r = result[key]
        print(f"{key}: median {r['median_s'] * 1000:.0f} ms (min {r['min_s'] * 1000:.0f}, max "
              f"{r['max_s'] * 1000:.0f}; CPU {r['median_cpu_s']:.2f} s; load {r['load_before']:.1f})")
    if "training" in result:
        print(f"training: median {result['training']['median_images_per_s']:.2f} images/s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
