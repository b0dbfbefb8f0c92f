"""Patient-grouped, grade-stratified k-fold cross-validation splits, made once and reused.

As in nnU-Net, the folds are drawn once with a fixed seed, written to ``DIR/folds.json`` and
read by every experiment, so that all models are compared on the same patients.

Assignment (``make_folds``): every slice of a patient is in the patient's fold (no leakage
between slices of one volume). Patients are stratified by their worst (highest) Pfirrmann
grade over all discs (Pfirrmann et al., Spine 2001); patients without any grade form one
more stratum. Within each stratum patients are shuffled with ``numpy.random.default_rng
(seed)``; the strata are then concatenated (grades 1..5, then ungraded) and dealt to folds
round-robin, ``fold = position mod k``. Hence

* fold sizes differ by at most one patient (strata or not), and
* within every stratum of size s the per-fold counts differ by at most one (each grade is
  spread over min(s, k) folds).

The result depends only on the set of patients, their grades, ``k`` and ``seed``, not on the
input order.

File format (``folds.json``)::

    {"version": 1, "k": 8, "seed": 0, "stratified_by": "worst_pfirrmann",
     "source": "/data/spider", "folds": {"100": 3, "101": 0, ...}}
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import pathlib
import sys
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # only for annotations; folds.py itself does not need pandas
    import pandas as pd

from spoils_tf import fileio, labels
from spoils_tf.data import layout

FOLDS_VERSION = 1
STRATIFIED_BY_GRADE = "worst_pfirrmann"
NOT_STRATIFIED = "none"


# === Assignment ===
def make_folds(patients: Sequence[str], worst_grade: Optional[Mapping[str, Optional[int]]],
               k: int = 8, seed: int = 0) -> dict[str, int]:
    """Assigns each patient to a fold 0..k-1 (algorithm in the module docstring).

    Args:
        patients: patient ids; duplicates (e.g. one entry per slice) are merged.
        worst_grade: patient -> worst Pfirrmann grade 1..5, or None / missing / NaN when
            ungraded; None stratifies nobody (all patients in one stratum). Patients not in
            ``patients`` are ignored.
        k: number of folds, 2 <= k <= number of patients.
        seed: seed of the shuffle.

    Returns:
        patient -> fold index, for every distinct patient.

    Raises:
        ValueError: k < 2, k larger than the number of patients, or a grade that is not
            one of ``labels.PFIRRMANN_GRADES``.
    """
    unique = sorted({str(p) for p in patients})
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if k > len(unique):
        raise ValueError(f"k={k} folds but only {len(unique)} patients; expected k <= number of patients")
    strata: dict[Optional[int], list[str]] = collections.defaultdict(list)
    grades = {str(p): g for p, g in (worst_grade or {}).items()}
    for p in unique:
        g = grades.get(p)
        if g is not None and not (isinstance(g, float) and math.isnan(g)):
            if g not in labels.PFIRRMANN_GRADES or int(g) != g:
                raise ValueError(f"patient {p!r}: worst grade {g!r}; "
                                 f"expected one of {labels.PFIRRMANN_GRADES}")
            g = int(g)
        else:
            g = None
        strata[g].append(p)
    rng = np.random.default_rng(seed)
    order: list[str] = []
    for g in sorted(strata, key=lambda s: (s is None, s or 0)):
        members = strata[g]
        order.extend(members[i] for i in rng.permutation(len(members)))
    return {p: i % k for i, p in enumerate(order)}


# === File ===
def _check_assignment(assignment: Mapping[str, int], k: int, source: str) -> dict[str, int]:
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ValueError(f"{source}: field 'k': expected an integer >= 2, got {k!r}")
    out = {}
    for p, f in assignment.items():
        if not isinstance(f, (int, np.integer)) or isinstance(f, bool) or not 0 <= int(f) < k:
            raise ValueError(f"{source}: field 'folds.{p}': fold {f!r}; expected an integer 0..{k - 1}")
        out[str(p)] = int(f)
    empty = sorted(set(range(k)) - set(out.values()))
    if empty:
        raise ValueError(f"{source}: field 'folds': folds {empty} have no patient; "
                         f"expected every fold 0..{k - 1} used")
    return out


def write_folds(path: str | pathlib.Path, assignment: Mapping[str, int], *, k: int, seed: int,
                stratified_by: str, source: str, overwrite: bool = False) -> pathlib.Path:
    """Writes ``folds.json`` atomically (format in the module docstring).

    An existing file with the same ``k`` and assignment is left untouched (no-op); one with
    a different assignment is replaced only when ``overwrite`` is True, because folds are
    made once and every experiment reuses them.

    Raises:
        ValueError: fold indices outside 0..k-1 or an empty fold.
        FileExistsError: ``path`` holds a different assignment and ``overwrite`` is False.
    """
    path = pathlib.Path(path)
    folds = _check_assignment(assignment, k, str(path))
    if path.exists() and not overwrite:
        try:
            old = load_folds(path)
        except ValueError as e:
            raise FileExistsError(f"{path}: exists and is not a valid folds file ({e}); "
                                  "pass overwrite=True (--overwrite) to replace it") from e
        if old.k == k and old.assignment == folds:
            return path
        changed = sorted(p for p in set(old.assignment) | set(folds)
                         if old.assignment.get(p) != folds.get(p))
        raise FileExistsError(
            f"{path}: exists with a different assignment (k {old.k} -> {k}, {len(changed)} patients "
            f"differ); folds are made once and reused: pass overwrite=True (--overwrite) to replace it")
    payload = {"version": FOLDS_VERSION, "k": k, "seed": seed, "stratified_by": stratified_by,
               "source": source, "folds": {p: folds[p] for p in sorted(folds)}}
    return fileio.write_json(path, payload, indent=1)


@dataclasses.dataclass(frozen=True)
class Folds:
    """A loaded ``folds.json``.

    Attributes:
        k: number of folds.
        seed: seed used by ``make_folds``.
        stratified_by: ``"worst_pfirrmann"`` or ``"none"``.
        source: the dataset the folds were made from.
        assignment: patient -> fold 0..k-1.
    """

    k: int
    seed: int
    stratified_by: str
    source: str
    assignment: dict[str, int]

    @property
    def patients(self) -> list[str]:
        """All patients, sorted."""
        return sorted(self.assignment)

    def fold_of(self, patient: str) -> int:
        """Fold index of ``patient``. Raises KeyError naming the patient if unknown."""
        try:
            return self.assignment[str(patient)]
        except KeyError:
            raise KeyError(f"patient {patient!r} is not in the folds file ({len(self.assignment)} "
                           f"patients from {self.source})") from None

    def split(self, test_fold: int) -> tuple[list[str], list[str]]:
        """(train_patients, test_patients), each sorted; test = the patients of ``test_fold``.

        Raises:
            ValueError: ``test_fold`` outside 0..k-1.
        """
        if not 0 <= test_fold < self.k:
            raise ValueError(f"test_fold must be 0..{self.k - 1}, got {test_fold}")
        train = sorted(p for p, f in self.assignment.items() if f != test_fold)
        test = sorted(p for p, f in self.assignment.items() if f == test_fold)
        return train, test


def load_folds(path: str | pathlib.Path) -> Folds:
    """Reads and validates a ``folds.json``.

    Raises:
        FileNotFoundError: no such file (the message says how to make one).
        ValueError: naming the file and field: invalid JSON, wrong version, k not an
            integer >= 2, folds not a {patient: 0..k-1} object, or an empty fold.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no folds file; make one with 'spoils folds --data DIR'")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: field 'json': invalid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: field 'json': expected an object")
    if raw.get("version") != FOLDS_VERSION:
        raise ValueError(f"{path}: field 'version': {raw.get('version')!r}; expected {FOLDS_VERSION}")
    folds = raw.get("folds")
    if not isinstance(folds, dict) or not folds:
        raise ValueError(f"{path}: field 'folds': expected a non-empty object patient -> fold")
    k = raw.get("k")
    assignment = _check_assignment(folds, k, str(path))
    return Folds(k=k, seed=raw.get("seed"), stratified_by=str(raw.get("stratified_by")),
                 source=str(raw.get("source")), assignment=assignment)


