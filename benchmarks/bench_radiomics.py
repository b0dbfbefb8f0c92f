"""Benchmark: milliseconds per disc for the radiomics of ``spoils_tf.radiomics``.

    nice -n 19 python benchmarks/bench_radiomics.py [--data runs/data/spider] [--discs 10]
        [--repeats 5] [--out benchmarks/results/bench_radiomics.json]

One "disc" is what ``spoils_tf.radiomics.table`` does for one (patient, level): the default
settings (7 feature classes on the original, 3 LoG and 4 wavelet images) on the
``n_middle_slices`` slices nearest the disc's middle, averaged. Slices are read beforehand
(file reading is not timed). Per disc the median over ``--repeats`` runs (after one warm-up),
wall-clock and CPU time; then the median and 90th percentile across discs. Discs come from a
spoils dataset directory (``--data``), each with the other discs removed from its masks so
that one disc is timed. Prints a summary and writes JSON with the machine (CPU model named)
and the load average: on a shared machine the wall time grows with the load, CPU time less.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from spoils_tf import fileio, labels, machine  # noqa: E402
from spoils_tf.radiomics import extract, table  # noqa: E402


def _machine() -> dict:
    cpu = machine.cpu_model()
    try:
        import radiomics
        version = radiomics.__version__
    except ImportError:
        version = "not installed"
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "pyradiomics": version, "load_average": list(os.getloadavg())}


def _discs_from_dir(data: pathlib.Path, n: int) -> list[tuple[str, dict]]:
    """Up to ``n`` (level, slices) of the first patients of a dataset directory."""
    from spoils_tf.data import layout
    from spoils_tf.data.labelme_io import read_labelme
    from spoils_tf.geometry import features as gfeatures
    patients = gfeatures.read_patient_table(data)
    by_patient: dict[str, list[pathlib.Path]] = {}
    for p in layout.list_labelme_jsons(data):
        by_patient.setdefault(p.parent.name, []).append(p)
    out = []
    for paths in by_patient.values():
        slices = {}
        for p in paths:
            rec = read_labelme(p)
            img = rec.image if rec.image.ndim == 2 else rec.image[..., 0]
            slices[int(rec.slice)] = table._Slice(
                    img, rec.mask, tuple(gfeatures.spacing_for(rec, patients)),
                    table.reference_median(img, rec.mask, 50))
        for disc_id, level in zip(labels.DISC_IDS, labels.DISC_NAMES):
            # only this disc (and the canal) left in the mask, so one row is timed
            on = {k: table._Slice(s.image, np.where(np.isin(s.mask, labels.DISC_IDS)
                                                    & (s.mask != disc_id), 0, s.mask),
                                  s.spacing, s.reference)
                  for k, s in slices.items() if (s.mask == disc_id).any()}
            if on:
                out.append((level, on))
            if len(out) >= n:
                return out
    return out


def run(discs: list, settings: extract.RadiomicsSettings, repeats: int) -> dict:
    wall, cpu, n_slices = [], [], []
    for level, slices in discs:
        w, c = [], []
        for r in range(repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            rows = table.patient_rows("bench", slices, settings)
            t1, c1 = time.perf_counter(), time.process_time()
            if r:
                w.append(t1 - t0)
                c.append(c1 - c0)
        assert len(rows) == 1 and rows[0]["level"] == level and not rows[0]["reason"], rows
        wall.append(1000 * float(np.median(w)))
        cpu.append(1000 * float(np.median(c)))
        n_slices.append(min(len(slices), settings.n_middle_slices))
    return {"discs": len(discs), "repeats": repeats,
            "wall_ms_per_disc_median": float(np.median(wall)),
            "wall_ms_per_disc_p90": float(np.percentile(wall, 90)),
            "cpu_ms_per_disc_median": float(np.median(cpu)),
            "cpu_ms_per_disc_p90": float(np.percentile(cpu, 90)),
            "slices_per_disc_median": float(np.median(n_slices))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=pathlib.Path, default=pathlib.Path("runs/data/spider"),
                    help="a spoils dataset directory (default: the converted SPIDER set)")
    ap.add_argument("--discs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=pathlib.Path,
                    default=pathlib.Path("benchmarks/results/bench_radiomics.json"))
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error("--repeats must be >= 5 (the median of at least 5 runs)")
    settings = extract.RadiomicsSettings()
    if not (args.data / "labelme").is_dir():
        ap.error(f"--data {args.data}: no labelme/ folder; convert a dataset first "
                 "(spoils convert-spider)")
    discs = _discs_from_dir(args.data, args.discs)
    result = run(discs, settings, args.repeats)
    out = {"benchmark": "radiomics per disc", "date": datetime.date.today().isoformat(),
           "data": str(args.data),
           "settings": settings.to_dict(),
           "n_features": len(extract.feature_names(settings)),
           "machine": _machine(), **result}
    fileio.write_json(args.out, out)
    print(f"{result['discs']} discs, {out['n_features']} features, "
          f"{result['slices_per_disc_median']:.0f} slices each: wall "
          f"{result['wall_ms_per_disc_median']:.0f} ms per disc (p90 "
          f"{result['wall_ms_per_disc_p90']:.0f}), CPU {result['cpu_ms_per_disc_median']:.0f} ms"
          f" on {out['machine']['cpu']} (load {out['machine']['load_average'][0]:.1f}) "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
