"""Packs what the lent GPU machine needs and lacks: SPIDER slices, the folds, Keras' wheels.

    .venv/bin/python tools/gpu_pack.py                # = make gpu-pack
    .venv/bin/python tools/gpu_pack.py --slices-per-patient 8 --no-wheels

Writes, into ``--out`` (default ``.gpu_pack/``, ignored by git; carried to the device with the
``run`` tool's ``carry``):

* ``spider_<S>.npz``: the ``--slices-per-patient`` slices nearest each SPIDER patient's middle
  slice, letterboxed to S x S as the tf.data pipeline does (``spoils_tf.data.seg_arrays``:
  greyscale as lossless PNG, masks and original-size masks as deflated uint8; no pickles);
* ``folds.json``: the dataset's patient-grouped folds (``spoils folds``; made when missing);
* ``whl/``: wheels of the packages the device image lacks (``MISSING_ON_DEVICE``: Keras and
  its ``namex``/``optree``, ``ml-collections``), at the versions installed here, for CPython
  3.12 x86-64 (``pip download`` as ``/work/.library/device/README.md`` says);
* ``MANIFEST.json``: sizes, sha256, slice and patient counts, versions.

The data come from ``--dataset`` (a converted SPIDER dataset dir, default
``runs/data/spider``), converted first from ``--spider`` (default
``../shared/data/spider_t2space``) when missing. With neither, it prints why and exits 0
(nothing to pack on a machine without the shared data). Exits 1 when the pack exceeds
``--max-mib``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import base  # noqa: E402
from spoils_tf import fileio  # noqa: E402
from spoils_tf.data import folds as folds_lib  # noqa: E402
from spoils_tf.data import layout, seg_arrays  # noqa: E402

# Python packages the JAX path imports that the device image ('cuda', KINDS.md) does not hold.
MISSING_ON_DEVICE: tuple[str, ...] = ("keras", "namex", "optree", "ml-collections")
PIP_PLATFORMS: tuple[str, ...] = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                  "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                  "manylinux1_x86_64")
DEFAULT_SHARED_SPIDER = ROOT.parent / "shared" / "data" / "spider_t2space"


def download_wheels(dest: pathlib.Path, packages=MISSING_ON_DEVICE) -> list[pathlib.Path]:
    """``pip download`` of ``packages`` at the versions installed here, for the device.

    Raises:
      RuntimeError: pip failed (its output attached).
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in packages]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp",
           *[a for plat in PIP_PLATFORMS for a in ("--platform", plat)], "-d", str(dest), *pins]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download {' '.join(pins)} failed:\n{proc.stderr[-2000:]}")
    return sorted(dest.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=str(ROOT / base.DEFAULT_SPIDER_DATASET_DIR))
    p.add_argument("--spider", default=str(DEFAULT_SHARED_SPIDER),
                   help="SPIDER source, converted into --dataset when that is missing")
    p.add_argument("--out", default=str(ROOT / ".gpu_pack"))
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--slices-per-patient", type=int, default=12,
                   help="middle slices per patient (0 = all; all SPIDER slices at 512^2 are "
                        "~72 MB, over the carry limit)")
    p.add_argument("--max-mib", type=float, default=50.0)
    p.add_argument("--no-wheels", action="store_true")
    args = p.parse_args(argv)

    dataset, spider, out = (pathlib.Path(args.dataset), pathlib.Path(args.spider),
                            pathlib.Path(args.out))
    if not (dataset / layout.LABELME_DIR).is_dir():
        if not (spider / "images").is_dir():
            print(f"gpu-pack: skipped: no SPIDER data ({dataset} has no {layout.LABELME_DIR}/ "
                  f"and {spider} has no images/)")
            return 0
        from spoils_tf.data import spider as spider_lib
        print(f"gpu-pack: converting {spider} -> {dataset}")
        spider_lib.convert_spider(spider, dataset)
    folds_path = dataset / layout.FOLDS_JSON
    if not folds_path.is_file():
        folds_lib.write_dataset_folds(dataset, k=8, seed=0, out=folds_path)
    folds = folds_lib.load_folds(folds_path)

    start = time.perf_counter()
    size = (args.image_size, args.image_size)

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"gpu-pack: {done}/{total} slices read", flush=True)

    arrays = seg_arrays.from_dataset_dir(dataset, size, "letterbox", args.slices_per_patient,
                                         progress=progress)
    missing = sorted(set(arrays.patients.tolist()) - set(folds.assignment))
    if missing:
        print(f"gpu-pack: error: patients {missing} are not in {folds_path}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    pack_path = out / f"spider_{args.image_size}.npz"
    pack_bytes = seg_arrays.save_npz(arrays, pack_path)
    fileio.atomic_write_bytes(out / layout.FOLDS_JSON, folds_path.read_bytes())  # checked above
    wheels = [] if args.no_wheels else download_wheels(out / "whl")
    files = [pack_path, out / layout.FOLDS_JSON, *wheels]
    total = sum(f.stat().st_size for f in files)
    manifest = {
            "format": "seg_arrays.save_npz: images PNG (lossless), masks raw uint8, "
                      "np.savez_compressed",
            "image_size": list(size), "resize_mode": "letterbox",
            "slices": int(len(arrays.keys)), "patients": int(len(set(arrays.patients.tolist()))),
            "slices_per_patient": args.slices_per_patient, "k": folds.k,
            "source": str(dataset), "seconds": round(time.perf_counter() - start, 1),
            "files": {f.relative_to(out).as_posix(): {"bytes": f.stat().st_size,
                                                      "sha256": fileio.sha256_file(f)}
                      for f in files},
            "total_bytes": total, "pack_bytes": pack_bytes,
    }
    fileio.write_json(out / "MANIFEST.json", manifest, sort_keys=True)
    print(f"gpu-pack: {manifest['slices']} slices of {manifest['patients']} patients at "
          f"{args.image_size}^2: {pack_bytes / 2**20:.1f} MiB; {len(wheels)} wheels; total "
          f"{total / 2**20:.1f} MiB in {out}")
    if total > args.max_mib * 2**20:
        print(f"gpu-pack: error: {total / 2**20:.1f} MiB > --max-mib {args.max_mib}; lower "
              "--slices-per-patient", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