# === Command line ===
def patient_of_json(path: pathlib.Path) -> str:
    """Patient of a LabelMe json from its path alone (``<patient>_slice<k>`` stem, else the
    parent directory name), as ``labelme_io.read_labelme`` falls back to."""
    try:
        return layout.parse_stem(path.stem)[0]
    except ValueError:
        return path.parent.name


def read_worst_grades(discs_csv: pathlib.Path) -> tuple[dict[str, int], list[str]]:
    """patient -> worst (max) Pfirrmann grade from ``discs.csv`` column ``pfirrmann``.

    Empty cells are ungraded. Returns (grades, issues): a cell that is not a grade 1..5 is
    reported in ``issues`` (``"discs.csv line 7: pfirrmann 'x' ..."``) and skipped. A file
    without the column gives ({}, [one issue]).
    """
    grades: dict[str, int] = {}
    issues: list[str] = []
    with open(discs_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"patient", "pfirrmann"} <= set(reader.fieldnames):
            return {}, [f"{discs_csv}: no 'patient'/'pfirrmann' columns; folds are not stratified"]
        for line_no, row in enumerate(reader, start=2):
            cell = (row.get("pfirrmann") or "").strip()
            if not cell:
                continue
            try:
                g = float(cell)
                if g not in labels.PFIRRMANN_GRADES:
                    raise ValueError
            except ValueError:
                issues.append(f"{discs_csv} line {line_no}: pfirrmann {cell!r}; expected one of "
                              f"{labels.PFIRRMANN_GRADES} or empty (skipped)")
                continue
            p = str(row["patient"])
            grades[p] = max(grades.get(p, 0), int(g))
    return grades, issues


