"""Typed pipeline artifacts (TFX style) and their ``metadata.json`` records.

Every artifact lives in its own directory ``uri`` and is described by ``uri/metadata.json``
(a ``PushedModel``, whose ``uri`` is a TF Serving version folder, keeps it in
``uri/assets.extra/metadata.json``, where TF Serving does not look); an artifact exists
exactly when that file exists (stages write it last, atomically), so a stage killed half-way
leaves a directory that no later stage accepts. The record holds what
an audit needs::

    {"type": "Model", "uri": ..., "producer": "Trainer", "created": "2026-...Z",
     "fingerprint": {"sha256": ..., "n_files": ..., "total_bytes": ...},
     "config": {...}, "metrics": {...}, "parents": [uri of each input artifact],
     ...type-specific fields...}

``fingerprint`` is the data fingerprint of the dataset the artifact descends from
(:func:`data_fingerprint`), copied down the chain so that a pushed model names the exact
files it was trained and evaluated on.

Data fingerprint (:func:`data_fingerprint`): every regular file under the dataset directory
(hidden names, i.e. any path component starting with ``.``, are skipped: temporary files of
atomic writes, ``.DS_Store``), sorted by relative POSIX path; one line
``<path>\\t<size in bytes>\\t<sha256 of the content>\\n`` each; the fingerprint is the sha256
of those lines. Changing, adding, removing or renaming any data file changes it; moving the
dataset directory does not.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import pathlib
from typing import Any, ClassVar, Optional, Sequence

from spoils_tf import fileio

METADATA_FILE = "metadata.json"
MANIFEST_FILE = "files.tsv"


# === Config ===
def to_plain_config(config: Any) -> dict[str, Any]:
    """An ``ml_collections.ConfigDict`` (or mapping) as plain JSON types
    (``fileio.json_safe``: tuples become lists, non-finite floats None)."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return fileio.json_safe(config)


# === Fingerprint ===
def data_files(root: str | pathlib.Path) -> list[tuple[str, int, str]]:
    """``(relative POSIX path, size in bytes, sha256)`` of every non-hidden file, sorted.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory; expected a dataset directory")
    rows = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        rows.append((rel.as_posix(), path.stat().st_size, fileio.sha256_file(path)))
    return sorted(rows)


def fingerprint_of(rows: Sequence[tuple[str, int, str]]) -> dict[str, Any]:
    """``{"sha256", "n_files", "total_bytes"}`` of a :func:`data_files` listing."""
    h = hashlib.sha256()
    for rel, size, digest in rows:
        h.update(f"{rel}\t{size}\t{digest}\n".encode("utf-8"))
    return {"sha256": h.hexdigest(), "n_files": len(rows),
            "total_bytes": int(sum(size for _, size, _ in rows))}


def data_fingerprint(root: str | pathlib.Path) -> dict[str, Any]:
    """The data fingerprint of a dataset directory (definition in the module docstring)."""
    return fingerprint_of(data_files(root))


# === Artifacts ===
def utc_now() -> str:
    """Current UTC time, ISO 8601 with a ``Z`` suffix, to the microsecond."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class Artifact:
    """Fields shared by every artifact.

    Attributes:
        uri: the artifact's directory (absolute path).
        producer: name of the stage that wrote it (``"ExampleGen"``, ...).
        created: UTC creation time (:func:`utc_now`).
        fingerprint: data fingerprint ``{"sha256", "n_files", "total_bytes"}``.
        config: the stage's configuration, plain JSON.
        metrics: numbers the stage measured (counts, timings, scores).
        parents: uris of the input artifacts.
    """

    TYPE: ClassVar[str] = "Artifact"

    uri: str
    producer: str
    created: str
    fingerprint: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    parents: tuple[str, ...]

    @property
    def path(self) -> pathlib.Path:
        return pathlib.Path(self.uri)

    def to_json(self) -> dict[str, Any]:
        out = {"type": self.TYPE}
        out.update(fileio.json_safe(dataclasses.asdict(self)))
        return out


@dataclasses.dataclass(frozen=True)
class Examples(Artifact):
    """A validated dataset with its folds (ExampleGen).

    Attributes:
        dataset_dir: the spoils dataset directory (``spoils_tf.data.layout``), read only.
        tfds_dir: TFDS data dir holding the prepared ``spoils_labelme/<tfds_config>``.
        tfds_config: ``"spider" | "synthetic"``.
        folds_path: the ``folds.json`` used (the dataset's own, else one in ``uri``).
        eval_fold: the held-out fold the Evaluator scores.
        train_patients, eval_patients: the split, sorted patient ids.
        bad_files: ``"relative path: reason"`` of each LabelMe file that was skipped.
    """

    TYPE: ClassVar[str] = "Examples"

    dataset_dir: str
    tfds_dir: str
    tfds_config: str
    folds_path: str
    eval_fold: int
    train_patients: tuple[str, ...]
    eval_patients: tuple[str, ...]
    bad_files: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Model(Artifact):
    """A trained model (Trainer).

    Attributes:
        kind: ``"segmentation" | "crop_classifier" | "geometry_classifier"`` (the model-card
            kinds of ``spoils_tf.serve.bundle``).
        model_path: the model file the Evaluator loads (``.keras``; ``.skops`` for a
            geometry classifier).
        serving_model_dir: the folder the Pusher copies into a version folder: the SavedModel
            for TF Serving (``spoils_tf.export.serving``), or a folder holding exactly the
            classifier's files (``model.keras``; ``model.skops`` + ``model.skops.json``).
        examples_uri: the Examples it was trained on.
        model_file: the model inside ``serving_model_dir`` as the model card names it
            (``"."`` for a SavedModel, ``"model.keras"``, ``"model.skops"``).
        card: the kind-specific model-card fields (``spoils_tf.serve.bundle``: ``resize_mode``;
            ``target, classes, crop_height, crop_width, context_slices, margin_frac``;
            ``target, classes, model_name, features``), plus anything else a reader needs.
            Records written before these two fields existed read as ``"."`` and ``{}``.
    """

    TYPE: ClassVar[str] = "Model"

    kind: str
    model_path: str
    serving_model_dir: str
    examples_uri: str
    model_file: str = "."
    card: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelEvaluation(Artifact):
    """Metrics of a model on the held-out fold (Evaluator); the numbers are in ``metrics``.

    Attributes:
        model_uri, examples_uri: what was evaluated on what.
        eval_fold: the held-out fold.
    """

    TYPE: ClassVar[str] = "ModelEvaluation"

    model_uri: str
    examples_uri: str
    eval_fold: int


