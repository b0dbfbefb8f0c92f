"""The synthetic cohort (``spoils synth``): deterministic phantoms of a sagittal T2 lumbar spine.

``spoils synth --patients N --slices-per-patient K --seed S --out DIR [--size 512]
[--pixel-spacing 0.6] [--slice-spacing 1.0]`` writes, in the layout of
``spoils_tf.data.layout``::

    DIR/labelme/S0000/S0000_slice<k>.json + .png   14-class LabelMe + uint8 image
    DIR/patients.csv        layout.PATIENT_COLUMNS + n_slices, midline_slice
    DIR/discs.csv           layout.DISC_COLUMNS, one row per (patient, slice, level) in the mask
    DIR/geometry_truth.csv  analytic ground truth per (patient, slice, level), GEOMETRY_TRUTH_COLUMNS
    DIR/clinical.csv        patient, age, sex, odi, nrs
    DIR/issues.csv          patients that could not be generated (normally header only)
    DIR/synth_config.json   the arguments, so the cohort can be regenerated

It is the always-available default dataset and the fixture on which geometry is checked
exactly, so every labelled shape is a polygon in millimetres and every ground-truth number
is computed from the polygons (never from pixels).

Coordinates and frames follow ``spoils_tf.geometry.frame``: x = image column direction (mm,
posterior positive), y = row direction (mm, inferior positive); pixel (r, c) has its centre at
x = c * col_spacing, y = r * row_spacing; a part's frame has u posterior, v superior.
A pixel belongs to a labelled shape iff its centre lies inside the polygon
(``spoils_tf.data.polygons.rasterize``, an exact scanline test on pixel centres), so pixel
counts are unbiased estimates of polygon areas.

Anatomy (per patient, from ``np.random.default_rng([seed, patient_index, 0])`` so patient i
is the same whatever N):

* A column T11 (image only), T11-T12 disc (image only), T12 (image only, background in the
  mask), T12-L1, L1, ..., L5, L5-S1, S1 (a sacral wedge, labelled S1), S2..S5 (image only),
  stacked top to bottom with a gap of one pixel between neighbours.
* Discs: trapezoids symmetric about their mid-line (the u axis through their centre):
  anterior and posterior sides parallel to v, anterior height ``h_a`` and posterior height
  ``h_p`` with ``h_a > h_p`` for the lordotic wedge (wedge ratio grows caudally). Because the
  shape is mirror-symmetric about its mid-line, its principal (PCA) long axis IS u, so a mask
  measurement that finds u by PCA in mm recovers ``tilt_deg`` exactly. The chain of tilts
  follows from the wedges (tilt_k = tilt_{k-1} + wedge half-angles of both discs), giving a
  lumbar lordosis of about 25-50 degrees; degenerate (lower) discs flatten it.
* Posterior bulge (severity M and H): a half ellipse of depth ``bulge_mm`` along u and height
  ``h_p`` on the posterior side, mirror-symmetric about the mid-line, part of the disc label.
  The ground-truth fields are computed on the union polygon by the shared definitions (so the
  bulge extends t = 1 and the width); the trapezoid alone is given in ``trapezoid_*`` fields
  and the bulge depth in ``bulge_mm``.
* Vertebral bodies L1..L5: rotated rectangles with angle = mean tilt of the two adjacent discs.
* Spinal canal: a band behind the posterior walls (one ``CANAL_GAP_MM`` for the posterior
  longitudinal ligament), of AP diameter ``canal_diameter_mm`` narrowed around each disc by
  a cosine bump of depth ``canal_narrowing`` (severity dependent); a bulging disc is painted
  over the canal, which narrows it further. T2 signal: CSF bright, a cord down to L1, roots.
* Parasagittal slices: K slices at lateral offsets z = (k - (K-1)/2) * slice_spacing. Discs are
  ellipsoid-like: width, heights and bulge scale by sqrt(1 - (z/R)^2) about their centre
  (R = lateral semi-axis); vertebral bodies and the canal scale their AP extent likewise.
* Grades: a latent degeneration score from age and level (lower levels degenerate more)
  gives the Pfirrmann grade and the severity (L/M/H); the disc height falls with grade
  (``GRADE_HEIGHT_FACTOR``) and severity, the nucleus T2 signal falls with grade
  (``NUCLEUS_INTENSITY``) and its edge blurs (grade 1: bright, clear ellipse; grade 5:
  collapsed and dark).
* Image: soft-tissue layers with texture, posterior elements, a smooth bias field darker
  anteriorly (coil sensitivity), a Gaussian point-spread of 0.7 px and Rician noise.

The pieces: ``spoils_tf.data.polygons`` (exact polygon geometry), ``synthetic_anatomy`` (one
patient: :func:`sample_patient`), ``synthetic_slice`` (one slice's polygons and ground truth),
``synthetic_render`` (its image and mask); this module renders a slice
(:func:`generate_slice`) and writes the cohort (:func:`generate_cohort`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import pathlib
import sys
from typing import Optional, Sequence

import numpy as np

from spoils_tf import fileio, labels
from spoils_tf.data import images, labelme_io, layout
from spoils_tf.data.synthetic_anatomy import PatientAnatomy, patient_id, sample_patient
from spoils_tf.data.synthetic_render import patient_textures, render_slice
from spoils_tf.data.synthetic_slice import (GEOMETRY_TRUTH_COLUMNS, SliceShapes, build_slice,
                                            slice_truth)

# === Constants ===
# Default field of view (mm) across the image; the default pixel spacing is FOV / size.
DEFAULT_FOV_MM: float = 307.2
DEFAULT_SIZE: int = 512
# Smallest field of view accepted (mm): the labelled spine T12-L1..S1 spans up to ~245 mm.
MIN_FOV_MM: float = 260.0
DEFAULT_SLICE_SPACING_MM: float = 1.0

CLINICAL_COLUMNS: tuple[str, ...] = ("patient", "age", "sex", "odi", "nrs")
PATIENT_EXTRA_COLUMNS: tuple[str, ...] = ("n_slices", "midline_slice")
SYNTH_CONFIG_JSON = "synth_config.json"


# === Cohort ===
def slice_offsets_mm(n_slices: int, slice_spacing_mm: float) -> np.ndarray:
    """Lateral offsets (mm) of the K slices, centred on the midline: (k - (K-1)/2) * spacing."""
    return (np.arange(n_slices) - (n_slices - 1) / 2.0) * slice_spacing_mm


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6f}"
    return str(v)


def _write_csv_atomic(path: pathlib.Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_fmt(row.get(c)) for c in columns])
    fileio.atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


@dataclasses.dataclass
class CohortSummary:
    """What ``generate_cohort`` wrote: counts, the grade-class histogram and the issues."""

    out_dir: pathlib.Path
    n_patients: int
    n_slices: int
    grade_histogram: dict
    issues: list

    def report_lines(self, prog: str = "spoils synth") -> list[str]:
        """What ``spoils synth`` prints to stderr, each line prefixed ``<prog>: ``: the counts
        and grade-class histogram, then (when patients failed) one line per failed patient and
        their number."""
        hist = " ".join(f"{c}:{n}" for c, n in self.grade_histogram.items())
        lines = [f"{prog}: wrote {self.n_patients} patients x {self.n_slices} slices to "
                 f"{self.out_dir}; grade classes {hist}"]
        if self.issues:
            lines += [f"{prog}: {issue['patient']}: {issue['reason']}" for issue in self.issues]
            lines.append(f"{prog}: {len(self.issues)} patient(s) failed, see {layout.ISSUES_CSV}")
        return lines


def generate_slice(anat: PatientAnatomy, seed: int, slice_index: int, n_slices: int, *,
                   size: int = DEFAULT_SIZE, spacing_mm: Optional[tuple[float, float]] = None,
                   slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM,
                   textures: Optional[dict] = None) -> tuple[np.ndarray, np.ndarray, list[dict], SliceShapes]:
    """Renders one slice of a patient in memory.

    Returns:
        (image uint8 [H, W], mask int32 [H, W], ground-truth rows, the slice's shapes).

    Raises:
        ValueError: the field of view cannot hold the spine, or slice_index outside 0..K-1.
    """
    if spacing_mm is None:
        spacing_mm = (DEFAULT_FOV_MM / size,) * 2
    if not 0 <= slice_index < n_slices:
        raise ValueError(f"slice_index {slice_index} outside 0..{n_slices - 1}")
    sr, sc = spacing_mm
    if textures is None:
        textures = patient_textures(seed, anat.index, size, spacing_mm)
    z = float(slice_offsets_mm(n_slices, slice_spacing_mm)[slice_index])
    shapes = build_slice(anat, z, (size * sc, size * sr))
    rng = np.random.default_rng([int(seed), anat.index, 2, int(slice_index)])
    image, mask, _ = render_slice(anat, shapes, size, spacing_mm, rng, textures)
    truth = slice_truth(anat, shapes, slice_index, spacing_mm)
    return image, mask, truth, shapes


def generate_cohort(out_dir: str | pathlib.Path, n_patients: int, n_slices: int, seed: int, *,
                    size: int = DEFAULT_SIZE, spacing_mm: Optional[tuple[float, float]] = None,
                    slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM,
                    progress: bool = True) -> CohortSummary:
    """Writes the cohort (module docstring) to ``out_dir``; files of the same names are replaced.

    A patient that fails is recorded in issues.csv and the run goes on.

    Raises:
        ValueError: n_patients or n_slices < 1, size < 64, non-positive slice spacing, seed < 0;
            a pixel spacing ``images.check_pixel_spacing`` refuses (``SpoilsError``).
    """
    from tqdm import tqdm

    spacing_mm = _check_cohort_args(n_patients, n_slices, seed, size, spacing_mm,
                                    slice_spacing_mm)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    midline = (n_slices - 1) // 2
    patients, discs, truth, clinical, issues = [], [], [], [], []
    hist = {c: 0 for c in labels.GRADE_CLASSES}
    for i in tqdm(range(n_patients), desc="spoils synth", unit="patient", disable=not progress,
                  file=sys.stderr):
        pid = patient_id(i)
        try:
            anat, p_discs, p_truth = _write_patient_slices(out, seed, i, n_slices, size=size,
                                                           spacing_mm=spacing_mm,
                                                           slice_spacing_mm=slice_spacing_mm)
        except Exception as e:  # one bad patient must not stop the cohort
            issues.append({"patient": pid, "slice": "", "file": "", "reason": f"{type(e).__name__}: {e}"})
            continue
        discs += p_discs
        truth += p_truth
        for spec in anat.discs:
            hist[spec.grade_class] += 1
        patients.append({"patient": pid, "sex": anat.sex, "pixel_spacing_row_mm": spacing_mm[0],
                         "pixel_spacing_col_mm": spacing_mm[1], "slice_thickness_mm": slice_spacing_mm,
                         "slice_spacing_mm": slice_spacing_mm, "n_slices": n_slices,
                         "midline_slice": midline})
        clinical.append({"patient": pid, "age": anat.age, "sex": anat.sex, "odi": anat.odi, "nrs": anat.nrs})

    _write_csv_atomic(out / layout.PATIENTS_CSV, layout.PATIENT_COLUMNS + PATIENT_EXTRA_COLUMNS, patients)
    _write_csv_atomic(out / layout.DISCS_CSV, layout.DISC_COLUMNS, discs)
    _write_csv_atomic(out / layout.GEOMETRY_TRUTH_CSV, GEOMETRY_TRUTH_COLUMNS, truth)
    _write_csv_atomic(out / layout.CLINICAL_CSV, CLINICAL_COLUMNS, clinical)
    _write_csv_atomic(out / layout.ISSUES_CSV, layout.ISSUE_COLUMNS, issues)
    config = {"generator": "spoils_tf.data.synthetic", "patients": n_patients,
              "slices_per_patient": n_slices, "seed": seed, "size": size,
              "pixel_spacing_mm": list(spacing_mm), "slice_spacing_mm": slice_spacing_mm}
    fileio.write_json(out / SYNTH_CONFIG_JSON, config, indent=1)
    return CohortSummary(out_dir=out, n_patients=len(patients), n_slices=n_slices,
                         grade_histogram=hist, issues=issues)


def write_complete_cohort(out_dir: str | pathlib.Path, n_patients: int, n_slices: int, seed: int,
                          *, size: int = DEFAULT_SIZE, progress: bool = True) -> CohortSummary:
    """:func:`generate_cohort` for a run that needs every patient: prints the summary's
    :meth:`CohortSummary.report_lines` to stderr, as ``spoils synth`` does.

    Raises:
        RuntimeError: the arguments were refused (the ``ValueError`` chained), or a patient
            failed (listed in ``out_dir/issues.csv``; the others are written).
    """
    try:
        summary = generate_cohort(out_dir, n_patients, n_slices, seed, size=size,
                                  progress=progress)
    except ValueError as e:
        raise RuntimeError(f"synthetic cohort {out_dir}: {e}") from e
    for line in summary.report_lines():
        print(line, file=sys.stderr)
    if summary.issues:
        raise RuntimeError(f"synthetic cohort {out_dir}: {len(summary.issues)} patient(s) "
                           f"failed, see {summary.out_dir / layout.ISSUES_CSV}")
    return summary


def dataset_or_synthetic(configured: str, workdir: str | pathlib.Path, synthetic_config, *,
                         progress: bool = True) -> tuple[pathlib.Path, str]:
    """``(dataset dir, "spider" | "synthetic")`` for a training run: ``configured`` when it
    holds ``labelme/``, else the cohort of ``synthetic_config`` (``patients``,
    ``slices_per_patient``, ``seed``) written once into ``workdir/synthetic``.

    Raises:
        RuntimeError: as :func:`write_complete_cohort`.
    """
    configured = str(configured or "")
    if configured and (pathlib.Path(configured) / layout.LABELME_DIR).is_dir():
        return pathlib.Path(configured), "spider"
    if configured:
        import logging
        logging.getLogger(__name__).warning(
                "config.data.labelme_dir=%s has no %s/ directory; using a synthetic cohort",
                configured, layout.LABELME_DIR)
    out = pathlib.Path(workdir) / "synthetic"
    if not (out / layout.LABELME_DIR).is_dir():
        write_complete_cohort(out, synthetic_config.patients,
                              synthetic_config.slices_per_patient, synthetic_config.seed,
                              progress=progress)
    return out, "synthetic"


def _check_cohort_args(n_patients: int, n_slices: int, seed: int, size: int,
                       spacing_mm: Optional[tuple[float, float]],
                       slice_spacing_mm: float) -> tuple[float, float]:
    """The pixel spacing (row_mm, col_mm) a cohort uses (default ``DEFAULT_FOV_MM / size``),
    after checking :func:`generate_cohort`'s arguments.

    Raises:
        ValueError: as :func:`generate_cohort`, and a field of view under ``MIN_FOV_MM``.
    """
    if n_patients < 1 or n_slices < 1:
        raise ValueError(f"--patients and --slices-per-patient must be >= 1, got {n_patients}, {n_slices}")
    if size < 64:
        raise ValueError(f"--size must be >= 64 pixels, got {size}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if spacing_mm is None:
        spacing_mm = (DEFAULT_FOV_MM / size,) * 2
    spacing_mm = images.check_pixel_spacing(spacing_mm, None, "--pixel-spacing")
    if not (math.isfinite(slice_spacing_mm) and slice_spacing_mm > 0):
        raise ValueError(f"slice spacing {slice_spacing_mm} must be > 0 mm")
    fov = (size * spacing_mm[1], size * spacing_mm[0])
    if min(fov) < MIN_FOV_MM:
        raise ValueError(f"field of view {fov[0]:.0f} x {fov[1]:.0f} mm (--size {size} x --pixel-spacing "
                         f"{spacing_mm[0]:g} {spacing_mm[1]:g}) is too small; expected >= "
                         f"{MIN_FOV_MM:.0f} mm in both directions to hold T12..S1")
    return spacing_mm


def _write_patient_slices(out: pathlib.Path, seed: int, index: int, n_slices: int, *, size: int,
                          spacing_mm: tuple[float, float], slice_spacing_mm: float
                          ) -> tuple[PatientAnatomy, list[dict], list[dict]]:
    """Samples patient ``index`` and writes its ``n_slices`` LabelMe slices under ``out``.

    Returns:
        (the anatomy, its ``discs.csv`` rows: one per slice and labelled disc present in the
        mask, its ``geometry_truth.csv`` rows).
    """
    pid = patient_id(index)
    anat = sample_patient(seed, index)
    textures = patient_textures(seed, index, size, spacing_mm)
    p_discs, p_truth = [], []
    for k in range(n_slices):
        image, mask, rows, _ = generate_slice(anat, seed, k, n_slices, size=size,
                                              spacing_mm=spacing_mm,
                                              slice_spacing_mm=slice_spacing_mm,
                                              textures=textures)
        labelme_io.write_labelme(layout.labelme_json_path(out, pid, k), image, mask,
                                 patient=pid, slice_index=k, pixel_spacing_mm=spacing_mm)
        present = set(np.unique(mask).tolist())
        for spec in anat.discs:
            if labels.SEG_ID[spec.level] in present:
                from_bottom = len(labels.DISC_NAMES) - labels.DISC_NAMES.index(spec.level)
                p_discs.append({"patient": pid, "slice": k, "level": spec.level,
                                "ivd_label": from_bottom,
                                "pfirrmann": spec.pfirrmann, "severity": spec.severity,
                                "grade_class": spec.grade_class})
        p_truth += rows
    return anat, p_discs, p_truth
