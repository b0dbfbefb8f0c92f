"""TFDS builder over a spoils dataset directory of LabelMe files (SPIDER or synthetic).

The builder only reads files and yields ``(stable_key, example)``, like TFDS's ``beans``.
The data are brought by the user: ``dl_manager.manual_dir`` is a spoils dataset directory
(``spoils_tf.data.layout``: ``labelme/<patient>/<patient>_slice<k>.json`` + ``patients.csv``)
as written by ``spoils convert-spider`` or ``spoils synth``.

One split, ``train``, holds every slice: cross-validation folds are applied later by
patient (``spoils_tf.data.folds``), never by slice.

Example features:

* ``image``: uint8 [H, W, 1] greyscale (PNG-encoded).
* ``mask``: uint8 [H, W, 1] class ids of ``labels.SEG_CLASSES`` (PNG-encoded).
* ``patient``: str; ``slice``: int32 slice index in the patient's volume.
* ``pixel_spacing_mm``: float32 [2] (row_mm, col_mm) from the file's ``"spoils"`` key, else
  from ``patients.csv`` (``pixel_spacing_row_mm``, ``pixel_spacing_col_mm``), else NaN.
* ``key``: ``<patient>_slice<k>``, also the example key.

A file that ``labelme_io.read_labelme`` refuses (or a second file with an already used
key) is logged with its reason and skipped; the list is logged at the end of generation
and kept in memory (``bad_files(manual_dir)``). Nothing is written into the user's data
directory.

Build from the command line (offline)::

    tfds build datasets/spoils_labelme --config=spider --manual_dir=DIR --data_dir=TFDS_DIR

or from Python with ``load_dataset(DIR, TFDS_DIR, "spider")``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import pathlib
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from spoils_tf import labels
from spoils_tf.data import labelme_io, layout

log = logging.getLogger(__name__)

_CITATION = """\
@article{vandergraaf2024spider,
  title   = {Lumbar spine segmentation in MR images: a dataset and a public benchmark},
  author  = {van der Graaf, Jasper W. and others},
  journal = {Scientific Data},
  volume  = {11},
  pages   = {264},
  year    = {2024},
  doi     = {10.1038/s41597-024-03090-w}
}"""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
This dataset is built from a spoils dataset directory DIR that you make yourself:
  spoils convert-spider --spider <SPIDER dir> --out DIR     (config "spider")
  spoils synth --out DIR                                    (config "synthetic")
then pass --manual_dir=DIR (DIR holds labelme/<patient>/<patient>_slice<k>.json and
patients.csv), e.g.
  tfds build datasets/spoils_labelme --config=spider --manual_dir=DIR
"""


@dataclasses.dataclass(eq=False)
class SpoilsLabelmeConfig(tfds.core.BuilderConfig):
    """A source of LabelMe files; every config has the same features.

    Attributes:
        source: where the LabelMe files come from (documentation only).
        default_manual_dir: the directory name ``spoils`` writes this source to by default.
    """

    source: str = ""
    default_manual_dir: str = ""


@dataclasses.dataclass(frozen=True)
class BadFile:
    """A LabelMe file skipped during generation: ``path`` relative to the manual dir."""

    path: str
    reason: str


# str(resolved manual dir) -> files skipped by the last generation over it.
_BAD_FILES: dict[str, list[BadFile]] = {}


def bad_files(manual_dir: str | pathlib.Path) -> list[BadFile]:
    """Files skipped by the last ``_generate_examples`` run over ``manual_dir`` in this
    process (empty if none were, or if no generation ran)."""
    return list(_BAD_FILES.get(str(pathlib.Path(manual_dir).resolve()), []))


def read_patient_spacing(patients_csv: pathlib.Path) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """patient -> (row_mm, col_mm) from ``patients.csv``; (table, issues).

    Rows with empty spacing are left out. A missing file gives ({}, [one issue]): pixel
    spacing then comes from the LabelMe files only.

    Raises:
        SpoilsError: a required column missing or a bad row, naming the file, the line and
            the column (``layout.read_patients_csv``), before any example is built.
    """
    if not patients_csv.is_file():
        return {}, [f"{patients_csv}: not found; pixel spacing only from the LabelMe files"]
    rows = layout.read_patients_csv(patients_csv)
    return {p: r["spacing"] for p, r in rows.items() if r["spacing"] is not None}, []


