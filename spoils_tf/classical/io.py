"""Save / load fitted classifier pipelines safely (skops, never pickle).

``save_classifier(model, "gb.skops", feature_names=[...])`` writes two files atomically:

* ``gb.skops``       the pipeline in skops format (``skops.io.dumps``);
* ``gb.skops.json``  sidecar: ``sha256`` of ``gb.skops``, ``classes``, ``feature_names``,
                     ``target``, library versions and any extra metadata.

``load_classifier("gb.skops")`` reads the sidecar, checks the file's sha256, asks skops
which types in the file are not trusted by default (``skops.io.get_untrusted_types``),
refuses to load if any is outside ``ALLOWED_TYPES`` (an explicit allow-list: the types
our five pipelines need), and only then calls ``skops.io.load(trusted=<that list>)``.
Arbitrary code is never loaded. Finally the loaded model's class list and feature names are
checked against the sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import zipfile
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from spoils_tf import errors, fileio

SIDECAR_SUFFIX = ".json"
FORMAT = "spoils-tf/classical-model/1"

# Types skops does not trust by default that our CLASSIFIERS pipelines contain.
ALLOWED_TYPES: frozenset[str] = frozenset({
    "numpy.dtype",
    "collections.OrderedDict",
    "spoils_tf.classical.models.FixedClassesClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    # the nested-CV grader (classical.calibrated, classical.candidates, classical.ordinal)
    "spoils_tf.classical.calibrated.CalibratedGrader",
    "spoils_tf.classical.candidates.CrossFitCalibrator",
    "spoils_tf.classical.candidates.L1Selector",
    "spoils_tf.classical.candidates.BalancedGradientBoosting",
    "spoils_tf.classical.ordinal.CumulativeLogitClassifier",
})


class ModelIntegrityError(errors.SpoilsError):
    """The model file does not match its sidecar (hash, classes or features); ``field`` names
    the sidecar field (``sha256``, ``classes``, ``feature_names``)."""


class UntrustedTypeError(errors.SpoilsError):
    """The model file contains types outside the allow-list (``field`` is ``"types"``)."""


def sidecar_path(path: Union[str, os.PathLike]) -> pathlib.Path:
    """``<path>.json`` next to the model file."""
    p = pathlib.Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()




def _model_features(model: Any) -> Optional[list[str]]:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def save_classifier(model: Any, path: Union[str, os.PathLike], *,
                    feature_names: Sequence[str], target: Optional[str] = None,
                    classes: Optional[Sequence[str]] = None,
                    extra: Optional[Mapping[str, Any]] = None) -> pathlib.Path:
    """Writes ``path`` (skops) and its JSON sidecar, each atomically; returns ``path``.

    Args:
      model: a FITTED classifier / Pipeline with ``classes_``.
      feature_names: the feature columns it was fitted on, in order.
      target: target name (``grade_class`` | ``pfirrmann`` | ``binary``), stored for readers.
      classes: expected class list; defaults to ``model.classes_``.
      extra: JSON-serialisable metadata stored under ``"extra"`` (e.g. the config).

    Raises:
      ValueError: model not fitted, or ``classes``/``feature_names`` disagree with the model.
    """
    import skops
    import skops.io as sio
    import sklearn

    if not hasattr(model, "classes_"):
        raise ValueError(f"{path}: model has no classes_; fit it before saving")
    model_classes = [str(c) for c in np.asarray(model.classes_)]
    if classes is not None and list(map(str, classes)) != model_classes:
        raise ValueError(f"{path}: classes {list(classes)} != model.classes_ {model_classes}")
    fitted_features = _model_features(model)
    if fitted_features is not None and fitted_features != list(feature_names):
        raise ValueError(f"{path}: feature_names {list(feature_names)} != the model's fitted "
                         f"features {fitted_features}")
    data = sio.dumps(model, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    meta = {
        "format": FORMAT,
        "sha256": _sha256(data),
        "classes": model_classes,
        "feature_names": list(feature_names),
        "target": target,
        "model_type": type(model).__name__,
        "versions": {"sklearn": sklearn.__version__, "skops": skops.__version__},
        "extra": dict(extra or {}),
    }
    path = pathlib.Path(path)
    fileio.atomic_write_bytes(path, data)
    fileio.atomic_write_bytes(sidecar_path(path), json.dumps(meta, indent=2).encode("utf-8"))
    return path


def load_classifier(path: Union[str, os.PathLike], *,
                    allowed_types: Iterable[str] = ALLOWED_TYPES) -> tuple[Any, dict]:
    """Loads a model written by ``save_classifier``; returns ``(model, sidecar dict)``.

    Raises:
      FileNotFoundError: model or sidecar missing.
      ModelIntegrityError: sha256 mismatch, or classes/features differ from the sidecar.
      UntrustedTypeError: the file holds a type outside ``allowed_types`` (named).
      SpoilsError: unreadable sidecar, or a model file skops cannot load (names the file).
    """
    import skops.io as sio

    path = pathlib.Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if not side.is_file():
        raise FileNotFoundError(f"{side}: sidecar not found (needed to verify {path.name})")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        expected = meta["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise errors.SpoilsError(side, "sha256", f"unreadable sidecar ({e!r})") from e
    data = path.read_bytes()
    got = _sha256(data)
    if got != expected:
        raise ModelIntegrityError(path, "sha256", f"{got} does not match the sidecar's "
                                                  f"{expected}; the file was changed or corrupted")
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as e:   # a damaged archive: zipfile/json errors of many types
        raise errors.wrap(path, "a skops model", e) from e
    allowed = set(allowed_types)
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise UntrustedTypeError(path, "types", f"refusing to load types outside the "
                                                f"allow-list: {refused}")
    try:
        model = sio.loads(data, trusted=list(untrusted))
    except Exception as e:
        raise errors.wrap(path, "a skops model", e) from e
    classes = [str(c) for c in np.asarray(getattr(model, "classes_", []))]
    if classes != meta.get("classes"):
        raise ModelIntegrityError(path, "classes", f"model classes {classes} != sidecar "
                                                   f"classes {meta.get('classes')}")
    features = _model_features(model)
    if features is not None and features != meta.get("feature_names"):
        raise ModelIntegrityError(path, "feature_names", f"model features {features} != "
                                                         "sidecar feature_names "
                                                         f"{meta.get('feature_names')}")
    return model, meta
