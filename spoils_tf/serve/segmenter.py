"""Segmenting one slice: a model loaded once (:class:`Segmenter`), any number of slices.

* :class:`Segmenter`: ``model_path`` is a ``.keras`` file (``spoils_tf.models``), an exported
  SavedModel version folder (``spoils_tf.export.serving``), a model bundle
  (``spoils_tf.serve.bundle``) or None for the shipped model (``spoils_tf.weights``). A
  letterbox model runs :func:`load_segmenter` (``seg_pipeline.make_predictor``, the same
  preprocessing for ``.keras`` and SavedModel); a model trained at a fixed pixel size runs
  :class:`SpacingSegmenter` (anatomical level labelling and an orientation check).
* :func:`segment_file` (``spoils segment``): one input file (``spoils_tf.serve.inputs``) ->
  files in ``out_dir``, written atomically: ``<stem>_mask.png`` (uint8 class ids of
  ``spoils_tf.labels``), ``<stem>_overlay.png`` (``spoils_tf.serve.overlay.overlay``),
  ``<stem>_input.png`` (the slice that was actually segmented, in display orientation) and
  ``<stem>_areas.json`` (per class: pixel count and, when the spacing is known, mm²).
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
from typing import Any, Callable, Optional

import numpy as np

from spoils_tf import fileio, labels, weights
from spoils_tf.errors import SpoilsError
from spoils_tf.serve import bundle, overlay
from spoils_tf.serve.inputs import file_stem, input_kind, read_input_slice


# most slices of a series that go through the segmentation network in one call (bounds the
# memory of a whole volume; a series of up to this many slices is one call)
MAX_BATCH_SLICES = 32


# === Model ===
def load_segmenter(model_path: str | pathlib.Path, resize_mode: str = "letterbox"
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """``uint8 [H, W] -> int32 [H, W]`` label map (or ``[N, H, W] -> [N, H, W]``, one batch),
    from a ``.keras`` file or a SavedModel dir.

    Raises:
      SpoilsError: nothing at ``model_path``; neither a ``.keras`` file nor a SavedModel
        directory; a model that does not load (truncated or damaged, named with the library's
        error: ``serving.load_signature``, ``spoils_tf.models.load_model``).
    """
    import tensorflow as tf
    model_path = pathlib.Path(model_path)
    if not model_path.exists():
        raise SpoilsError(model_path, None, "model not found")
    if model_path.is_dir() and (model_path / "saved_model.pb").is_file():
        from spoils_tf.export import serving
        fn = serving.load_signature(model_path)

        def predict(grey):
            rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=-1)
            batch = rgb if rgb.ndim == 4 else rgb[None]
            out = fn(**{serving.INPUT_NAME: tf.constant(batch)})["label_map"].numpy()
            return out if rgb.ndim == 4 else out[0]
        return predict
    if model_path.suffix == ".keras":
        import spoils_tf.models
        from spoils_tf.data import seg_pipeline
        model = spoils_tf.models.load_model(model_path)
        if None in tuple(model.input_shape[1:3]):
            raise SpoilsError(model_path, None, "the model takes slices of any size at a fixed "
                                                "pixel spacing; give its training pixel size with "
                                                "--target-spacing-mm (or use its model bundle, "
                                                "whose card records it)")
        predictor = seg_pipeline.make_predictor(model, resize_mode)

        def predict(grey):
            rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=-1)
            batch = rgb if rgb.ndim == 4 else rgb[None]
            out = predictor(tf.constant(batch))["label_map"].numpy()
            return out if rgb.ndim == 4 else out[0]
        return predict
    raise SpoilsError(model_path, None, "expected a .keras file or a SavedModel version "
                                        "directory (with saved_model.pb)")


def label_maps_batched(predict: Callable[[np.ndarray], np.ndarray], greys: list[np.ndarray]
                       ) -> list[np.ndarray]:
    """``int32 [H, W]`` per slice from a :func:`load_segmenter` function, called on batches
    of at most ``MAX_BATCH_SLICES`` slices (``uint8 [N, H, W]``, one shape)."""
    out: list[np.ndarray] = []
    for i in range(0, len(greys), MAX_BATCH_SLICES):
        out += list(np.asarray(predict(np.stack(greys[i:i + MAX_BATCH_SLICES])), np.int32))
    return out


# === Fixed-spacing models: orientation and anatomical levels ===
# how the input differed from display orientation, per levels.ORIENTATIONS name
ORIENTATION_WORDS: dict[str, str] = {"as_is": "in display orientation",
                                     "flip_lr": "mirrored left-right",
                                     "flip_ud": "upside down (mirrored top-bottom)",
                                     "rot180": "rotated by 180 degrees"}


# top softmax probability of the orientation network below which a picture is refused, when the
# model card sets none
DEFAULT_ORIENTATION_THRESHOLD = 0.9


class OrientationError(SpoilsError):
    """The slice's orientation could not be read from the anatomy: refused, nothing written.

    ``field`` is ``"orientation"``; ``path`` the slice's source when the caller knows it."""


