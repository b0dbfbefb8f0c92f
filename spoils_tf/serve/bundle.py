"""The model bundle: the directory ``spoils predict --models DIR`` reads and the Pusher writes.

A bundle is a TF Serving base directory (``<base>/<model_name>/<version>/``, integer versions,
the highest one is used) holding up to three models, each version carrying a *model card*
``assets.extra/spoils_card.json`` (TF Serving ignores ``assets.extra``; the SavedModel export
keeps its own ``assets.extra/spoils_model.json`` next to it)::

    DIR/spoils_seg/<v>/             SavedModel (spoils_tf.export.serving), kind "segmentation"
    DIR/spoils_grade_cnn/<v>/       model.keras (spoils_tf.models.classifiers), "crop_classifier"
    DIR/spoils_grade_geometry/<v>/  model.skops + model.skops.json (spoils_tf.classical.io),
                                    kind "geometry_classifier"

Card fields (JSON object; writers may add more, e.g. ``bundle.versions``, the versions pushed
together):

* all kinds: ``format`` (:data:`CARD_FORMAT`), ``kind``, ``model_file`` (relative to the version
  directory; ``"."`` for a SavedModel), optional ``sha256`` (checked at load by
  :func:`check_sha256`), ``created`` (UTC ISO time), ``metrics`` (held-out
  metrics, may be empty), ``data_fingerprint`` (sha256 of the training data or ``""``),
  ``config`` (the resolved training config, plain JSON);
* ``segmentation``: ``resize_mode`` (``"spacing"`` with ``target_spacing_mm`` for a model trained
  at a fixed pixel size, ``spoils_tf.data.spacing_pipeline``); optional ``report_note`` (a
  caution ``spoils predict`` adds to every report's notes); optional ``keras_file`` (a ``.keras`` copy in the version
  directory, which ``spoils predict --precision bfloat16`` rebuilds under ``mixed_bfloat16``;
  without it the SavedModel runs as exported); optional ``orientation_model`` (a ``.keras``
  orientation network in the version directory, ``spoils_tf.models.orientation``) with
  ``orientation_sha256`` (checked at load like ``sha256``), ``orientation_pixel_mm`` and
  ``orientation_threshold`` (the softmax probability below which a slice is refused);
* ``crop_classifier``: ``target`` (``grade_class | pfirrmann | binary``), ``classes`` (in
  output order), ``crop_height``, ``crop_width`` (px, the ``spoils crops`` size),
  ``context_slices`` (0 or 1), ``margin_frac``;
* ``geometry_classifier``: ``target``, ``classes``, ``model_name`` (e.g.
  ``gradient_boosting``), ``features`` (the feature columns, in order).

Only this module knows the layout; the reader is :func:`load_bundle`, the writer of cards is
:func:`write_card`. Imports the standard library, ``spoils_tf.fileio`` and ``spoils_tf.errors``
only (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping, Optional, Union

from spoils_tf import fileio
from spoils_tf.errors import SpoilsError

CARD_FORMAT = "spoils-tf/model-card/1"
CARD_DIR = "assets.extra"
CARD_FILE = "spoils_card.json"

SEG = "spoils_seg"
CROP = "spoils_grade_cnn"
GEOMETRY = "spoils_grade_geometry"
MODEL_NAMES: tuple[str, ...] = (SEG, CROP, GEOMETRY)
KIND_OF: dict[str, str] = {SEG: "segmentation", CROP: "crop_classifier",
                           GEOMETRY: "geometry_classifier"}

_REQUIRED: dict[str, tuple[str, ...]] = {
    "segmentation": ("resize_mode",),
    "crop_classifier": ("target", "classes", "crop_height", "crop_width", "context_slices",
                        "margin_frac"),
    "geometry_classifier": ("target", "classes", "model_name", "features"),
}
_COMMON = ("format", "kind", "model_file")


class BundleError(SpoilsError):
    """A models directory or model card that cannot be used: ``path`` is the card (or the
    directory), ``field`` the card field at fault."""


@dataclasses.dataclass(frozen=True)
class BundleModel:
    """One model of a bundle.

    Attributes:
        name: the model name (:data:`SEG`, :data:`CROP` or :data:`GEOMETRY`).
        version: the integer version used (the highest present).
        version_dir: ``<base>/<name>/<version>``.
        card: the parsed model card.
    """
    name: str
    version: int
    version_dir: pathlib.Path
    card: dict[str, Any]

    @property
    def model_path(self) -> pathlib.Path:
        """The model file (or SavedModel directory) named by the card's ``model_file``."""
        return (self.version_dir / self.card["model_file"]).resolve()

    @property
    def orientation_path(self) -> Optional[pathlib.Path]:
        """The orientation network named by the card's ``orientation_model``, or None."""
        name = self.card.get("orientation_model")
        return (self.version_dir / str(name)).resolve() if name else None

    @property
    def label(self) -> str:
        """``"<name> v<version>"``, for reports."""
        return f"{self.name} v{self.version}"


