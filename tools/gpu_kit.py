"""GPU kit: speed and 8-fold CV of the paper's DeepLabV3+ R50 under Keras 3's JAX backend.

Run by ``tools/gpu_run.sh`` on the lent GPU machine (JAX, no TensorFlow) with ``.gpu_pack/``
carried (``tools/gpu_pack.py``); ``--smoke`` is its CPU dry run (tests/test_gpu_kit.py).

    KERAS_BACKEND=jax python3 tools/gpu_kit.py --out $OUT --pack .gpu_pack
    KERAS_BACKEND=jax JAX_PLATFORMS=cpu .venv/bin/python tools/gpu_kit.py --smoke --out /tmp/k

Stages, each adding to ``<out>/gpu_kit.json`` as soon as it ends (a run stopped by its time
limit still returns what it finished):

1. ``env``: backend, JAX/Keras versions, devices, the GPU's dense bf16 peak (``PEAK_BF16``);
2. ``throughput_jit``: training images/s with ``jit_compile=True``
   (``keras_backend_lib.measure_train_throughput``) in ``mixed_bfloat16``, model FLOPs per
   image (``spoils_tf.models.flops``: 6 x conv MACs) and MFU = FLOP/s / peak;
3. ``cv``: the ``paper`` config's folds (``keras_backend_lib.run`` on the pack), every fold an
   equal share of ``--cv-s`` seconds of training, as many epochs as fit; Dice per fold and
   mean +- SD, per-fold metrics and timings; also written as ``<out>/cv_table.md``;
4. ``throughput_nojit``: the same without ``jit_compile`` (JAX op by op), last, and only when
   ``--total-s`` leaves ``--nojit-reserve-s``.

``--smoke``: the ``smoke`` config (mini encoder, 64^2, 2 folds of a synthetic cohort unless
a pack is given), 2 epochs, 2 timed steps; no peak on a CPU, so MFU is null.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from typing import Any, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402

from configs import seg_deeplabv3plus  # noqa: E402
from spoils_tf import fileio  # noqa: E402
from spoils_tf.models import flops  # noqa: E402
from spoils_tf.train import keras_backend_lib as kbl  # noqa: E402

# Dense (no sparsity) bf16 Tensor Core peaks in FLOP/s, matched against the device name.
# NVIDIA H100 Tensor Core GPU datasheet: H100 SXM BF16 1,979 TFLOPS "with sparsity", i.e.
# 989.4 dense (H100 PCIe/NVL: 1,513 / 756.5; not lent here). NVIDIA H200 datasheet: H200 SXM
# 1,979 TFLOPS with sparsity, 989.4 dense. (KINDS.md measured an 8192^3 bf16 matmul at
# 769-798 TFLOP/s on these machines: ~80 % of the datasheet peak is the practical ceiling.)
PEAK_BF16: dict[str, float] = {"H100": 989.4e12, "H200": 989.4e12}
PEAK_SOURCE = ("NVIDIA H100 / H200 Tensor Core GPU datasheets: 1,979 TFLOPS bf16 with "
               "2:4 sparsity = 989.4 TFLOP/s dense (SXM)")


def environment() -> dict[str, Any]:
    """Backend, versions, devices and the matching peak (None when unknown)."""
    env: dict[str, Any] = {"backend": keras.backend.backend(), "keras": keras.__version__,
                           "python": sys.version.split()[0], "devices": [], "peak_bf16": None}
    if keras.backend.backend() == "jax":
        import jax
        env["jax"] = jax.__version__
        env["devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    if kbl.accelerator() == "gpu":
        for name, peak in PEAK_BF16.items():
            if any(name in d for d in env["devices"]):
                env["peak_bf16"], env["peak_source"] = peak, PEAK_SOURCE
    return env


def kit_config(smoke: bool):
    """The ``paper`` config (``smoke``: the ``smoke`` config) in ``mixed_bfloat16``."""
    c = seg_deeplabv3plus.get_config("smoke" if smoke else "paper")
    c.train.precision = "mixed_bfloat16"
    c.train.verbose = 2
    if not smoke:
        c.train.epochs = 10_000       # the time budget decides
    return c


def with_mfu(result: dict[str, Any], flops_per_image: float,
             peak: Optional[float]) -> dict[str, Any]:
    """``result`` plus ``train_flops_per_image``, achieved ``tflop_per_s`` and ``mfu``
    (``images_per_s * flops_per_image / peak``; None without a peak)."""
    achieved = result["images_per_s"] * flops_per_image
    return {**result, "train_flops_per_image": flops_per_image, "tflop_per_s": achieved / 1e12,
            "mfu": achieved / peak if peak else None}


def cv_table(summary: dict[str, Any], folds: dict[int, dict[str, Any]]) -> str:
    """Markdown: Dice fg-macro, pixel and level accuracy per fold, then mean ± SD."""
    rows = ["| fold | Dice fg-macro | pixel accuracy | level accuracy | epochs | train s | "
            "train img/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in sorted(folds):
        m = folds[f]
        rows.append(f"| {f} | {m['dice/fg_macro']:.4f} | {m['pixel_accuracy']:.4f} | "
                    f"{m['level_accuracy']:.4f} | {len(m['epochs_run'])} | "
                    f"{m['train_seconds']:.0f} | {m['train_images_per_s']:.1f} |")
    mean_sd = [f"{summary[k]['mean']:.4f} ± {summary[k]['sd']:.4f}"
               for k in ("dice/fg_macro", "pixel_accuracy", "level_accuracy")]
    rows.append(f"| mean ± SD | {' | '.join(mean_sd)} | | | |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--pack", default="", help="folder with spider_<S>.npz and folds.json")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--total-s", type=float, default=500.0, help="this script's time budget")
    p.add_argument("--cv-s", type=float, default=420.0, help="training budget of all folds")
    p.add_argument("--nojit-reserve-s", type=float, default=90.0)
    p.add_argument("--steps", type=int, default=20, help="timed steps (jit)")
    p.add_argument("--workdir", default="/tmp/spoils_gpu_kit")
    args = p.parse_args(argv)
    start = time.perf_counter()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"smoke": args.smoke}

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - start
        fileio.write_json(out / "gpu_kit.json", report, sort_keys=True)

    if keras.backend.backend() == "jax":   # folds 2..k reuse fold 1's compiled programs
        import jax
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(args.workdir) / "xla"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    report["env"] = environment()
    config = kit_config(args.smoke)
    report["precision_policy"] = kbl.configure_precision(config.train.precision)
    report["config"] = config.experiment
    save()
    print(f"gpu-kit: {report['env']}", flush=True)

    probe = kbl.compile_model(config)
    flops_per_image = flops.train_flops_per_image(probe)
    del probe
    peak = report["env"]["peak_bf16"]
    steps, warmup = (2, 1) if args.smoke else (args.steps, 2)
    report["throughput_jit"] = with_mfu(kbl.measure_train_throughput(
            config, jit_compile=True, steps=steps, warmup=warmup), flops_per_image, peak)
    save()
    r = report["throughput_jit"]
    print(f"gpu-kit: jit {r['images_per_s']:.1f} img/s, {r['tflop_per_s']:.2f} TFLOP/s, "
          f"MFU {r['mfu']}", flush=True)

    pack = None
    if args.pack:
        packs = sorted(pathlib.Path(args.pack).glob("spider_*.npz"))
        pack = packs[0] if packs else None
        if pack is None:
            print(f"gpu-kit: no spider_*.npz in {args.pack}; using the config's data",
                  flush=True)
    left = args.total_s - (time.perf_counter() - start) - args.nojit_reserve_s
    budget = 0.0 if args.smoke else max(min(args.cv_s, left), 1.0)
    result = kbl.run(config, pathlib.Path(args.workdir) / "cv", pack=pack,
                     time_budget_s=budget, jit_compile=True, complete_last=True,
                     workers=4)
    report["cv"] = {"summary": result["summary"], "folds": result["folds"],
                    "pack": str(pack) if pack else None, "budget_s": budget}
    fileio.atomic_write_text(out / "cv_table.md", cv_table(result["summary"], result["folds"]))
    save()
    d = result["summary"]["dice/fg_macro"]
    print(f"gpu-kit: CV Dice fg-macro {d['mean']:.4f} ± {d['sd']:.4f}", flush=True)

    if args.total_s - (time.perf_counter() - start) >= args.nojit_reserve_s or args.smoke:
        report["throughput_nojit"] = with_mfu(kbl.measure_train_throughput(
                config, jit_compile=False, steps=2 if args.smoke else 3, warmup=1),
                flops_per_image, peak)
    else:
        report["throughput_nojit"] = {"skipped": f"less than {args.nojit_reserve_s} s left"}
    save()
    print(f"gpu-kit: done in {time.perf_counter() - start:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