@dataclasses.dataclass
class Segmentation:
    """One slice segmented by a fixed-spacing model.

    Attributes:
        image: ``uint8 [H', W']`` the slice in display orientation (superior up, anterior
            left): the input, flipped when ``orientation`` is not ``"as_is"``.
        label_map: ``int32 [H', W']`` class ids of ``labels`` after the level labelling.
        orientation: the flip that was undone (``levels.ORIENTATIONS``).
        orientation_note: why that orientation was chosen.
        levels: the ``levels.LevelResult`` (flags, chain, dropped components).
    """

    image: np.ndarray
    label_map: np.ndarray
    orientation: str
    orientation_note: str
    levels: Any


class SpacingSegmenter:
    """A model trained at a fixed pixel size (``spoils_tf.data.spacing_pipeline``) with the
    anatomical level labelling (``spoils_tf.levels``) and orientation check around it.

    Args:
        model_path: a ``.keras`` file, or a SavedModel exported with ``resize_mode="spacing"``.
        target_spacing_mm: the training pixel size (the model card's ``target_spacing_mm``).
        orientation: ``"auto"`` reads which way is up and which way is anterior from the
            image (refusing the slice when that is ambiguous) and corrects a flipped slice;
            ``"as_is"`` trusts the input to be in display orientation.
        orientation_net: a ``spoils_tf.models.orientation.OrientationNet``. With it, ``"auto"``
            takes the flip the network names with probability >= ``orientation_threshold``
            and the segmentation of the corrected slice must put the canal posterior; without
            it, ``"auto"`` segments the four flips of ``levels.ORIENTATIONS`` and keeps the one
            whose anatomy reads correctly (``levels.choose_orientation``).
        orientation_threshold: see ``orientation_net``.

    Call: ``(uint8 [H, W], (row_mm, col_mm), from_header=False) -> Segmentation``. With
    ``from_header`` (the slice was put in display orientation from its file's direction
    cosines) the header is trusted; when the orientation network confidently reads another
    orientation, the disagreement is added to the level flags (a level doubt: decisions that
    name levels abstain). :meth:`segment_many` does the same for the slices of a series in one
    batched network call.

    Raises: SpoilsError: no model at ``model_path``, not a model, or one that does not load.
    Raises (call): OrientationError: ``"auto"``, a 2-D picture, and the image does not say
        unambiguously which way is up.
    """

    def __init__(self, model_path: str | pathlib.Path, target_spacing_mm: float, *,
                 orientation: str = "auto", orientation_net: Any = None,
                 orientation_threshold: float = DEFAULT_ORIENTATION_THRESHOLD):
        import tensorflow as tf
        self._setup(orientation, orientation_net, orientation_threshold)
        model_path = pathlib.Path(model_path)
        if not model_path.exists():
            raise SpoilsError(model_path, None, "model not found")
        if model_path.is_dir() and (model_path / "saved_model.pb").is_file():
            from spoils_tf.export import serving
            fn = serving.load_signature(model_path)

            def probs(grey, spacing):
                return fn(image=tf.constant(grey), pixel_spacing_mm=tf.constant(
                        spacing, tf.float32))["probabilities"].numpy()
            probs_many = None    # the exported signature takes one slice
        elif model_path.suffix == ".keras":
            import spoils_tf.models
            from spoils_tf.data import spacing_pipeline
            predict = spacing_pipeline.make_spacing_predictor(
                    spoils_tf.models.load_model(model_path, compile=False),
                    float(target_spacing_mm), batched=True)

            def probs_many(greys, spacing):
                return np.asarray(predict(np.stack(greys), np.asarray(spacing, np.float32)))

            def probs(grey, spacing):
                return probs_many([grey], spacing)[0]
        else:
            raise SpoilsError(model_path, None, "expected a .keras file or a SavedModel version "
                                                "directory (with saved_model.pb)")
        self.probabilities = probs
        self._probabilities_many = probs_many

    @classmethod
    def from_function(cls, probabilities: Callable[[np.ndarray, tuple[float, float]], np.ndarray],
                      *, orientation: str = "auto", orientation_net: Any = None,
                      orientation_threshold: float = DEFAULT_ORIENTATION_THRESHOLD
                      ) -> "SpacingSegmenter":
        """The same segmenter around any ``(uint8 [H, W], (row_mm, col_mm)) -> float [H, W,
        classes]`` probability function (another runtime, or a hand-made one in tests)."""
        self = cls.__new__(cls)
        self._setup(orientation, orientation_net, orientation_threshold)
        self.probabilities = probabilities
        self._probabilities_many = None
        return self

    def _setup(self, orientation: str, orientation_net: Any, orientation_threshold: float):
        from spoils_tf import levels
        if orientation not in ("auto", "as_is"):
            raise ValueError(f"orientation: {orientation!r}; expected auto | as_is")
        self.orientation = orientation
        self.orientation_net = orientation_net
        self.orientation_threshold = float(orientation_threshold)
        self.max_batch_slices = MAX_BATCH_SLICES
        self._levels = levels

    def probabilities_many(self, greys: list[np.ndarray], spacing_mm) -> np.ndarray:
        """``float [N, H, W, classes]`` for N slices of one shape and pixel spacing: in
        network calls of at most ``max_batch_slices`` slices for a loaded model, one call per
        slice for a :meth:`from_function` segmenter.

        Raises:
          ValueError: the slices differ in shape.
        """
        shapes = {g.shape for g in greys}
        if len(shapes) > 1:
            raise ValueError(f"slices: shapes {sorted(shapes)}; a batch needs one shape")
        if self._probabilities_many is None:
            return np.stack([np.asarray(self.probabilities(g, spacing_mm)) for g in greys])
        step = self.max_batch_slices
        return np.concatenate([np.asarray(self._probabilities_many(greys[i:i + step],
                                                                   spacing_mm))
                               for i in range(0, len(greys), step)])

    def _labelled_many(self, greys: list[np.ndarray], spacing_mm, names: list[str]):
        """``[(slice flipped by names[i], levels.LevelResult)]``, segmented in one batch."""
        if not greys:
            return []
        images = [np.ascontiguousarray(self._levels.orient(g, n)) for g, n in zip(greys, names)]
        probs = self.probabilities_many(images, spacing_mm)
        return [(image, self._levels.assign_levels(p, spacing_mm))
                for image, p in zip(images, probs)]

    def __call__(self, grey: np.ndarray, spacing_mm: tuple[float, float], *,
                 from_header: bool = False) -> Segmentation:
        return self.segment_many([grey], spacing_mm, from_header=from_header)[0]

    def segment_many(self, greys: list[np.ndarray], spacing_mm: tuple[float, float], *,
                     from_header: bool = False, sources: Optional[list[str]] = None
                     ) -> list[Segmentation]:
        """The slices of one series (one shape and pixel spacing), segmented in one batched
        network call (two for ``"auto"`` with an orientation network: its call, then the
        segmentation's); the same results as calling the segmenter on each slice.

        Raises:
          OrientationError: naming ``sources[i]`` (None when not given) of the first slice,
            in order, whose orientation cannot be read.
          ValueError: the slices differ in shape.
        """
        greys = [np.ascontiguousarray(g, np.uint8) for g in greys]
        sources = list(sources) if sources is not None else [None] * len(greys)
        if self.orientation == "as_is":
            return [Segmentation(image, result.label_map, "as_is", "taken as given", result)
                    for image, result in self._labelled_many(greys, spacing_mm,
                                                             ["as_is"] * len(greys))]
        if from_header:
            return self._trust_header(greys, spacing_mm)
        if self.orientation_net is not None:
            return self._by_network(greys, spacing_mm, sources)
        return self._by_anatomy(greys, spacing_mm, sources)

    def _read_orientation(self, greys: list[np.ndarray], spacing_mm
                          ) -> list[tuple[str, float, str]]:
        """Per slice: (most likely flip, its probability, the probabilities in words)."""
        net = self.orientation_net
        if hasattr(net, "probabilities_many"):
            probs = net.probabilities_many(greys, spacing_mm)
        else:
            probs = [net.probabilities(g, spacing_mm) for g in greys]
        names = self._levels.ORIENTATIONS
        out = []
        for p in probs:
            best = int(np.argmax(p))
            words = ", ".join(f"{n} {v:.2f}" for n, v in zip(names, p))
            out.append((names[best], float(p[best]), words))
        return out

    def _trust_header(self, greys: list[np.ndarray], spacing_mm) -> list[Segmentation]:
        labelled = self._labelled_many(greys, spacing_mm, ["as_is"] * len(greys))
        read = (self._read_orientation(greys, spacing_mm) if self.orientation_net is not None
                else [None] * len(greys))
        out = []
        for (image, result), orientation in zip(labelled, read):
            note = "display orientation from the file's direction cosines"
            if orientation is not None:
                name, p, words = orientation
                if name != "as_is" and p >= self.orientation_threshold:
                    result.flags.append(
                            f"orientation disagrees: the file header puts the slice in display "
                            f"orientation but the image reads as {ORIENTATION_WORDS[name]} "
                            f"(p {p:.2f}); level names are in doubt")
                    note += f"; the orientation network disagrees ({words})"
            out.append(Segmentation(image, result.label_map, "as_is", note, result))
        return out

    def _by_network(self, greys: list[np.ndarray], spacing_mm, sources: list
                    ) -> list[Segmentation]:
        read = self._read_orientation(greys, spacing_mm)
        # slices before the first unreadable one are segmented (and checked) first, so the
        # error is the one a slice-by-slice run meets first
        n_ok = next((i for i, (_, p, _) in enumerate(read) if p < self.orientation_threshold),
                    len(read))
        labelled = self._labelled_many(greys[:n_ok], spacing_mm, [r[0] for r in read[:n_ok]])
        out = []
        for (image, result), (name, p, words), source in zip(labelled, read, sources):
            if result.canal_side == "anterior":
                raise OrientationError(
                        source, "orientation",
                        f"the orientation network reads the slice as {ORIENTATION_WORDS[name]} "
                        f"(p {p:.2f}) but after undoing that the segmentation puts the spinal "
                        "canal in front of the vertebral bodies; refusing to report levels. Give "
                        "the slice in display orientation (superior at the top, anterior on the "
                        "left)")
            out.append(Segmentation(image, result.label_map, name,
                                    f"orientation network p {p:.2f} ({words}); canal "
                                    f"{result.canal_side}", result))
        if n_ok < len(read):
            raise OrientationError(
                    sources[n_ok], "orientation",
                    f"cannot tell which way is up and which way is anterior (orientation "
                    f"network: {read[n_ok][2]}; needs {self.orientation_threshold:g}); refusing "
                    "to report levels. Give the slice in display orientation (superior at the "
                    "top, anterior on the left)")
        return out

    def _by_anatomy(self, greys: list[np.ndarray], spacing_mm, sources: list
                    ) -> list[Segmentation]:
        levels = self._levels
        names = list(levels.ORIENTATIONS)
        # every slice in each of the four flips, one batch of 4 N
        labelled = self._labelled_many([g for g in greys for _ in names], spacing_mm,
                                       names * len(greys))
        out = []
        for i, source in enumerate(sources):
            results = dict(zip(names, labelled[i * len(names):(i + 1) * len(names)]))
            decision = levels.choose_orientation({n: r for n, (_, r) in results.items()})
            if not decision.confident:
                raise OrientationError(
                        source, "orientation",
                        "cannot tell which way is up and which way is anterior from the anatomy "
                        f"({decision.reason}); refusing to report levels. Give the slice in "
                        "display orientation (superior at the top, anterior on the left)")
            image, result = results[decision.name]
            out.append(Segmentation(image, result.label_map, decision.name, decision.reason,
                                    result))
        return out