class SpoilsLabelme(tfds.core.GeneratorBasedBuilder):
    """Slices + 14-class masks from a spoils dataset directory of LabelMe files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: image, mask, patient, slice, pixel_spacing_mm, key."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        SpoilsLabelmeConfig(
            name="spider",
            description="Real SPIDER T2-SPACE slices (van der Graaf et al. 2024, CC BY 4.0) "
                        "converted to 14 classes by `spoils convert-spider`.",
            source="spoils convert-spider", default_manual_dir="spider_labelme"),
        SpoilsLabelmeConfig(
            name="synthetic",
            description="Deterministic synthetic cohort with ground-truth geometry, "
                        "written by `spoils synth`.",
            source="spoils synth", default_manual_dir="synthetic"),
    ]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The file defining the builder class (``dummy_data/`` and checksums sit beside it).

        TFDS 4.9.10 computes this through ``importlib_resources``, which it declares only for
        Python < 3.9 and is then missing; ``inspect.getfile`` gives the same path for an
        installed (or editable) package.
        """
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Sagittal lumbar spine MRI slices with "
                f"{labels.NUM_SEG_CLASSES}-class segmentation masks ({', '.join(labels.SEG_NAMES)}), "
                "read from LabelMe files. mask holds class ids; pixel_spacing_mm is (row, col) "
                "in mm, NaN when unknown."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                             encoding_format="png"),
                "mask": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                            encoding_format="png"),
                "patient": tfds.features.Text(),
                "slice": tfds.features.Scalar(dtype=np.int32),
                "pixel_spacing_mm": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                "key": tfds.features.Text(),
            }),
            supervised_keys=("image", "mask"),
            homepage="https://doi.org/10.5281/zenodo.10159290",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = pathlib.Path(dl_manager.manual_dir)
        if not (manual_dir / layout.LABELME_DIR).is_dir():
            raise FileNotFoundError(
                f"{manual_dir}: no {layout.LABELME_DIR}/ directory; expected a spoils dataset "
                f"directory.\n{_MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {"train": self._generate_examples(manual_dir)}

    def _generate_examples(self, manual_dir: pathlib.Path) -> Iterator[tuple[str, dict]]:
        manual_dir = pathlib.Path(manual_dir).resolve()
        spacing_table, issues = read_patient_spacing(manual_dir / layout.PATIENTS_CSV)
        for issue in issues:
            log.warning("spoils_labelme: %s", issue)
        bad: list[BadFile] = []
        _BAD_FILES[str(manual_dir)] = bad
        seen: dict[str, str] = {}
        n_ok = 0
        for path in layout.list_labelme_jsons(manual_dir):
            rel = path.relative_to(manual_dir).as_posix()
            try:
                rec = labelme_io.read_labelme(path, root=manual_dir)
                if not 0 <= rec.slice <= np.iinfo(np.int32).max:
                    raise ValueError(f"slice index {rec.slice} does not fit int32")
            except (ValueError, OSError) as e:  # LabelMeError is a ValueError
                bad.append(BadFile(rel, str(e)))
                log.warning("spoils_labelme: skipping %s: %s", rel, e)
                continue
            key = layout.slice_stem(rec.patient, rec.slice)
            if key in seen:
                reason = f"example key {key!r} already used by {seen[key]}"
                bad.append(BadFile(rel, reason))
                log.warning("spoils_labelme: skipping %s: %s", rel, reason)
                continue
            seen[key] = rel
            spacing = rec.pixel_spacing_mm or spacing_table.get(rec.patient) or (math.nan, math.nan)
            n_ok += 1
            yield key, {
                "image": rec.image[:, :, None],
                "mask": rec.mask.astype(np.uint8)[:, :, None],
                "patient": rec.patient,
                "slice": np.int32(rec.slice),
                "pixel_spacing_mm": np.asarray(spacing, np.float32),
                "key": key,
            }
        if bad:
            log.warning("spoils_labelme: %d example(s) from %s, %d file(s) skipped:\n%s", n_ok,
                        manual_dir, len(bad), "\n".join(f"  {b.path}: {b.reason}" for b in bad))
        else:
            log.info("spoils_labelme: %d example(s) from %s, none skipped", n_ok, manual_dir)


def load_dataset(labelme_dir: str | pathlib.Path, data_dir: str | pathlib.Path,
                 config: str = "spider", *, rebuild: bool = False):
    """Builds (offline, once) and loads the ``train`` split of ``spoils_labelme/<config>``.

    Args:
        labelme_dir: the spoils dataset directory (the manual dir, holding ``labelme/``).
        data_dir: where TFDS keeps the prepared dataset.
        config: ``"spider"`` or ``"synthetic"``.
        rebuild: regenerate even when ``data_dir`` already holds this dataset version
            (needed after the LabelMe files changed: a prepared dataset is reused as is).

    Returns:
        (tf.data.Dataset of feature dicts, tfds.core.DatasetInfo).

    Raises:
        FileNotFoundError: ``labelme_dir`` has no ``labelme/`` directory.
    """
    builder = SpoilsLabelme(config=config, data_dir=str(data_dir))
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if rebuild
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(pathlib.Path(labelme_dir).resolve()), download_mode=mode))
    return builder.as_dataset(split="train"), builder.info


def build_main(argv: list[str]) -> int:
    """``tfds build`` without the ``tfds`` console script.

    tensorflow-datasets 4.9.10's ``tfds`` script imports ``apache_beam`` at start-up (for
    its ``convert_format`` command) even to build a plain generator dataset; this runs the
    same ``build`` command (same flags) without it::

        python -m spoils_tf.data.tfds_builder datasets/spoils_labelme --config=spider \\
            --manual_dir=DIR --data_dir=TFDS_DIR
    """
    import simple_parsing  # a tensorflow-datasets dependency
    from tensorflow_datasets.scripts.cli import build as tfds_build

    simple_parsing.parse(tfds_build.Args, args=argv).execute()
    return 0


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    sys.exit(build_main(sys.argv[1:]))