@dataclasses.dataclass(frozen=True)
class ModelBlessing(Artifact):
    """The Evaluator's verdict. ``uri`` also holds an empty ``BLESSED`` or ``NOT_BLESSED`` file.

    One blessing covers a whole model bundle: the segmentation model (``model_uri``) and the
    classifiers evaluated with it; ``model_uris`` lists them all (segmentation first).

    Attributes:
        blessed: True only when every threshold was met.
        checks: one entry per threshold: ``{"metric", "op", "threshold", "value", "passed"}``.
        failed: ``"<metric> <op> <threshold> (got <value>)"`` for each failed check.
        model_uri, evaluation_uri: the (segmentation) model judged and its evaluation.
        model_uris: every model the verdict covers (``()`` in records written before the
            field existed: then only ``model_uri``).
    """

    TYPE: ClassVar[str] = "ModelBlessing"

    blessed: bool
    checks: tuple[dict[str, Any], ...]
    failed: tuple[str, ...]
    model_uri: str
    evaluation_uri: str
    model_uris: tuple[str, ...] = ()

    def covers(self, model_uri: str) -> bool:
        """True when this verdict is about the model at ``model_uri``."""
        return model_uri == self.model_uri or model_uri in self.model_uris


@dataclasses.dataclass(frozen=True)
class PushedModel(Artifact):
    """A model version published for TF Serving (Pusher); ``uri`` is the version directory.

    Attributes:
        base_dir: TF Serving model base directory.
        model_name: served model name.
        version: integer version (``uri == base_dir/model_name/version``).
        model_uri, blessing_uri: what was pushed and why it was allowed.
    """

    TYPE: ClassVar[str] = "PushedModel"

    base_dir: str
    model_name: str
    version: int
    model_uri: str
    blessing_uri: str


ARTIFACT_TYPES: dict[str, type[Artifact]] = {
        cls.TYPE: cls for cls in (Examples, Model, ModelEvaluation, ModelBlessing, PushedModel)}


def write_artifact(artifact: Artifact, *, directory: Optional[str | pathlib.Path] = None) -> pathlib.Path:
    """Writes ``metadata.json`` (atomically, 2-space indent, sorted keys) into ``directory``
    (default ``artifact.uri``).

    Raises:
        FileExistsError: the directory already holds a ``metadata.json`` (artifacts are
            immutable: write a new one elsewhere).
    """
    directory = pathlib.Path(directory or artifact.uri)
    path = directory / METADATA_FILE
    if path.exists():
        raise FileExistsError(f"{path}: an artifact is already recorded here; artifacts are "
                              "immutable, write to a new directory")
    return fileio.write_json(path, artifact.to_json(), sort_keys=True)


def read_artifact(uri: str | pathlib.Path, expected: Optional[type[Artifact]] = None) -> Artifact:
    """Reads the artifact recorded in ``uri/metadata.json``.

    Args:
        uri: the artifact directory.
        expected: the class it must be (None = any registered type).

    Raises:
        FileNotFoundError: no ``metadata.json`` (not an artifact, or a stage that did not finish).
        ValueError: invalid JSON, unknown ``type``, missing fields (a field with a default may
            be absent: records written before it existed), or not ``expected``.
    """
    path = pathlib.Path(uri) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no artifact metadata (the stage did not finish, or "
                                f"{uri} is not an artifact directory)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: field 'json': invalid JSON ({e})") from e
    type_name = raw.pop("type", None) if isinstance(raw, dict) else None
    cls = ARTIFACT_TYPES.get(type_name)
    if cls is None:
        raise ValueError(f"{path}: field 'type': {type_name!r}; expected one of {sorted(ARTIFACT_TYPES)}")
    if expected is not None and cls is not expected:
        raise ValueError(f"{path}: field 'type': {type_name!r}; expected {expected.TYPE!r}")
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in raw:
            if field.default is not dataclasses.MISSING or \
                    field.default_factory is not dataclasses.MISSING:
                continue
            raise ValueError(f"{path}: field {field.name!r} is missing from a {type_name} record")
        value = raw[field.name]
        if str(field.type).startswith("tuple") and isinstance(value, list):
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)