# === Outputs ===
def class_areas(mask: np.ndarray, spacing_mm: Optional[tuple[float, float]]) -> dict[str, Any]:
    """Per class name: ``{"pixels": int, "area_mm2": float | None}`` (pixel area = row_mm *
    col_mm)."""
    counts = np.bincount(np.asarray(mask).ravel(), minlength=labels.NUM_SEG_CLASSES)
    px_mm2 = spacing_mm[0] * spacing_mm[1] if spacing_mm else None
    return {name: {"pixels": int(counts[i]),
                   "area_mm2": float(counts[i] * px_mm2) if px_mm2 is not None else None}
            for i, name in enumerate(labels.SEG_NAMES)}


def _png_bytes(arr: np.ndarray) -> bytes:
    import PIL.Image
    buf = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _write_outputs(out_dir: pathlib.Path, stem: str, grey: np.ndarray, mask: np.ndarray,
                   result: dict[str, Any]) -> None:
    """The four output files of one slice, all or none: every file is encoded first, then
    each is written atomically (temporary file + rename, ``fileio.atomic_write_bytes``); if a
    write fails, the files this call already wrote are removed and the error is raised, so no
    partial file and no partial set of this slice's files is left.

    Raises:
      SpoilsError: (``out_dir``) an ``OSError`` while writing (chained).
    """
    payloads = {f"{stem}_input.png": _png_bytes(grey), f"{stem}_mask.png": _png_bytes(mask),
                f"{stem}_overlay.png": _png_bytes(overlay.overlay(grey, mask)),
                f"{stem}_areas.json": (json.dumps(result, indent=2) + "\n").encode("utf-8")}
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[pathlib.Path] = []
    try:
        for name, data in payloads.items():
            written.append(fileio.atomic_write_bytes(out_dir / name, data))
    except BaseException as e:
        for p in written:
            p.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise SpoilsError(out_dir, None, f"{stem}: the output files could not be written "
                                             f"({type(e).__name__}: {e}); none of them was "
                                             "kept") from e
        raise