def card_path(version_dir: Union[str, os.PathLike]) -> pathlib.Path:
    """``<version_dir>/assets.extra/spoils_card.json``."""
    return pathlib.Path(version_dir) / CARD_DIR / CARD_FILE


def validate_card(card: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Checks a card's format, kind and required fields; returns it as a plain dict.

    Raises:
        BundleError: naming ``source`` and the missing or wrong field.
    """
    if not isinstance(card, Mapping):
        raise BundleError(source, None, f"expected a JSON object, got {type(card).__name__}")
    for key in _COMMON:
        if key not in card:
            raise BundleError(source, key, "missing")
    if card["format"] != CARD_FORMAT:
        raise BundleError(source, "format", f"{card['format']!r:.80}; expected {CARD_FORMAT!r}")
    kind = card["kind"]
    if not isinstance(kind, str) or kind not in _REQUIRED:
        raise BundleError(source, "kind", f"{kind!r:.80}; expected one of {', '.join(_REQUIRED)}")
    model_file = card["model_file"]
    if not isinstance(model_file, str) or not model_file:
        raise BundleError(source, "model_file", f"{model_file!r:.80}; expected a path relative "
                                                "to the version folder ('.' for a SavedModel)")
    for key in _REQUIRED[kind]:
        if key not in card:
            raise BundleError(source, key, f"missing (required for kind {kind!r})")
    if kind == "segmentation" and card["resize_mode"] == "spacing":
        target = card.get("target_spacing_mm")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
            raise BundleError(source, "target_spacing_mm",
                              f"{target!r:.80}; a 'spacing' segmentation model needs its "
                              "training pixel size in mm")
    if "classes" in _REQUIRED[kind] and (not isinstance(card["classes"], list)
                                         or len(card["classes"]) < 2):
        raise BundleError(source, "classes", "must be a list of at least 2 class names")
    if card.get("sha256") is not None and not isinstance(card["sha256"], str):
        raise BundleError(source, "sha256", f"{card['sha256']!r:.80}; expected a hex digest")
    return dict(card)


def write_card(version_dir: Union[str, os.PathLike], card: Mapping[str, Any]) -> pathlib.Path:
    """Validates ``card`` (``format`` is filled in) and writes it atomically; returns its path."""
    full = {"format": CARD_FORMAT, **dict(card)}
    path = card_path(version_dir)
    validate_card(full, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(path, json.dumps(full, indent=2, sort_keys=True,
                                              default=fileio.json_default) + "\n")
    return path


def read_card(version_dir: Union[str, os.PathLike]) -> dict[str, Any]:
    """The validated card of a version directory.

    Raises:
        BundleError: no card, invalid JSON, or a missing/wrong field (names the file).
    """
    path = card_path(version_dir)
    if not path.is_file():
        raise BundleError(path, None, "model card not found; every model version in a bundle "
                                      f"needs {CARD_DIR}/{CARD_FILE}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BundleError(path, None, f"not valid JSON ({e})") from e
    return validate_card(card, str(path))


def versions(model_dir: Union[str, os.PathLike]) -> list[int]:
    """Sorted integer version folders of ``<base>/<name>`` (hidden/temporary ones ignored)."""
    d = pathlib.Path(model_dir)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())


def latest(base_dir: Union[str, os.PathLike], name: str) -> Optional[BundleModel]:
    """The highest version of model ``name`` in ``base_dir`` with its card, or None if absent.

    Raises:
        BundleError: the version exists but its card is missing or invalid, its kind does not
            match ``name``, or its ``model_file`` does not exist.
    """
    model_dir = pathlib.Path(base_dir) / name
    found = versions(model_dir)
    if not found:
        return None
    version_dir = model_dir / str(found[-1])
    card = read_card(version_dir)
    expected = KIND_OF.get(name)
    if expected and card["kind"] != expected:
        raise BundleError(card_path(version_dir), "kind", f"{card['kind']!r}; a model under "
                                                          f"{name!r} must be {expected!r}")
    entry = BundleModel(name=name, version=found[-1], version_dir=version_dir.resolve(), card=card)
    if not entry.model_path.is_relative_to(entry.version_dir):
        raise BundleError(card_path(version_dir), "model_file",
                          f"{card['model_file']!r} resolves to {entry.model_path}, outside the "
                          "version folder; expected a path inside it")
    if not entry.model_path.exists():
        raise BundleError(card_path(version_dir), "model_file",
                          f"the card's 'model_file' names {entry.model_path}, which does not "
                          "exist")
    check_sha256(entry)
    return entry


def model_sha256(path: Union[str, os.PathLike]) -> str:
    """The digest a card's ``sha256`` holds: of the file, or for a folder (a SavedModel) of
    all files below it concatenated in sorted path order, the model card's folder excluded."""
    path = pathlib.Path(path)
    if path.is_dir():
        return fileio.sha256_of_files(sorted(p for p in path.rglob("*")
                                             if p.is_file() and CARD_DIR not in p.parts))
    return fileio.sha256_file(path)


def check_sha256(entry: BundleModel) -> None:
    """Compares a model file with its card's optional ``sha256`` (hex digest of the file named
    by ``model_file``; of all files below it concatenated in sorted path order, model card
    excluded, for a folder), and an ``orientation_model`` file with ``orientation_sha256``.

    Raises:
        BundleError: the digests differ (a damaged or replaced model file; names both).
    """
    checks = [("sha256", entry.model_path)]
    if entry.orientation_path is not None:
        if not entry.orientation_path.is_file():
            raise BundleError(card_path(entry.version_dir), "orientation_model",
                              f"names {entry.orientation_path}, which does not exist")
        checks.append(("orientation_sha256", entry.orientation_path))
    for field, path in checks:
        expected = entry.card.get(field)
        if not expected:
            continue
        actual = model_sha256(path)
        if actual != expected:
            raise BundleError(card_path(entry.version_dir), field,
                              f"{expected}, but {path} hashes to {actual}: the model file is "
                              "damaged or was replaced")


def load_bundle(models_dir: Union[str, os.PathLike]) -> dict[str, BundleModel]:
    """``{name: BundleModel}`` for every model present in ``models_dir`` (latest versions).

    The segmentation model is required; the two classifiers are optional (a caller decides
    what it can do without them).

    Raises:
        FileNotFoundError: ``models_dir`` does not exist.
        BundleError: no segmentation model, or an invalid card (:func:`latest`).
    """
    base = pathlib.Path(models_dir)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: models directory not found")
    found = {name: m for name in MODEL_NAMES if (m := latest(base, name)) is not None}
    if SEG not in found:
        raise BundleError(base, SEG, "no segmentation model (<version>/ with a SavedModel); "
                                     "run the pipeline (python -m experiments.pipeline) to make "
                                     "a bundle")
    return found
