"""One patient's slices -> a PHI-free report dict: :class:`Predictor` (a bundle loaded once,
its stages over one :class:`PatientCase`). ``spoils_tf.serve.run.run_predict`` (input file ->
report folder, the library behind ``spoils predict``) reads the input for it and writes what
it returns; ``spoils_tf.serve.report_data`` assembles the dict.

Stages (``STAGES``, the keys of ``report["timing_ms"]``, milliseconds). :meth:`Predictor.
predict_full` runs them in order, one method each: ``_read``, ``_segment``, ``_measure``
(geometry), ``_classify`` (crops and both classifiers), ``_ensemble``, ``_decide`` (decision)
and ``report_data.build_report`` (write); each fills its fields of one :class:`PatientCase`
and adds its time with :func:`timer`:

* ``read``: the checks of every argument (and, in ``spoils_tf.serve.run.run_predict``, the
  input: ``spoils_tf.serve.inputs.input_kind``: PNG/JPEG, a 2-D MHA/NIfTI, or a DICOM file /
  series folder / 3-D volume through ``spoils_tf.data.dicom_io.load_series``, which checks the
  plane is sagittal and takes the mid-sagittal slice and ``(slices - 1) / 2`` neighbours on
  each side).
* ``segment``: the bundle's segmentation SavedModel (``spoils_tf.serve.bundle``), or the label
  map given with ``--mask`` / ``masks=`` ("segmentation: supplied mask").
* ``geometry``: ``spoils_tf.geometry.measure.measure_slice_detailed`` per slice, in mm. A
  disc is *found* on a slice when a frame could be fitted and its height is finite.
* ``crops``: ``spoils_tf.geometry.crops.crop_disc`` with the crop classifier card's
  ``crop_height``, ``crop_width``, ``margin_frac`` and ``context_slices`` (the neighbours
  k-1, k+1 as channels; a neighbour outside the slices read repeats the centre slice, noted).
* ``classify_cnn``: the crop classifier (``model.keras``) on every found disc of every slice.
* ``classify_geometry``: the geometry classifier (skops) on feature rows built by the same
  code as the training table (``features.feature_row`` + ``features.assemble_feature_table``
  + ``grade_geometry_lib.add_level_index``), columns = the card's ``features`` in order.
* ``ensemble``: per disc, each classifier's probabilities are averaged over the slices the
  disc was found on; the ensemble is the equal-weight mean (``spoils_tf.ensemble.
  mean_ensemble``, the paper's) of the classifiers present whose ``classes`` equal
  ``labels.GRADE_CLASSES``. Classifiers with other classes are reported, not ensembled.
* ``decision``: ``spoils_tf.clinical.rules.decide`` on the ensemble classes and, per disc, the
  ensemble's probability for its predicted class, when ODI and NRS are both given; otherwise
  the report says :data:`NO_SCORES_NOTE`. A surgical consultation or injection driven only by
  discs below the threshold is withheld (recommendation None, the note names the disc, grade,
  probability and threshold). The threshold is ``clinical.strata.INTERVENTION_MIN_PROBABILITY``
  unless an ensemble member's card has the field ``intervention_min_probability`` (the largest
  such value is used); ``report["decision_rules"]`` gives it, its source and the rule table.
* ``write``: assembling the report (``spoils_tf.serve.report_data.build_report``; and, in
  ``spoils_tf.serve.run.run_predict``, rendering and writing it).

Timing: :meth:`Predictor.warmup` runs every model once on an image size, so that the stage
times hold no one-off graph tracing (``spoils_tf.serve.run.run_predict``, hence the CLI,
calls it first); ``case.traced`` names the stages that did include tracing.

Plausibility: a disc with a measurement outside ``spoils_tf.geometry.plausibility.
PLAUSIBLE_RANGES`` on a slice it was found on (a segmentation, cut or pixel-spacing error, not
a finding) is reported with the measurement, its value and the range under
``"implausible_measurements"`` and is not graded; the recommendation then abstains
(:data:`IMPLAUSIBLE_NOTE`), as it does when the level names are in doubt.

Status: ``STATUS_OK``, or ``STATUS_NO_DISC`` when no disc is found on any slice (no grades,
no recommendation). Bad slices, masks, spacing or ODI/NRS are a ``ValueError`` naming the
field, raised by the ``read`` stage before any model runs.

Precision: ``"bfloat16"`` builds the crop classifier under Keras' ``mixed_bfloat16`` policy,
and the segmenter too when its card names a ``.keras`` copy in the optional field
``keras_file``; a SavedModel graph runs in the precision it was exported with, and
``report["models"]["precision"]`` says what actually ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from spoils_tf import fileio, labels
from spoils_tf.classical import io as cio
from spoils_tf.clinical import rules
from spoils_tf.data import mr_weighting
from spoils_tf.data.images import check_pixel_spacing
from spoils_tf.geometry import measure, plausibility
from spoils_tf.serve import bundle, report_data, segmenter
from spoils_tf.serve.inputs import finite_or_none
from spoils_tf.serve.report_data import NO_DISC_NOTE, STATUS_NO_DISC, STATUS_OK, SUPPLIED_MASK

STAGES: tuple[str, ...] = ("read", "segment", "geometry", "crops", "classify_cnn",
                           "classify_geometry", "ensemble", "decision", "write")
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
KERAS_POLICY: dict[str, str] = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
NO_SCORES_NOTE = "no ODI/NRS given: grades only, no recommendation"
LEVEL_DOUBT_NOTE = ("the level names on the mid-sagittal slice are uncertain, so no "
                    "recommendation is given (a grade at the wrong level must not drive one); the "
                    "grades are shown for review against the overlay")
IMPLAUSIBLE_NOTE = ("a measurement lies outside the plausible range of an adult lumbar spine "
                    "({}), which points to a segmentation or pixel-spacing error: the disc(s) "
                    "named are not graded and no recommendation is given (an ungraded disc "
                    "could change it); check the overlay and the pixel spacing")
# A disc whose area is below this fraction of the median disc area of its slice (with 3 or
# more discs found) is a segmentation speck: reported, not graded (project choice; lumbar
# discs of one patient differ in area by well under a factor of 2, so 1/4 is a wide margin).
MIN_DISC_AREA_FRACTION = 0.25
IMPLAUSIBLE_AREA_REASON = "disc_area_below_quarter_of_median_not_graded"
PATIENT_KEY = "input"   # the one "patient" of the feature rows built at prediction time


# === Small helpers ===
@contextlib.contextmanager
def timer(timing: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the wall-clock time of the ``with`` body, in milliseconds rounded to 0.001, to
    ``timing[stage]`` (from 0 when absent), also when the body raises."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timing[stage] = round(timing.get(stage, 0.0) + (time.perf_counter() - t0) * 1000.0, 3)


@contextlib.contextmanager
def _keras_policy(precision: str) -> Iterator[None]:
    """Sets Keras' global dtype policy for building models; restores the previous one."""
    import keras
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(KERAS_POLICY[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def check_scores(odi: Any, nrs: Any) -> tuple[Optional[float], Optional[int]]:
    """Validates ODI and NRS together: both None, or both valid.

    Raises:
        ValueError: only one given (naming the missing one), or a bad value: the message
            starts with ``odi:`` / ``nrs:`` and carries ``clinical.rules``' explanation.
    """
    if odi is None and nrs is None:
        return None, None
    if odi is None or nrs is None:
        missing = "odi" if odi is None else "nrs"
        raise ValueError(f"{missing}: missing; give both --odi (0-100) and --nrs (0-10) for a "
                         "recommendation, or neither for grades only")
    try:
        odi_v = rules.validate_odi(odi)
    except ValueError as e:
        raise ValueError(f"odi: {e}") from None
    try:
        nrs_v = rules.validate_nrs(nrs)
    except ValueError as e:
        raise ValueError(f"nrs: {e}") from None
    return odi_v, nrs_v


def default_offsets(n: int) -> list[int]:
    """Slice offsets from the mid-sagittal slice in the order :meth:`Predictor.predict` expects
    by default: ``0, -1, +1, -2, +2, ...`` (``n`` of them)."""
    out = [0]
    k = 1
    while len(out) < n:
        out.append(-k)
        if len(out) < n:
            out.append(k)
        k += 1
    return out


# === Models ===
@dataclasses.dataclass
class _Classifier:
    """One loaded classifier: ``probs(rows) -> float [N, len(classes)]``."""
    key: str                       # "crop_classifier" | "geometry_classifier"
    entry: bundle.BundleModel
    classes: tuple[str, ...]
    in_ensemble: bool


@dataclasses.dataclass
class Prediction:
    """What :meth:`Predictor.predict_full` returns.

    Attributes:
        report: the report dict (JSON-serialisable).
        masks: int32 [H, W] label map per slice (segmented or supplied), same order as input.
        slices: the uint8 [H, W] slices, same order.
    """
    report: dict[str, Any]
    masks: list[np.ndarray]
    slices: list[np.ndarray]


@dataclasses.dataclass
class PatientCase:
    """One patient as it passes from stage to stage of :meth:`Predictor.predict_full`.

    The ``read`` stage fills the inputs; each later stage fills its own fields and adds its
    wall-clock time to ``timing`` (:func:`timer`).

    Attributes:
        slices: uint8 [H, W] per slice, mid-sagittal first; in display orientation once a
            fixed-spacing model has segmented them.
        spacing_mm: (row_mm, col_mm) pixel spacing, checked.
        offsets: each slice's position relative to the mid-sagittal one, in slices.
        slice_spacing_mm: centre-to-centre slice distance in mm, or None (unknown).
        odi, nrs: the checked scores, or None (not given).
        source: the caller's description of the input (``report["input"]``).
        orientation_from_header: the slices' orientation comes from their file's header.
        masks: int32 [H, W] label map per slice (supplied, or from ``segment``).
        timing: milliseconds per stage of :data:`STAGES`.
        notes: sentences for ``report["notes"]``.
        traced: stages whose time includes one-off graph tracing.
        segmentation: where the masks came from (``"model <label>"`` or
            :data:`SUPPLIED_MASK`).
        level_doubts: why the mid-sagittal slice's level names are in doubt (empty: none).
        per_level: level -> slice index -> that disc's measurement result
            (``measure.measure_slice_detailed``).
        levels: the disc levels present in any mask, in ``labels.DISC_NAMES`` order.
        found: level -> indices of the slices the disc is graded on.
        flagged: level -> (slice indices, implausible measurements): measured, not graded.
        status: :data:`STATUS_OK` or :data:`STATUS_NO_DISC`.
        table: the feature table (pandas, one row per disc and slice).
        probs: classifier key -> level -> float64 [C] probabilities.
        members: the classifiers in the ensemble.
        ensemble: level -> float64 [len(labels.GRADE_CLASSES)] ensemble probabilities.
        recommendation: ``clinical.rules`` decision as a dict, or None.
        recommendation_note: why there is no recommendation, or None.
        weighting: ``report["input"]["weighting"]`` (``inputs.weighting_entry``): from the
            source's header, refined from the image by :func:`check_weighting`.
        not_graded: why no grade is computed (a T1, PD, STIR or FLAIR series), or None.
    """

    # === Inputs (stage "read") ===
    slices: list[np.ndarray]
    spacing_mm: tuple[float, float]
    offsets: list[int]
    slice_spacing_mm: Optional[float]
    odi: Optional[float]
    nrs: Optional[int]
    source: Optional[dict]
    orientation_from_header: bool
    masks: Optional[list[np.ndarray]] = None
    # === Bookkeeping ===
    timing: dict[str, float] = dataclasses.field(
            default_factory=lambda: {s: 0.0 for s in STAGES})
    notes: list[str] = dataclasses.field(default_factory=list)
    traced: list[str] = dataclasses.field(default_factory=list)
    # === Stage "segment" ===
    segmentation: str = ""
    level_doubts: list[str] = dataclasses.field(default_factory=list)
    # === Stage "geometry" ===
    per_level: dict[str, dict[int, Any]] = dataclasses.field(default_factory=dict)
    levels: list[str] = dataclasses.field(default_factory=list)
    found: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    flagged: dict[str, tuple[list[int], list[dict[str, Any]]]] = dataclasses.field(
            default_factory=dict)
    status: str = STATUS_NO_DISC
    table: Any = None
    # === Stages "classify_*", "ensemble", "decision" ===
    probs: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    members: list[_Classifier] = dataclasses.field(default_factory=list)
    ensemble: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    recommendation: Optional[dict[str, Any]] = None
    recommendation_note: Optional[str] = None
    # === Weighting (stage "geometry": header, then image) ===
    weighting: dict[str, Any] = dataclasses.field(default_factory=dict)
    not_graded: Optional[str] = None

    @property
    def found_levels(self) -> list[str]:
        """The levels graded on at least one slice, in ``levels`` order."""
        return [d for d in self.levels if self.found[d]]


class Predictor:
    """Loads a model bundle once (``spoils_tf.serve.bundle``) and reports on slices.

    Args:
        models_dir: a bundle directory (``spoils_seg/<v>/`` required, ``spoils_grade_cnn/<v>/``
            and ``spoils_grade_geometry/<v>/`` optional).
        precision: ``"float32" | "bfloat16"`` (module docstring).

    Raises:
        FileNotFoundError: ``models_dir`` missing.
        spoils_tf.serve.bundle.BundleError: a bad card, a model that disagrees with its card (crop
            size, classes, features), a model file that does not load.
        ValueError: unknown ``precision``.
    """

    def __init__(self, models_dir, *, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision: {precision!r}; expected one of {PRECISIONS}")
        spent: dict[str, float] = {}
        with timer(spent, "load"):
            self.precision = precision
            self.bundle = bundle.load_bundle(models_dir)
            self.precision_used: dict[str, str] = {}
            self._segment_one = self._load_segmenter(self.bundle[bundle.SEG])
            self.cnn: Optional[_Classifier] = None
            self.geometry: Optional[_Classifier] = None
            if bundle.CROP in self.bundle:
                self.cnn = self._load_cnn(self.bundle[bundle.CROP])
            if bundle.GEOMETRY in self.bundle:
                self.geometry = self._load_geometry(self.bundle[bundle.GEOMETRY])
            self.members = [c for c in (self.cnn, self.geometry)
                            if c is not None and c.in_ensemble]
            self.decision_config, self.threshold_source = self._decision_config(self.members)
            self.calibrated = self._calibrated(self.members)
        self.load_ms = spent["load"]
        # what has already run once (no graph tracing left to do): the segmenter per image
        # size (H, W), the crop classifier (one fixed crop size)
        self._seg_warm: set[tuple[int, int]] = set()
        self._cnn_warm = False

    # --- loading ---
    @staticmethod
    def _decision_config(members: Sequence[_Classifier]) -> tuple[rules.DecisionConfig, str]:
        """The decision table with the abstention threshold in force and where it came from:
        the largest ``intervention_min_probability`` of the members' cards, else
        ``clinical.strata.INTERVENTION_MIN_PROBABILITY``.

        Raises:
            bundle.BundleError: a card's field is not a number in [0, 1] (names the card).
        """
        found = []
        for c in members:
            if "intervention_min_probability" not in c.entry.card:
                continue
            t = c.entry.card["intervention_min_probability"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
                raise bundle.BundleError(bundle.card_path(c.entry.version_dir),
                                         "intervention_min_probability",
                                         f"expected a probability in [0, 1], got {t!r}")
            origin = c.entry.card.get("intervention_threshold_reason")
            origin = (f"from the model card of {c.entry.label}: {origin}"
                      if origin else f"set by the model card of {c.entry.label}")
            found.append((float(t), f"model card of {c.entry.label}", origin))
        if not found:
            return rules.DEFAULT_CONFIG, "spoils_tf.clinical.strata.INTERVENTION_MIN_PROBABILITY"
        t, source, origin = max(found)
        return dataclasses.replace(rules.DEFAULT_CONFIG, intervention_min_probability=t,
                                   threshold_origin=origin), source

    @staticmethod
    def _calibrated(members: Sequence[_Classifier]) -> bool:
        """True when there is one member and its card says ``"calibrated": true``.

        Raises:
            bundle.BundleError: a card's ``calibrated`` is not a boolean (names the card).
        """
        for c in members:
            v = c.entry.card.get("calibrated", False)
            if not isinstance(v, bool):
                raise bundle.BundleError(bundle.card_path(c.entry.version_dir), "calibrated",
                                         f"expected true or false, got {v!r}")
        return len(members) == 1 and members[0].entry.card.get("calibrated", False) is True

    def _load_segmenter(self, entry: bundle.BundleModel):
        resize_mode = str(entry.card["resize_mode"])
        if resize_mode == "spacing":
            # a fixed-spacing model: levels from the anatomy; orientation from the bundle's
            # orientation network (or the anatomy when it has none)
            try:
                float(entry.card["target_spacing_mm"])
                seg = segmenter.Segmenter(entry=entry)
            except (OSError, ValueError, KeyError) as e:
                raise bundle.BundleError(f"{entry.model_path}: segmentation model does not load "
                                         f"({e})") from e
            self.precision_used["segmentation"] = "float32 (.keras, fixed pixel spacing)"
            return seg
        keras_file = entry.card.get("keras_file")
        if self.precision == "bfloat16" and keras_file:
            path = (entry.version_dir / str(keras_file)).resolve()
            if not path.is_file():
                raise bundle.BundleError(f"{bundle.card_path(entry.version_dir)}: field "
                                         f"'keras_file' names {path}, which does not exist")
            with _keras_policy("bfloat16"):
                fn = segmenter.load_segmenter(path, resize_mode)
            self.precision_used["segmentation"] = "mixed_bfloat16 (keras_file)"
            return fn
        try:
            fn = segmenter.load_segmenter(entry.model_path, resize_mode)
        except (OSError, ValueError) as e:
            raise bundle.BundleError(f"{entry.model_path}: segmentation model does not load "
                                     f"({e})") from e
        self.precision_used["segmentation"] = (
            "as exported (SavedModel graph; the card has no 'keras_file' for bfloat16)"
            if self.precision == "bfloat16" else "as exported (SavedModel graph)")
        return fn

    def _load_cnn(self, entry: bundle.BundleModel) -> _Classifier:
        import keras
        import tensorflow as tf
        import spoils_tf.models.classifiers  # noqa: F401  (registers DiscClassifier)
        card, where = entry.card, bundle.card_path(entry.version_dir)
        with _keras_policy(self.precision):
            try:
                model = keras.saving.load_model(entry.model_path)
            except Exception as e:  # noqa: BLE001 - any load failure is a bad bundle
                raise bundle.BundleError(f"{entry.model_path}: crop classifier does not load "
                                         f"({type(e).__name__}: {e})") from e
        self.precision_used["crop_classifier"] = KERAS_POLICY[self.precision]
        h, w = int(card["crop_height"]), int(card["crop_width"])
        context = int(card["context_slices"])
        if context not in (0, 1):
            raise bundle.BundleError(f"{where}: field 'context_slices' is {context}; expected 0 "
                                     "or 1")
        channels = 3 if context else 1
        shape = tuple(model.input_shape[1:])
        if shape != (h, w, channels):
            raise bundle.BundleError(f"{where}: fields crop_height/crop_width/context_slices "
                                     f"give input {(h, w, channels)} but {entry.model_path.name} "
                                     f"takes {shape}")
        classes = tuple(str(c) for c in card["classes"])
        model_classes = tuple(getattr(model, "class_names", ()) or ())
        if model_classes and model_classes != classes:
            raise bundle.BundleError(f"{where}: field 'classes' {list(classes)} != the model's "
                                     f"classes {list(model_classes)}")
        if int(model.output_shape[-1]) != len(classes):
            raise bundle.BundleError(f"{where}: field 'classes' has {len(classes)} names but the "
                                     f"model outputs {int(model.output_shape[-1])}")
        self._cnn_model = model
        self._cnn_fn = tf.function(lambda x: model(x, training=False),
                                   input_signature=[tf.TensorSpec([None, h, w, channels],
                                                                  tf.float32)])
        return _Classifier("crop_classifier", entry, classes, classes == labels.GRADE_CLASSES)

    def _load_geometry(self, entry: bundle.BundleModel) -> _Classifier:
        card, where = entry.card, bundle.card_path(entry.version_dir)
        try:
            model, meta = cio.load_classifier(entry.model_path)
        except (OSError, ValueError) as e:
            raise bundle.BundleError(f"{entry.model_path}: geometry classifier does not load "
                                     f"({e})") from e
        features = [str(f) for f in card["features"]]
        if list(meta.get("feature_names") or []) != features:
            raise bundle.BundleError(f"{where}: field 'features' {features} != the model's "
                                     f"feature_names {meta.get('feature_names')}")
        classes = tuple(str(c) for c in card["classes"])
        if tuple(meta.get("classes") or ()) != classes:
            raise bundle.BundleError(f"{where}: field 'classes' {list(classes)} != the model's "
                                     f"classes {meta.get('classes')}")
        self._geometry_model = model
        self._geometry_features = features
        return _Classifier("geometry_classifier", entry, classes,
                           classes == labels.GRADE_CLASSES)

    def warmup(self, shape_hw: tuple[int, int] = (512, 512), *, segment: bool = True
               ) -> Optional[float]:
        """Runs the segmenter on a blank ``uint8 [H, W]`` slice (unless ``segment`` is False:
        a supplied mask) and the crop classifier on a blank batch once, so that one-off graph
        tracing is not counted in the stage timings.

        Returns:
            the milliseconds it took, or None when there was nothing left to warm up.
        """
        shape = (int(shape_hw[0]), int(shape_hw[1]))
        seg_todo = segment and shape not in self._seg_warm
        if not seg_todo and (self.cnn is None or self._cnn_warm):
            return None
        spent: dict[str, float] = {}
        with timer(spent, "warmup"):
            if seg_todo:
                if hasattr(self._segment_one, "warmup"):
                    self._segment_one.warmup(shape)
                else:
                    self._segment_one(np.zeros(shape, np.uint8))
                self._seg_warm.add(shape)
            if self.cnn is not None and not self._cnn_warm:
                spec = self._cnn_fn.input_signature[0]
                self._cnn_fn(np.zeros([1] + list(spec.shape[1:]), np.float32))
                self._cnn_warm = True
        return spent["warmup"]

    # === Prediction ===
    def predict(self, slices: list[np.ndarray], spacing_mm: tuple[float, float], *,
                odi=None, nrs=None, masks: Optional[list[np.ndarray]] = None,
                source: Optional[dict] = None, slice_offsets: Optional[Sequence[int]] = None,
                slice_spacing_mm: Optional[float] = None) -> dict:
        """The report dict for one patient (see :meth:`predict_full`)."""
        return self.predict_full(slices, spacing_mm, odi=odi, nrs=nrs, masks=masks,
                                 source=source, slice_offsets=slice_offsets,
                                 slice_spacing_mm=slice_spacing_mm).report

    def predict_full(self, slices: list[np.ndarray], spacing_mm: tuple[float, float], *,
                     odi=None, nrs=None, masks: Optional[list[np.ndarray]] = None,
                     source: Optional[dict] = None,
                     slice_offsets: Optional[Sequence[int]] = None,
                     slice_spacing_mm: Optional[float] = None,
                     orientation_from_header: bool = False) -> Prediction:
        """Runs every stage (:data:`STAGES`) on one patient's slices.

        Args:
            slices: uint8 [H, W] greyscale sagittal slices (superior up, anterior left), all
                one shape; the first is the mid-sagittal one.
            spacing_mm: (row_mm, col_mm) pixel spacing; required (measurements are in mm).
            odi, nrs: Oswestry Disability Index (0-100) and pain NRS (0-10), both or neither.
            masks: optional int [H, W] label maps (``labels`` ids), one per slice, replacing
                segmentation.
            source: input description merged into ``report["input"]`` (technical facts only:
                the caller must not put names, IDs or paths in it).
            slice_offsets: position of each slice relative to the mid-sagittal one, in slices
                (default :func:`default_offsets`: 0, -1, +1, ...); used for context channels
                and the disc volume.
            slice_spacing_mm: centre-to-centre slice distance (mm) for the disc volume; None =
                unknown (volume NaN, noted).
            orientation_from_header: the slices were put in display orientation from their
                file's direction cosines (trusted; a disagreeing orientation network makes the
                levels doubtful) rather than being 2-D pictures (whose orientation is read from
                the image, and refused when unclear).

        Returns:
            :class:`Prediction` (report, masks, slices).

        Raises:
            ValueError: naming the field: bad ``slices`` / ``masks`` / ``spacing_mm`` /
                ``slice_offsets``, bad or half-given ODI/NRS.
        """
        timing = {s: 0.0 for s in STAGES}
        with timer(timing, "read"):
            case = self._read(slices, spacing_mm, odi=odi, nrs=nrs, masks=masks, source=source,
                              slice_offsets=slice_offsets, slice_spacing_mm=slice_spacing_mm,
                              orientation_from_header=orientation_from_header)
        case.timing = timing
        self._segment(case)
        self._measure(case)
        self._classify(case)
        self._ensemble(case)
        self._decide(case)
        with timer(timing, "write"):
            report = fileio.json_safe(report_data.build_report(self, case))
        report["timing_ms"]["write"] = timing["write"]
        return Prediction(report, case.masks, case.slices)

    # --- stages (each fills its fields of the case and times itself) ---
    @staticmethod
    def _read(slices, spacing_mm, *, odi, nrs, masks, source, slice_offsets, slice_spacing_mm,
              orientation_from_header: bool) -> PatientCase:
        """``read``: checks every argument of :meth:`predict_full` (its Raises) and returns
        the case with its inputs filled in."""
        odi_v, nrs_v = check_scores(odi, nrs)
        spacing = check_pixel_spacing(spacing_mm, None, "pixel_spacing_mm")
        slices = [np.asarray(s) for s in slices]
        if not slices:
            raise ValueError("slices: empty; expected at least the mid-sagittal slice")
        for i, s in enumerate(slices):
            if s.ndim != 2 or s.dtype != np.uint8:
                raise ValueError(f"slices[{i}]: {s.dtype} {s.shape}; expected uint8 [H, W]")
            if s.shape != slices[0].shape:
                raise ValueError(f"slices[{i}]: shape {s.shape} != slices[0] {slices[0].shape}")
        offsets = list(slice_offsets) if slice_offsets is not None else default_offsets(len(slices))
        if len(offsets) != len(slices) or len(set(offsets)) != len(offsets) or offsets[0] != 0:
            raise ValueError(f"slice_offsets: {offsets}; expected {len(slices)} distinct integers "
                             "starting with 0 (the mid-sagittal slice)")
        if masks is not None:
            masks = [np.asarray(m) for m in masks]
            if len(masks) != len(slices):
                raise ValueError(f"masks: {len(masks)} label maps for {len(slices)} slices")
            for i, m in enumerate(masks):
                if m.shape != slices[i].shape or not np.issubdtype(m.dtype, np.integer):
                    raise ValueError(f"masks[{i}]: {m.dtype} {m.shape}; expected int "
                                     f"{slices[i].shape} (the slice's shape)")
                if m.size and (int(m.min()) < 0 or int(m.max()) >= labels.NUM_SEG_CLASSES):
                    raise ValueError(f"masks[{i}]: class ids {int(m.min())}..{int(m.max())}; "
                                     f"expected 0..{labels.NUM_SEG_CLASSES - 1} (labels.py)")
        return PatientCase(slices=slices, spacing_mm=spacing, offsets=offsets,
                           slice_spacing_mm=finite_or_none(slice_spacing_mm), odi=odi_v,
                           nrs=nrs_v, source=source,
                           orientation_from_header=orientation_from_header, masks=masks)

    def _segment(self, case: PatientCase) -> None:
        """``segment``: ``case.masks`` from the segmentation model, unless masks were given;
        a fixed-spacing model also turns ``case.slices`` to display orientation, adds its level
        flags to the notes and gives the mid-sagittal slice's ``level_doubts``."""
        with timer(case.timing, "segment"):
            if case.masks is not None:
                case.masks = [m.astype(np.int32) for m in case.masks]
                case.segmentation = SUPPLIED_MASK
                return
            if case.slices[0].shape not in self._seg_warm:
                case.traced.append("segment")
            case.masks, case.slices, case.level_doubts = self._segment_slices(case)
            self._seg_warm.add(tuple(case.slices[0].shape))
            case.segmentation = f"model {self.bundle[bundle.SEG].label}"

    def _measure(self, case: PatientCase) -> None:
        """``geometry``: every disc of every slice measured in mm
        (``geometry.measure.measure_slice_detailed``); which slices each disc was found on,
        less the specks (:meth:`_implausible_discs`) and the discs with an implausible
        measurement (:meth:`_implausible_measurements`, not graded); the feature table."""
        with timer(case.timing, "geometry"):
            results = [measure.measure_slice_detailed(m, case.spacing_mm, s)
                       for m, s in zip(case.masks, case.slices)]
            for i, res in enumerate(results):
                for r in res:
                    case.per_level.setdefault(r.values["level"], {})[i] = r
            case.levels = [d for d in labels.DISC_NAMES if d in case.per_level]
            case.found = {d: [i for i, r in sorted(case.per_level[d].items())
                              if r.geometry is not None
                              and finite_or_none(r.values.get("disc_height_mm")) is not None]
                          for d in case.levels}
            for d, i in self._implausible_discs(case.per_level, case.found, len(case.slices)):
                case.found[d].remove(i)
            case.status = STATUS_OK if any(case.found[d] for d in case.levels) else STATUS_NO_DISC
            case.flagged = self._implausible_measurements(case.per_level, case.found,
                                                          case.offsets)
            for d in case.flagged:
                case.found[d] = []    # not graded: no crops, classifiers, ensemble or decision
            # feature rows (same code as the training table) also give the volume columns
            case.table = self._feature_table(results, case.offsets, case.slice_spacing_mm)
            check_weighting(case)
        if case.slice_spacing_mm is None and case.found_levels:
            case.notes.append("Slice spacing unknown: the disc volume (disc_volume_mm3) could "
                              "not be computed.")

    def _classify(self, case: PatientCase) -> None:
        """``crops``, ``classify_cnn``, ``classify_geometry``: each classifier's probabilities
        per found disc, averaged over the slices it was found on (``case.probs``); none for a
        series that is not T2 (``case.not_graded``)."""
        if not case.found_levels or case.not_graded:
            return
        if self.cnn is not None:
            with timer(case.timing, "crops"):
                x, keys = self._crops(case)
            with timer(case.timing, "classify_cnn"):
                if not self._cnn_warm:
                    case.traced.append("classify_cnn")
                p = np.asarray(self._cnn_fn(x), np.float64)
                self._cnn_warm = True
                case.probs["crop_classifier"] = self._average(p, keys)
        if self.geometry is not None:
            with timer(case.timing, "classify_geometry"):
                p, keys = self._geometry_probs(case)
                case.probs["geometry_classifier"] = self._average(p, keys)
            if "disc_volume_mm3" in self._geometry_features and len(case.slices) == 1:
                case.notes.append("The geometry classifier uses the disc volume "
                                  "(disc_volume_mm3), here from the slice(s) read only; in "
                                  "training it summed every slice showing the disc.")

    def _ensemble(self, case: PatientCase) -> None:
        """``ensemble``: per found disc, the equal-weight mean of the members' probabilities
        (the classifiers whose classes are ``labels.GRADE_CLASSES``)."""
        with timer(case.timing, "ensemble"):
            case.members = list(self.members)
            if case.found_levels and case.members and not case.not_graded:
                from spoils_tf import ensemble as ens
                for d in case.found_levels:
                    case.ensemble[d] = ens.mean_ensemble(
                            [case.probs[c.key][d][None, :] for c in case.members])[0]

    def _decide(self, case: PatientCase) -> None:
        """``decision``: :func:`recommend` with this bundle's decision table, timed."""
        with timer(case.timing, "decision"):
            recommend(case, self.decision_config)

    # --- helpers of the stages ---
    @staticmethod
    def _implausible_discs(per_level, found, n_slices: int) -> list[tuple[str, int]]:
        """(level, slice) pairs whose disc area is below ``MIN_DISC_AREA_FRACTION`` of the
        median area of the discs found on that slice (3 or more found): a speck of disc label
        (a segmentation error) must not be graded or drive a recommendation. Their ``reason``
        gets :data:`IMPLAUSIBLE_AREA_REASON`."""
        out = []
        for i in range(n_slices):
            areas = {d: float(per_level[d][i].values["disc_area_mm2"]) for d in found
                     if i in found[d]}
            if len(areas) < 3:
                continue
            median = float(np.median(list(areas.values())))
            for d, a in areas.items():
                if a < MIN_DISC_AREA_FRACTION * median:
                    out.append((d, i))
                    v = per_level[d][i].values
                    v["reason"] = ";".join(x for x in (v["reason"], IMPLAUSIBLE_AREA_REASON) if x)
        return out

    @staticmethod
    def _implausible_measurements(per_level, found, offsets: Sequence[int]
                                  ) -> dict[str, tuple[list[int], list[dict[str, Any]]]]:
        """Levels with a measurement outside ``geometry.plausibility.PLAUSIBLE_RANGES`` on any
        slice they were found on: level -> (those slice indices, one dict per implausible value:
        ``measurement``, ``value``, ``unit``, ``plausible_range``, ``slice_offset``). Such a
        disc is not graded and the recommendation abstains."""
        out = {}
        for d, idx in found.items():
            items = [{**x.to_dict(), "slice_offset": int(offsets[i])} for i in idx
                     for x in plausibility.implausible_measurements(per_level[d][i].values)]
            if items:
                out[d] = (list(idx), items)
        return out

    @staticmethod
    def _feature_table(results, offsets: Sequence[int], ss: Optional[float]):
        """The feature rows of every measured disc (``features.feature_row``, the training
        table's code), one patient :data:`PATIENT_KEY`; ``ss``: slice spacing in mm or None."""
        from spoils_tf.geometry import features
        rows = [features.feature_row(r.values, patient=PATIENT_KEY, slice_index=int(offsets[i]))
                for i, res in enumerate(results) for r in res]
        table, _ = features.assemble_feature_table(
            rows, {PATIENT_KEY: {"slice_spacing_mm": float("nan") if ss is None else float(ss)}},
            {PATIENT_KEY: sorted(int(o) for o in offsets)})
        return table

    def _segment_slices(self, case: PatientCase) -> tuple[list, list, list]:
        """Label maps for ``case.slices``; a fixed-spacing model also returns each slice in
        display orientation (a flipped input is corrected), adds its level flags to the notes
        and returns the mid-sagittal slice's ``levels.level_doubts`` (the recommendation
        abstains on them).

        Raises:
            ValueError (``segmenter.OrientationError``): the orientation of a slice cannot be
                read from the anatomy; nothing is reported.
        """
        from spoils_tf import levels
        if not isinstance(self._segment_one, segmenter.Segmenter):
            # a letterbox model: the slices in batches, not one call per slice
            return (segmenter.label_maps_batched(self._segment_one, case.slices), case.slices,
                    [])
        masks, oriented, doubts = [], [], []
        card_note = self.bundle[bundle.SEG].card.get("report_note")
        if card_note:   # what the model card says every report must carry
            case.notes.append(str(card_note))
        # the slices in batched network calls (Segmenter.segment_slices), not one per slice
        segs = self._segment_one.segment_slices(
                case.slices, case.spacing_mm,
                [f"slice at offset {int(off)}" for off in case.offsets],
                from_header=case.orientation_from_header)
        for seg, off in zip(segs, case.offsets):
            masks.append(seg.label_map.astype(np.int32))
            oriented.append(seg.image)
            if seg.orientation != "as_is":
                case.notes.append(f"Slice at offset {int(off)} was given "
                                  f"{segmenter.ORIENTATION_WORDS[seg.orientation]}; corrected "
                                  f"({seg.orientation_note}).")
            case.notes += [f"Levels, slice at offset {int(off)}: {f}" for f in seg.levels.flags]
            if int(off) == 0:
                doubts = levels.level_doubts(seg.levels)
        return masks, oriented, doubts

    def _crops(self, case: PatientCase) -> tuple[np.ndarray, list]:
        """``float32 [N, h, w, channels]`` crops of every found disc on every slice it was
        found on (the crop classifier card's size, margin and context slices) and their
        levels; a context neighbour that was not read repeats the centre slice (noted)."""
        from spoils_tf.geometry import crops
        card = self.cnn.entry.card
        size = (int(card["crop_height"]), int(card["crop_width"]))
        margin = float(card["margin_frac"])
        slices, offsets = case.slices, case.offsets
        by_offset = {int(o): i for i, o in enumerate(offsets)}
        arrays, keys, missing = [], [], set()
        for d, idx in case.found.items():
            for i in idx:
                images = [slices[i]]
                if int(card["context_slices"]):
                    nb = []
                    for o in (offsets[i] - 1, offsets[i] + 1):
                        if o in by_offset:
                            nb.append(slices[by_offset[o]])
                        else:
                            nb.append(slices[i])
                            missing.add(int(o))
                    images = [nb[0], slices[i], nb[1]]
                arrays.append(crops.crop_disc(images, case.per_level[d][i].geometry, size,
                                              margin).array)
                keys.append(d)
        if missing:
            case.notes.append(f"context slice(s) at offset {sorted(missing)} not read: the "
                              "centre slice was repeated in their channel (use --slices 3 or "
                              "more)")
        return np.stack(arrays).astype(np.float32), keys

    def _geometry_probs(self, case: PatientCase) -> tuple[np.ndarray, list]:
        """The geometry classifier's probabilities ``float64 [N, C]`` on the feature rows of
        the found discs, and their levels.

        Raises:
            bundle.BundleError: the card names a feature the table does not have.
        """
        from spoils_tf.train import grade_geometry_lib as ggl
        feats = self._geometry_features
        table = case.table
        if ggl.LEVEL_INDEX_COLUMN in feats:
            table = ggl.add_level_index(table)
        absent = [f for f in feats if f not in table.columns]
        if absent:
            raise bundle.BundleError(f"{bundle.card_path(self.geometry.entry.version_dir)}: field "
                                     f"'features' names {absent}, which the feature table at "
                                     "prediction time does not have")
        wanted = {(int(case.offsets[i]), d) for d, idx in case.found.items() for i in idx}
        keep = [k for k, (s, lv) in enumerate(zip(table["slice"], table["level"]))
                if (int(s), str(lv)) in wanted]
        sub = table.iloc[keep]
        X = sub[feats].astype(np.float64)
        p = np.asarray(self._geometry_model.predict_proba(X), np.float64)
        return p, [str(lv) for lv in sub["level"]]

    @staticmethod
    def _average(p: np.ndarray, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows of ``p`` ``[N, C]`` averaged per key (level) and renormalised to sum 1."""
        out: dict[str, np.ndarray] = {}
        for d in dict.fromkeys(keys):
            rows = p[[k == d for k in keys]]
            m = rows.mean(axis=0)
            out[d] = m / m.sum()
        return out


def check_weighting(case: PatientCase) -> None:
    """Sets ``case.weighting`` from ``case.source["weighting"]`` (``inputs.weighting_entry``;
    unknown when absent) and, when the header left it unknown, from the image
    (``mr_weighting.from_disc_csf_ratio`` on the median ``disc_si_csf_ratio`` of the discs
    found on the mid-sagittal slice); a weighting that is not graded sets ``case.not_graded``
    (``mr_weighting.not_graded_note``) and adds it to the notes."""
    given = dict((case.source or {}).get("weighting") or {})
    weighting = str(given.get("weighting", "unknown"))
    evidence = [str(e) for e in given.get("evidence", [])]
    if weighting == "unknown":
        ratios = [finite_or_none(case.per_level[d][0].values.get("disc_si_csf_ratio"))
                  for d in case.levels if 0 in case.found.get(d, [])]
        ratios = [r for r in ratios if r is not None]
        weighting, more = mr_weighting.from_disc_csf_ratio(
                float(np.median(ratios)) if ratios else None)
        evidence += more
    graded = mr_weighting.is_gradable(weighting)
    case.weighting = {"weighting": weighting, "evidence": evidence, "graded": graded}
    if not graded:
        case.not_graded = mr_weighting.not_graded_note(weighting, evidence)
        case.notes.append(case.not_graded)


def recommend(case: PatientCase, config: rules.DecisionConfig) -> None:
    """Fills ``case.recommendation`` (``clinical.rules.decide`` on the ensemble classes and,
    per disc, the ensemble's probability for its class, as a dict with a caveat naming the
    ungraded levels) when ODI and NRS are given and nothing makes it abstain: no disc, a series
    that is not T2 (``case.not_graded``), doubtful level names, an implausible measurement, no grade classifier, or a surgical consultation /
    injection driven only by grades below ``config.intervention_min_probability``; otherwise
    ``case.recommendation_note`` says why (for the last: the disc, grade, probability and
    threshold)."""
    if case.not_graded:      # first: with no disc found either, the T2 series is the remedy
        case.recommendation_note = case.not_graded
    elif case.status != STATUS_OK:
        case.recommendation_note = NO_DISC_NOTE
    elif case.level_doubts or case.flagged:
        case.recommendation_note = "; ".join(
            ([f"{LEVEL_DOUBT_NOTE} ({'; '.join(case.level_doubts)})"]
             if case.level_doubts else [])
            + ([IMPLAUSIBLE_NOTE.format("; ".join(
                f"{d}: " + ", ".join(plausibility.describe(x) for x in case.flagged[d][1])
                for d in case.flagged))] if case.flagged else []))
    elif not case.members:
        case.recommendation_note = ("no 11-class grade classifier in the bundle: measurements "
                                    "only, no grades and no recommendation")
    elif case.odi is None:
        case.recommendation_note = NO_SCORES_NOTE
    else:
        decision = rules.decide(
            {d: labels.GRADE_CLASSES[int(np.argmax(case.ensemble[d]))]
             for d in case.found_levels}, case.odi, case.nrs, config,
            probabilities={d: float(np.max(case.ensemble[d])) for d in case.found_levels})
        if decision.recommendation is None:
            case.recommendation_note = decision.abstention_note
            return
        graded = dict(decision.discs)
        rec = decision.to_dict()
        rec["text"] = decision.summary()
        ungraded = [d for d in case.levels if d not in graded]
        rec["ungraded_levels"] = ungraded
        if ungraded:
            rec["caveat"] = (
                f"{len(ungraded)} of {len(case.levels)} disc level(s) in the segmentation could "
                f"not be graded ({', '.join(ungraded)}); the recommendation considers only "
                f"the graded disc(s) ({', '.join(graded)}). Review the overlay.")
        case.recommendation = rec