def fold_table(folds: Folds, slices_per_patient: Mapping[str, int], grades: Mapping[str, int]) -> str:
    """Text table: per fold the number of patients, slices and worst-grade histogram."""
    cols = [f"PG{g}" for g in labels.PFIRRMANN_GRADES] + ["ungraded"]
    head = f"{'fold':>4} {'patients':>8} {'slices':>7} " + " ".join(f"{c:>8}" for c in cols)
    rows = [head]
    totals = np.zeros(len(cols) + 2, int)
    for fold in range(folds.k):
        _, test = folds.split(fold)
        hist = [sum(grades.get(p) == g for p in test) for g in labels.PFIRRMANN_GRADES]
        hist.append(sum(grades.get(p) is None for p in test))
        n_slices = sum(slices_per_patient.get(p, 0) for p in test)
        vals = [len(test), n_slices] + hist
        totals += vals
        rows.append(f"{fold:>4} {len(test):>8} {n_slices:>7} " + " ".join(f"{v:>8}" for v in hist))
    rows.append(f"{'all':>4} {totals[0]:>8} {totals[1]:>7} " + " ".join(f"{v:>8}" for v in totals[2:]))
    return "\n".join(rows)



# === Leakage mode and fold selection (shared by the grading experiments) ===
def slice_level_folds(rows: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """LEAKY folds: each (patient, slice) gets a random fold in ``0..k-1``, patients ignored.

    Fold sizes (in slices) differ by at most one. Returns ``int64 [len(rows)]``.

    Raises:
        ValueError: if there are fewer distinct slices than ``k``.
    """
    keys = list(zip(rows["patient"].astype(str), rows["slice"].astype(int)))
    uniq = sorted(set(keys))
    if len(uniq) < k:
        raise ValueError(f"split=slice: {len(uniq)} distinct slices, fewer than k={k} folds")
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[j]: int(r % k) for r, j in enumerate(order)}
    return np.asarray([fold_of[key] for key in keys], np.int64)


def folds_to_run(spec: str, k: int) -> list[int]:
    """``"all"`` -> ``[0..k-1]``; ``"3"`` -> ``[3]``; ``"0,2"`` -> ``[0, 2]``.

    Raises:
        ValueError: a fold outside ``0..k-1`` or an unparsable spec (naming config.fold).
    """
    spec = str(spec).strip().lower()
    if spec in ("all", ""):
        return list(range(k))
    try:
        out = [int(s) for s in spec.split(",")]
    except ValueError:
        raise ValueError(f"config.fold: expected 'all' or fold numbers like '3' or '0,2', "
                         f"got {spec!r}") from None
    bad = [f for f in out if not 0 <= f < k]
    if bad:
        raise ValueError(f"config.fold: fold(s) {bad} outside 0..{k - 1}")
    return out