def load_orientation(entry: bundle.BundleModel) -> tuple[Any, float]:
    """(``OrientationNet`` or None, threshold) of a bundle's segmentation entry: the network
    named by its card's ``orientation_model`` at ``orientation_pixel_mm``, and
    ``orientation_threshold`` (default :data:`DEFAULT_ORIENTATION_THRESHOLD`); (None, that
    default) when the card names none."""
    card = entry.card
    if entry.orientation_path is None:
        return None, DEFAULT_ORIENTATION_THRESHOLD
    from spoils_tf.models import orientation as orientation_model
    net = orientation_model.OrientationNet.load(
            entry.orientation_path,
            float(card.get("orientation_pixel_mm") or orientation_model.PIXEL_MM))
    return net, float(card.get("orientation_threshold", DEFAULT_ORIENTATION_THRESHOLD))


class Segmenter:
    """``spoils segment``'s model, loaded once for any number of slices.

    ``model_path`` may be a ``.keras`` file, an exported SavedModel version folder, a model
    bundle (``spoils_tf.serve.bundle``: its latest ``spoils_seg`` version, card and checksum
    checked) or None for the shipped SPIDER model (``spoils_tf.weights``); or ``entry``, a
    loaded bundle's ``spoils_seg`` entry. A bundle's orientation network (card field
    ``orientation_model``) decides a 2-D picture's orientation (``load_orientation``). Models
    trained at a fixed pixel size (card or SavedModel metadata ``resize_mode: "spacing"``, or a
    ``.keras`` with ``target_spacing_mm``) run :class:`SpacingSegmenter` and need the pixel
    spacing; older letterbox models run :func:`load_segmenter`.

    Raises:
      FileNotFoundError: a bundle directory that does not exist (``bundle.load_bundle``).
      SpoilsError (incl. ``bundle.BundleError``): naming the path and field: no model there,
        a bad card or metadata, a missing, truncated or damaged ``.keras`` / SavedModel.
    """

    def __init__(self, model_path: Optional[str | pathlib.Path] = None, *,
                 resize_mode: str = "letterbox", target_spacing_mm: float = 0.0,
                 orientation: str = "auto", entry: Optional[bundle.BundleModel] = None):
        if model_path is None and entry is None:
            model_path = weights.DEFAULT_BUNDLE
        path = pathlib.Path(model_path) if entry is None else entry.model_path
        orientation_net, orientation_threshold = None, DEFAULT_ORIENTATION_THRESHOLD
        if entry is None and path.is_dir() and (path / bundle.SEG).is_dir():
            entry = bundle.load_bundle(path)[bundle.SEG]
        if entry is not None:
            path, card = entry.model_path, entry.card
            resize_mode = str(card["resize_mode"])
            target_spacing_mm = float(card.get("target_spacing_mm") or 0.0)
            self.label = entry.label
            if orientation == "auto":
                orientation_net, orientation_threshold = load_orientation(entry)
        else:
            meta = path / "assets.extra" / "spoils_model.json"
            if path.is_dir() and meta.is_file():
                try:
                    info = json.loads(meta.read_text())
                    resize_mode = str(info.get("resize_mode", resize_mode))
                    target_spacing_mm = float(info.get("target_spacing_mm") or 0.0)
                except (OSError, ValueError, TypeError, AttributeError) as e:
                    raise SpoilsError(meta, "resize_mode, target_spacing_mm",
                                      f"unreadable model metadata ({e}); expected the JSON "
                                      "that spoils_tf.export.serving writes") from e
            elif target_spacing_mm > 0:
                resize_mode = "spacing"
            self.label = str(path)
        self.path = path
        self.spacing_mode = resize_mode == "spacing"
        self.target_spacing_mm = target_spacing_mm
        if self.spacing_mode:
            self._run = SpacingSegmenter(path, target_spacing_mm, orientation=orientation,
                                         orientation_net=orientation_net,
                                         orientation_threshold=orientation_threshold)
        else:
            self._run = load_segmenter(path, resize_mode)

    def warmup(self, shape_hw: tuple[int, int]) -> None:
        """Runs the network once on a blank slice of this size (graph tracing)."""
        blank = np.zeros(tuple(int(v) for v in shape_hw), np.uint8)
        if self.spacing_mode:
            self._run.probabilities(blank, (1.0, 1.0))
        else:
            self._run(blank)

    def __call__(self, grey: np.ndarray, spacing_mm: Optional[tuple[float, float]],
                 source: str = "", *, from_header: bool = False) -> Segmentation:
        """Segments one slice; ``from_header``: its display orientation comes from the file's
        direction cosines (``SpacingSegmenter``).

        Raises:
          SpoilsError: a fixed-spacing model and no pixel spacing, or one that
            ``images.check_pixel_spacing`` refuses (names ``source``);
          OrientationError: the orientation cannot be read from the anatomy (names ``source``).
        """
        return self.segment_slices([grey], spacing_mm, [source], from_header=from_header)[0]

    def segment_slices(self, greys: list[np.ndarray], spacing_mm: Optional[tuple[float, float]],
                       sources: Optional[list[str]] = None, *, from_header: bool = False
                       ) -> list[Segmentation]:
        """Segments the slices of one series (``uint8 [H, W]`` each, one shape and pixel
        spacing) with batched network calls (``SpacingSegmenter.segment_many``; a letterbox
        model takes them as one batch); the same results as one call per slice.

        Raises:
          SpoilsError: as :meth:`__call__`, naming ``sources[0]``;
          OrientationError: naming ``sources[i]`` of the first slice whose orientation cannot
            be read;
          ValueError: the slices differ in shape.
        """
        from spoils_tf.data import images
        sources = [str(s or "") for s in (sources or [""] * len(greys))]
        if len({np.shape(g) for g in greys}) > 1:
            raise ValueError(f"slices: shapes {sorted({np.shape(g) for g in greys})}; the "
                             "slices of one series share one shape")
        if not self.spacing_mode:
            return [Segmentation(g, m, "as_is", "taken as given (letterbox model)", None)
                    for g, m in zip(greys, label_maps_batched(self._run, greys))]
        if spacing_mm is None:
            raise SpoilsError(sources[0], "pixel spacing", "unknown; this model works in "
                                                           "millimetres: give --pixel-spacing "
                                                           "ROW_MM COL_MM")
        spacing_mm = images.check_pixel_spacing(spacing_mm, sources[0], "pixel spacing")
        return self._run.segment_many(greys, spacing_mm, from_header=from_header,
                                      sources=[s or None for s in sources])


def segment_file(image_path: str | pathlib.Path, model_path: str | pathlib.Path | None,
                 out_dir: str | pathlib.Path, *, resize_mode: str = "letterbox",
                 pixel_spacing_mm: Optional[tuple[float, float]] = None,
                 segmenter: Optional[Segmenter] = None) -> dict[str, Any]:
    """Segments one image and writes the four outputs (module docstring).

    Args:
      segmenter: a loaded :class:`Segmenter` (batch use); else one is loaded from
        ``model_path`` / ``resize_mode``.

    Returns:
      the areas JSON content (also written to ``<stem>_areas.json``).

    Raises:
      FileNotFoundError, ValueError: from :func:`read_input_slice` or the model;
      OrientationError: the orientation cannot be read from the anatomy (nothing written).
    """
    image_path = pathlib.Path(image_path)
    grey, spacing, note = read_input_slice(image_path)
    if pixel_spacing_mm is not None:
        from spoils_tf.data import images
        spacing = images.check_pixel_spacing(pixel_spacing_mm, None, "--pixel-spacing")
    seg_model = segmenter or Segmenter(model_path, resize_mode=resize_mode)
    seg = seg_model(grey, spacing, str(image_path), from_header=input_kind(image_path) == "series")
    mask = seg.label_map.astype(np.uint8)
    stem = file_stem(image_path)
    result = {
            "image": str(image_path), "model": seg_model.label, "source": note,
            "shape_hw": list(seg.image.shape), "pixel_spacing_mm": list(spacing) if spacing else None,
            "orientation": {"undone": seg.orientation, "note": seg.orientation_note},
            "levels": None if seg.levels is None else {
                    "flags": list(seg.levels.flags), "score": float(seg.levels.score),
                    "chain": [c["name"] for c in seg.levels.chain],
                    "dropped": [c["reason"] for c in seg.levels.dropped]},
            "classes": class_areas(mask, spacing),
            "files": {k: f"{stem}_{k}.png" for k in ("mask", "overlay", "input")},
    }
    _write_outputs(pathlib.Path(out_dir), stem, seg.image, mask, result)
    return result