@dataclasses.dataclass(frozen=True)
class DatasetFolds:
    """What :func:`write_dataset_folds` wrote and counted.

    Attributes:
        path: the folds file.
        folds: the folds as read back from ``path``.
        slices_per_patient: patient -> number of LabelMe slices.
        worst_grades: patient -> worst Pfirrmann grade (graded patients with a slice only).
        issues: warnings about ``discs.csv`` (unreadable rows, graded patients without slices).
    """
    path: pathlib.Path
    folds: Folds
    slices_per_patient: collections.Counter
    worst_grades: dict[str, int]
    issues: list[str]

    def summary_text(self) -> str:
        """What ``spoils folds`` prints: ``<path>: N patients, S slices, k=K, seed=S, stratified
        by <column>``, then the per-fold :func:`fold_table`."""
        folds = self.folds
        head = (f"{self.path}: {len(folds.patients)} patients, "
                f"{sum(self.slices_per_patient.values())} slices, k={folds.k}, seed={folds.seed}, "
                f"stratified by {folds.stratified_by}")
        return head + "\n" + fold_table(folds, self.slices_per_patient, self.worst_grades)


def ensure_dataset_folds(dataset_dir: str | pathlib.Path, folds_path: str | pathlib.Path | None,
                         *, k: int, seed: int) -> Folds:
    """Loads ``folds_path`` (default ``dataset_dir/folds.json``), first writing it with
    :func:`write_dataset_folds` (``k``, ``seed``) when it does not exist and printing what
    ``spoils folds`` prints (issues to stderr).

    Raises:
        RuntimeError: the folds could not be written (the ``FileNotFoundError``,
            ``ValueError`` or ``FileExistsError`` of ``write_dataset_folds``, chained).
    """
    dataset_dir = pathlib.Path(dataset_dir)
    path = pathlib.Path(folds_path or dataset_dir / layout.FOLDS_JSON)
    if not path.is_file():
        try:
            made = write_dataset_folds(dataset_dir, k=k, seed=seed, out=path)
        except (FileNotFoundError, ValueError, FileExistsError) as e:
            raise RuntimeError(f"folds of {dataset_dir}: {e}") from e
        for issue in made.issues:
            print(f"spoils folds: warning: {issue}", file=sys.stderr)
        print(made.summary_text())
    return load_folds(path)


def write_dataset_folds(data: str | pathlib.Path, *, k: int = 8, seed: int = 0,
                        out: Optional[str | pathlib.Path] = None,
                        overwrite: bool = False) -> DatasetFolds:
    """Folds for a spoils dataset directory: its patients (from the LabelMe file names),
    stratified by their worst grade when ``DIR/discs.csv`` exists, written to ``out`` (default
    ``DIR/folds.json``, :func:`write_folds`) and read back.

    Raises:
        FileNotFoundError: no LabelMe folder in ``data``.
        ValueError: no LabelMe json file, or a bad ``k``.
        FileExistsError: ``out`` holds different folds and ``overwrite`` is False.
    """
    data = pathlib.Path(data)
    out = pathlib.Path(out) if out is not None else data / layout.FOLDS_JSON
    jsons = layout.list_labelme_jsons(data)
    slices = collections.Counter(patient_of_json(p) for p in jsons)
    if not slices:
        raise ValueError(f"{data / layout.LABELME_DIR}: no LabelMe json files")
    grades: dict[str, int] = {}
    issues: list[str] = []
    discs_csv = data / layout.DISCS_CSV
    if discs_csv.is_file():
        grades, issues = read_worst_grades(discs_csv)
        unknown = sorted(set(grades) - set(slices))
        if unknown:
            issues.append(f"{discs_csv}: {len(unknown)} graded patients have no LabelMe file "
                          "(ignored)")
        grades = {p: g for p, g in grades.items() if p in slices}
    stratified_by = STRATIFIED_BY_GRADE if grades else NOT_STRATIFIED
    assignment = make_folds(list(slices), grades, k=k, seed=seed)
    write_folds(out, assignment, k=k, seed=seed, stratified_by=stratified_by,
                source=str(data.resolve()), overwrite=overwrite)
    return DatasetFolds(out, load_folds(out), slices, grades, issues)
