"""A catalogue of bad inputs, each run through the real command: a clear error or a correct result.

    .venv/bin/python tools/bad_inputs.py [--only SUBSTRING] [--out-dir benchmarks/results]

Every case builds its input in a folder of its own under one temporary root, then runs one
command in-process: ``spoils_tf.cli.main([...])`` with stdout and stderr captured
(``spoils predict``, ``segment``, ``convert-spider``, ``decide``, ``features``), or a library
reader (``spoils_tf.data.labelme_io.read_labelme``, ``spoils_tf.serve.inputs.read_input``). It records
the exit code or the exception type, the first line of the message, whether the message names
the file (or the argument) and the field, and what was left behind: every file or folder that
appeared in the case's folder or in the process's temporary folder, and every file there that
changed or went away.

Verdicts:

* ``clear error``: refused with the expected exit code (2; 1 for an item of a ``spoils
  segment`` batch, whose other items are written) or a ``SpoilsError``; the message names the
  file or argument and, where the case has one, the field; no traceback; exit 2 prints one
  line on stderr (argparse's usage line aside), as the README promises; nothing left behind
  and no input touched. What importing the commands writes (onnxruntime, under labelme,
  leaves ``$TMPDIR/.ses``) happens before the first case and is not counted.
* ``correct result``: accepted, and the result checked against what a person would expect
  (a vertex a little outside the image clipped to it, a 16-bit PNG rescaled to 0..255, a
  previous report replaced whole, a bad item of a batch listed with its file and reason).
* ``FAIL (<why>)``: an exception escaping (a traceback), another exit code, a message that
  names neither file nor field, partial output, or a result that is wrong.

The models are tiny untrained U-Nets built once per run (a few seconds): a ``.keras`` file and
its SavedModel taking slices of any size at 1 mm, and a one-model bundle (a 32x32 letterbox
SavedModel with its card). No case needs a trained model: refusals happen before the network
runs, and the accepted ``predict`` cases supply the mask.

Writes ``<out-dir>/bad_inputs.json`` (every record, the counts, the runtime, the machine) and
``bad_inputs.md`` (a table: #, command, case, outcome, message head, verdict), and prints the
counts per verdict, the runtime and the CPU. Exit status: 0 when no case fails, 1 otherwise,
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fnmatch
import functools
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zlib
from typing import Any, Callable, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402

from spoils_tf import errors, fileio  # noqa: E402
from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_NO_DISC, EXIT_OK, EXIT_PARTIAL  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CLEAR, CORRECT = "clear error", "correct result"
SIDE = 96                                # px; a slice above inputs.MIN_IMAGE_SIDE
SAGITTAL_IOP = (0, 1, 0, 0, 0, -1)       # rows anterior -> posterior, columns head -> foot
AXIAL_IOP = (1, 0, 0, 0, 1, 0)
SPACING_MM = ("1.2", "1.2")              # of the 256 px synthetic slice (predict cases)
# imported when the workspace is entered, before any case (see Workspace.__enter__)
COMMAND_MODULES = ("spoils_tf.cli", "spoils_tf.cli.predict", "spoils_tf.cli.segment",
                   "spoils_tf.cli.convert_spider", "spoils_tf.cli.features",
                   "spoils_tf.cli.decide", "spoils_tf.data.labelme_io")


# === Running one command and looking at what it left ===
def _snapshot(folder: pathlib.Path) -> dict[str, str]:
    """{relative path: "dir" or the file's sha1} of everything under ``folder``."""
    out: dict[str, str] = {}
    if not folder.exists():
        return out
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_dir() and not p.is_symlink():
            out[rel] = "dir"
        else:
            try:
                out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
            except OSError:
                out[rel] = "unreadable"
    return out


@dataclasses.dataclass
class Run:
    """What one command or library call did.

    Attributes:
        argv: the ``spoils`` arguments, or None for a library call.
        code: the exit status (None for a library call, or when an exception escaped).
        exception: the exception that escaped (a ``SpoilsError`` from a library call is
            the expected refusal; anything escaping ``cli.main`` is a traceback).
        stdout, stderr: what was printed.
        new: paths (relative to the case folder; ``$TMPDIR/...`` for the process's temporary
            folder) that appeared. changed: files that changed or went away.
        value: the library call's return value.
    """

    argv: Optional[list[str]]
    code: Optional[int]
    exception: Optional[BaseException]
    stdout: str
    stderr: str
    new: list[str]
    changed: list[str]
    value: Any = None

    @property
    def message(self) -> str:
        text = self.stderr
        if self.exception is not None:
            text += "\n" + f"{type(self.exception).__name__}: {self.exception}"
        return text

    @property
    def crashed(self) -> bool:
        """An exception escaped where the caller expects an exit code or a SpoilsError."""
        if self.exception is None:
            return False
        return self.argv is not None or not isinstance(self.exception, errors.SpoilsError)


class Workspace:
    """The run's temporary root: one folder per case, the tiny models, and a private
    temporary folder (``tempfile.tempdir`` and ``$TMPDIR`` while the workspace is entered,
    so that a library's temporary files land where they are looked for)."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.sys_tmp = root / "_tmpdir"
        self.sys_tmp.mkdir(parents=True, exist_ok=True)
        self._saved: tuple = ()

    def __enter__(self) -> "Workspace":
        self._saved = (tempfile.tempdir, os.environ.get("TMPDIR"))
        tempfile.tempdir = str(self.sys_tmp)
        os.environ["TMPDIR"] = str(self.sys_tmp)
        for module in COMMAND_MODULES:
            # import side effects are not a case's: onnxruntime (under labelme) writes
            # $TMPDIR/.ses once per process
            importlib.import_module(module)
        return self

    def __exit__(self, *exc) -> None:
        tempfile.tempdir, tmpdir = self._saved
        if tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = tmpdir

    def folder(self, case_id: str) -> pathlib.Path:
        path = self.root / case_id.replace("/", "__")
        path.mkdir(parents=True)
        return path

    def _diff(self, folder: pathlib.Path, before: dict, before_tmp: dict) -> tuple[list, list]:
        after, after_tmp = _snapshot(folder), _snapshot(self.sys_tmp)
        new = [p for p in after if p not in before]
        new += [f"$TMPDIR/{p}" for p in after_tmp if p not in before_tmp]
        changed = [p for p, h in before.items() if after.get(p) != h]
        changed += [f"$TMPDIR/{p}" for p, h in before_tmp.items() if after_tmp.get(p) != h]
        return new, changed

    def spoils(self, folder: pathlib.Path, argv: Sequence[Any]) -> Run:
        """``spoils_tf.cli.main(argv)`` with output captured; ``folder`` watched."""
        from spoils_tf import cli
        argv = [str(a) for a in argv]
        before, before_tmp = _snapshot(folder), _snapshot(self.sys_tmp)
        out, err = io.StringIO(), io.StringIO()
        code, exc = None, None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as e:               # argparse: usage error
                code = e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
            except Exception as e:  # noqa: BLE001 - a traceback is what this tool looks for
                exc = e
                traceback.print_exc()
        new, changed = self._diff(folder, before, before_tmp)
        return Run(argv, code, exc, out.getvalue(), err.getvalue(), new, changed)

    def call(self, folder: pathlib.Path, fn: Callable, *args, **kwargs) -> Run:
        """A library call; a ``SpoilsError`` it raises is recorded, not re-raised."""
        before, before_tmp = _snapshot(folder), _snapshot(self.sys_tmp)
        out, err = io.StringIO(), io.StringIO()
        value, exc = None, None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                value = fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                exc = e
        new, changed = self._diff(folder, before, before_tmp)
        return Run(None, None, exc, out.getvalue(), err.getvalue(), new, changed, value)

    # --- the web app (spoils serve) with the tiny bundle, built once per run ---
    @functools.cached_property
    def web_client(self):
        from fastapi.testclient import TestClient

        from spoils_tf.serve import web
        from spoils_tf.serve.predictor import Predictor
        config = web.ServeConfig(max_upload_bytes=WEB_MAX_UPLOAD_BYTES)
        return TestClient(web.create_app(config, predictor=Predictor(self.models.bundle)))

    def web_post(self, folder: pathlib.Path, files: list, fields: dict[str, str]) -> Run:
        """``POST /api/report``; the Run's code is the HTTP status, its stderr the JSON
        ``error`` and its stdout the page; ``folder`` and the temporary folder are watched
        (the app's per-request folder must be gone)."""
        client = self.web_client                 # built before the snapshot
        before, before_tmp = _snapshot(folder), _snapshot(self.sys_tmp)
        exc, code, out, err = None, None, "", ""
        try:
            resp = client.post("/api/report", files=files, data=fields)
            code = resp.status_code
            if resp.headers.get("content-type", "").startswith("application/json"):
                err = str(resp.json().get("error", resp.text)) + "\n"
            else:
                out = resp.text
        except Exception as e:  # noqa: BLE001 - an escaping server error is what we look for
            exc = e
        new, changed = self._diff(folder, before, before_tmp)
        argv = ["POST /api/report", *[f[1][0] for f in files],
                *[f"{k}={v}" for k, v in fields.items()]]
        return Run(argv, code, exc, out, err, new, changed)

    # --- tiny models, built once per run ---
    @functools.cached_property
    def models(self) -> "TinyModels":
        return build_tiny_models(self.root / "_models")

    @functools.cached_property
    def synthetic_case(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 [256, 256] slice, int32 [256, 256] mask) of synthetic patient 0."""
        from spoils_tf.data import synthetic
        image, mask, _, _ = synthetic.generate_slice(synthetic.sample_patient(0, 0), 0, 2, 5,
                                                     size=256)
        return image, mask


@dataclasses.dataclass(frozen=True)
class TinyModels:
    """keras_file: a U-Net for any slice size at 1 mm; saved_model: its SavedModel version
    folder (``resize_mode: spacing``); bundle: a model bundle holding only a 32x32 letterbox
    segmentation SavedModel and its card (no classifiers)."""

    keras_file: pathlib.Path
    saved_model: pathlib.Path
    bundle: pathlib.Path


def build_tiny_models(base: pathlib.Path) -> TinyModels:
    import keras

    from spoils_tf.serve import bundle
    from spoils_tf.export import serving
    from spoils_tf.models.unet import UNet
    base.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    any_size = UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu")
    any_size.save(base / "seg.keras")
    version = serving.export_saved_model(any_size, base / "serving", "seg",
                                         resize_mode="spacing", target_spacing_mm=1.0)
    letterbox = UNet(input_shape=(32, 32, 3), filters=(4, 8))
    seg_dir = serving.export_saved_model(letterbox, base / "bundle", bundle.SEG, version=1)
    bundle.write_card(seg_dir, {"kind": "segmentation", "model_file": ".",
                                "resize_mode": "letterbox", "metrics": {},
                                "created": "2026-01-01T00:00:00Z", "data_fingerprint": "",
                                "config": {}})
    return TinyModels(base / "seg.keras", version, base / "bundle")


# === Verdicts ===
def _message_head(run: Run) -> str:
    if run.crashed:
        return f"{type(run.exception).__name__}: {str(run.exception).strip()}".splitlines()[0]
    if run.argv is None:
        if run.exception is not None:
            return (str(run.exception).strip().splitlines() or [""])[0]
        return ""
    err = [ln for ln in run.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    out = [ln for ln in run.stdout.splitlines() if ln.strip()]
    if run.argv[0].startswith("POST "):        # the web app: its JSON error, else the page
        return (err or ["(HTML page)"])[0]
    if run.code in (EXIT_OK, EXIT_NO_DISC) and out:     # accepted: what it printed first
        return out[0]
    for ln in err:           # after a progress bar, the message may share its line
        if "spoils " in ln:
            return ln[ln.index("spoils "):]
    for ln in err:
        if not ln.startswith(("usage:", " ")):
            return ln
    return (err or out or [""])[0]


def _outcome(run: Run) -> str:
    if run.crashed:
        return f"traceback ({type(run.exception).__name__})"
    if run.argv is None:
        return type(run.exception).__name__ if run.exception is not None else "returned"
    return f"exit {run.code}"


def _left_behind(run: Run, may_write: Sequence[str]) -> list[str]:
    left = [p for p in run.new if not any(fnmatch.fnmatch(p, pat) for pat in may_write)]
    return left + [f"{p} (changed)" for p in run.changed]


def _record(run: Run, verdict: str, names_file: Optional[bool], names_field: Optional[bool],
            left: list[str]) -> dict[str, Any]:
    return {"argv": run.argv, "outcome": _outcome(run), "exit_code": run.code,
            "exception": type(run.exception).__name__ if run.exception is not None else None,
            "message_head": _message_head(run), "names_file": names_file,
            "names_field": names_field, "left_behind": left, "verdict": verdict}


def refused(run: Run, names: Sequence[str], fields: Sequence[str] = (), *,
            codes: Sequence[int] = (EXIT_BAD_INPUT,), may_write: Sequence[str] = ()
            ) -> dict[str, Any]:
    """The record of a case that must be refused.

    Args:
        names: the file or argument; the message must hold at least one of them.
        fields: the field at fault (any one of these spellings); empty when the whole file is
            bad (``names_field`` is then None).
        codes: accepted exit codes (a library call must raise a ``SpoilsError`` instead).
        may_write: glob patterns (relative to the case folder) of what may appear anyway: the
            good items of a batch.
    """
    problems = []
    msg = run.message
    if run.crashed:
        problems.append(f"traceback: {type(run.exception).__name__}")
    elif run.argv is not None and run.code not in codes:
        problems.append(f"exit {run.code}, expected {' or '.join(map(str, codes))}")
    elif run.argv is None and run.exception is None:
        problems.append("accepted, expected a SpoilsError")
    if "Traceback (most recent call last)" in run.stderr and not run.crashed:
        problems.append("traceback on stderr")
    if run.argv is not None and run.code == EXIT_BAD_INPUT and not run.crashed:
        message_lines = [ln for ln in run.stderr.splitlines()
                         if ln.strip() and not ln.startswith(("usage:", " "))]  # argparse
        if len(message_lines) != 1:
            problems.append(f"{len(message_lines)} lines on stderr, expected one")
    names_file = any(n in msg for n in names)
    names_field = any(f in msg for f in fields) if fields else None
    if not run.crashed:
        if not names_file and names_field is False:
            problems.append("message names neither file nor field")
        elif not names_file:
            problems.append("message does not name the file or argument")
        elif names_field is False:
            problems.append("message does not name the field")
    left = _left_behind(run, may_write)
    if left:
        problems.append("partial output: " + ", ".join(left[:3])
                        + (f" and {len(left) - 3} more" if len(left) > 3 else ""))
    verdict = CLEAR if not problems else f"FAIL ({'; '.join(problems)})"
    return _record(run, verdict, names_file, names_field, left)


def accepted(run: Run, check: Callable[[Run], Optional[str]], *,
             codes: Sequence[int] = (EXIT_OK,)) -> dict[str, Any]:
    """The record of a case whose input must be accepted: ``check(run)`` returns None when
    the result is right, else what is wrong."""
    if run.crashed:
        why = f"traceback: {type(run.exception).__name__}"
    elif run.argv is not None and run.code not in codes:
        why = f"exit {run.code}, expected {' or '.join(map(str, codes))}"
    elif run.argv is None and run.exception is not None:
        why = f"refused ({type(run.exception).__name__}), expected a result"
    else:
        why = check(run)
    return _record(run, CORRECT if why is None else f"FAIL ({why})", None, None, [])


# === The catalogue ===
@dataclasses.dataclass(frozen=True)
class Case:
    id: str                                         # "<command>/<name>"
    command: str                                    # "predict", ..., "labelme"
    description: str
    run: Callable[[Workspace, pathlib.Path], dict]  # (workspace, its own folder) -> record


CASES: list[Case] = []


def case(command: str, description: str):
    def register(fn):
        CASES.append(Case(f"{command}/{fn.__name__.removeprefix('_')}", command, description,
                          fn))
        return fn
    return register


# --- input builders ---
def _grey(h: int = SIDE, w: int = SIDE - 16, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w)) * 200 + 20).astype(np.uint8)


def _png(path: pathlib.Path, arr: Optional[np.ndarray] = None) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(_grey() if arr is None else arr).save(path)
    return path


def _png_header_only(path: pathlib.Path, h: int, w: int) -> pathlib.Path:
    """A PNG whose IHDR says h x w and that holds no pixel data (decoding it would fail)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def _colour_png(path: pathlib.Path) -> pathlib.Path:
    rgb = np.zeros((SIDE, SIDE - 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 200, 30
    return _png(path, rgb)


@functools.lru_cache(maxsize=1)
def _dicom_writer():
    """tests/dicom_writer.py, the one writer of test DICOM slices."""
    spec = importlib.util.spec_from_file_location("dicom_writer",
                                                  REPO / "tests" / "dicom_writer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dicom(path: pathlib.Path, *, iop=SAGITTAL_IOP, k: int = 0, **kwargs) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = _grey().astype(np.uint16) * 8
    return _dicom_writer().write_mr_slice(path, pixels, k, iop=iop, phi={}, **kwargs)


def _edit_dicom(path: pathlib.Path, edit: Callable) -> pathlib.Path:
    import pydicom
    ds = pydicom.dcmread(str(path))
    edit(ds)
    ds.save_as(str(path))
    return path


def _mha(path: pathlib.Path, spacing_text: Optional[str] = None, dims: int = 2) -> pathlib.Path:
    """A MetaImage with ``ElementSpacing`` replaced by ``spacing_text`` (header text)."""
    import SimpleITK as sitk
    shape = (SIDE, SIDE - 16) if dims == 2 else (5, SIDE, SIDE - 16)
    img = sitk.GetImageFromArray(np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape))
    img.SetSpacing((0.5,) * dims)
    sitk.WriteImage(img, str(path))
    if spacing_text is not None:
        old = ("ElementSpacing = " + " ".join(["0.5"] * dims) + "\n").encode()
        data = path.read_bytes()
        assert old in data, data[:400]
        path.write_bytes(data.replace(old, f"ElementSpacing = {spacing_text}\n".encode()))
    return path


def _nifti_pixdim(path: pathlib.Path, value: float) -> pathlib.Path:
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(np.arange(SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE))
    img.SetSpacing((0.5, 0.5))
    sitk.WriteImage(img, str(path))
    data = bytearray(path.read_bytes())
    data[80:84] = struct.pack("<f", value)          # pixdim[1]: the x spacing
    path.write_bytes(bytes(data))
    return path


def _truncate(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _synthetic_inputs(ws: Workspace, d: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(slice PNG, mask PNG) of the synthetic 256 px case, in ``d``."""
    image, mask = ws.synthetic_case
    return _png(d / "slice.png", image), _png(d / "mask.png", mask.astype(np.uint8))


def _predict(ws: Workspace, d: pathlib.Path, *args, out: Optional[pathlib.Path] = None,
             models: Any = "none", spacing: Optional[Sequence[str]] = SPACING_MM) -> Run:
    """``spoils predict`` with ``--models`` a folder that does not exist unless given: the
    refusals come before any model loads."""
    argv = ["predict", *args, "--out", out or d / "out"]
    if models is not None:
        argv += ["--models", d / "no_models" if models == "none" else models]
    if spacing is not None and "--pixel-spacing" not in args:
        argv += ["--pixel-spacing", *spacing]
    return ws.spoils(d, argv)


def _labelme(d: pathlib.Path, shapes: Optional[list] = None, h: int = 20, w: int = 30,
             name: str = "slice.json", **extra) -> pathlib.Path:
    png = _png(d / "slice.png", np.full((h, w), 50, np.uint8))
    doc = {"version": "5.5.0", "flags": {}, "imagePath": png.name, "imageData": None,
           "imageHeight": h, "imageWidth": w,
           "shapes": [_rect("L4-L5", 2, 2, 8, 6)] if shapes is None else shapes}
    doc.update(extra)
    path = d / name
    path.write_text(json.dumps(doc))
    return path


def _rect(label: str, x0, y0, x1, y1, shape_type: str = "rectangle") -> dict:
    return {"label": label, "points": [[x0, y0], [x1, y1]], "group_id": None,
            "shape_type": shape_type, "flags": {}}


def _read_labelme(ws: Workspace, d: pathlib.Path, path: pathlib.Path) -> Run:
    from spoils_tf.data import labelme_io
    return ws.call(d, labelme_io.read_labelme, path)


_GRADING_HEADER = ("Patient,IVD label,Modic,UP endplate,LOW endplate,Spondylolisthesis,"
                   "Disc herniation,Disc narrowing,Disc bulging,Pfirrman grade")
_OVERVIEW_HEADER = ("new_file_name,sex,subset,MagneticFieldStrength,Manufacturer,"
                    "ManufacturerModelName,PixelSpacing,SliceThickness,SpacingBetweenSlices")


def _spider(d: pathlib.Path, *, masks: bool = True, images: bool = True,
            pixel_spacing: str = "[0.5, 0.5]", gradings: Optional[list[str]] = None,
            mask: Optional[np.ndarray] = None) -> pathlib.Path:
    """A one-slice SPIDER folder (patient 9, slice 5) with an empty mask."""
    src = d / "spider"
    (src / "images").mkdir(parents=True)
    name = "9_t2_SPACE_slice5.png"
    if images:
        _png(src / "images" / name, np.full((SIDE, SIDE), 80, np.uint8))
    if masks:
        _png(src / "masks" / name, np.zeros((SIDE, SIDE), np.uint8) if mask is None else mask)
    (src / "overview.csv").write_text(
        f"{_OVERVIEW_HEADER}\n9_t2_SPACE,F,training,1.5,SIEMENS,Avanto,\"{pixel_spacing}\",3,3.3\n")
    rows = gradings if gradings is not None else [f"9,{n},0,0,0,0,0,0,0,3" for n in (1, 2)]
    (src / "radiological_gradings.csv").write_text("\n".join([_GRADING_HEADER, *rows]) + "\n")
    return src


def _dataset(d: pathlib.Path, patients_csv: Optional[str] = None, labelme: bool = True
             ) -> pathlib.Path:
    """A ``spoils features`` dataset folder: labelme/ with one file, and patients.csv."""
    data = d / "data"
    data.mkdir()
    if labelme:
        (data / "labelme").mkdir()
        _labelme(data / "labelme", spoils={"patient": "P1", "slice": 0})
    if patients_csv is not None:
        (data / "patients.csv").write_text(patients_csv)
    return data


def _features(ws: Workspace, d: pathlib.Path, data: pathlib.Path,
              out: Optional[pathlib.Path] = None) -> Run:
    return ws.spoils(d, ["features", "--data", data, "--out", out or d / "features.parquet",
                         "--no-progress"])


def _decide(ws: Workspace, d: pathlib.Path, *args) -> Run:
    return ws.spoils(d, ["decide", *args])


def _decide_config(ws: Workspace, d: pathlib.Path, text: str) -> Run:
    path = d / "decision.json"
    path.write_text(text)
    return _decide(ws, d, "--class", "L4-L5=4M", "--odi", "45", "--nrs", "7", "--config", path)


def _segment(ws: Workspace, d: pathlib.Path, *inputs, model: Any = "keras",
             extra: Sequence[str] = ("--pixel-spacing", "1", "1"),
             out: Optional[pathlib.Path] = None) -> Run:
    """``spoils segment`` with the tiny any-size ``.keras`` (1 mm) unless ``model`` is given."""
    argv = ["segment", *inputs, "--out", out or d / "out", "--orientation", "as_is", *extra]
    if model == "keras":
        argv += ["--model", ws.models.keras_file, "--target-spacing-mm", "1.0"]
    elif model is not None:
        argv += ["--model", model]
    return ws.spoils(d, argv)


# === spoils predict ===
@case("predict", "--input does not exist")
def _input_missing(ws, d):
    return refused(_predict(ws, d, "--input", d / "nope.png"), ["nope.png"], ["not found"])


@case("predict", "--input is an empty (0-byte) .png")
def _input_empty_png(ws, d):
    (d / "empty.png").write_bytes(b"")
    return refused(_predict(ws, d, "--input", d / "empty.png"), ["empty.png"])


@case("predict", "--input is a text file named .png")
def _input_text_as_png(ws, d):
    (d / "notes.png").write_text("not an image\n")
    return refused(_predict(ws, d, "--input", d / "notes.png"), ["notes.png"])


@case("predict", "--input is a PNG named .dcm (wrong extension)")
def _input_png_named_dcm(ws, d):
    PIL.Image.fromarray(_grey()).save(d / "slice.dcm", format="PNG")
    return refused(_predict(ws, d, "--input", d / "slice.dcm"), ["slice.dcm"])


@case("predict", "--input is a colour PNG (an overlay saved by mistake)")
def _input_colour_png(ws, d):
    return refused(_predict(ws, d, "--input", _colour_png(d / "overlay.png")), ["overlay.png"],
                   ["colour"])


@case("predict", "--input is a 1-px PNG")
def _input_one_pixel_png(ws, d):
    path = _png(d / "dot.png", np.zeros((1, 1), np.uint8))
    return refused(_predict(ws, d, "--input", path), ["dot.png"], ["1x1", "too small"])


@case("predict", "--input PNG whose header claims 8000x8000 (no pixel data)")
def _input_huge_header_png(ws, d):
    path = _png_header_only(d / "huge.png", 8000, 8000)
    return refused(_predict(ws, d, "--input", path), ["huge.png"], ["8000x8000"])


@case("predict", "16-bit PNG: read at full depth, min-max rescaled to uint8 0..255")
def _input_16bit_png(ws, d):
    from spoils_tf.serve import inputs
    ramp = (np.arange(SIDE * SIDE).reshape(SIDE, SIDE) * 7).astype(np.uint16)   # 0..64505
    path = d / "deep.png"
    PIL.Image.fromarray(ramp).save(path)
    run = ws.call(d, inputs.read_input, path, pixel_spacing=(0.5, 0.5))

    def check(r):
        img = r.value[0][0]
        expect = np.rint(ramp.astype(np.float64) * 255.0 / float(ramp.max())).astype(np.uint8)
        if img.dtype != np.uint8 or img.shape != ramp.shape:
            return f"got {img.dtype} {img.shape}"
        if not np.array_equal(img, expect):
            return f"max |difference| {int(np.abs(img.astype(int) - expect).max())} from min-max"
        return None
    return accepted(run, check)


@case("predict", "PNG without --pixel-spacing")
def _png_without_spacing(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "slice.png"), spacing=None),
                   ["slice.png"], ["pixel spacing", "--pixel-spacing"])


@case("predict", "--pixel-spacing 469 469 (meant 0.469 mm)")
def _spacing_469(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "slice.png"), spacing=("469", "469")),
                   ["--pixel-spacing"], ["469 mm"])


@case("predict", "--pixel-spacing -0.5 0.5")
def _spacing_negative(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "slice.png"), spacing=("-0.5", "0.5")),
                   ["--pixel-spacing"], ["-0.5"])


@case("predict", "--pixel-spacing nan nan")
def _spacing_nan(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "slice.png"), spacing=("nan", "nan")),
                   ["--pixel-spacing"], ["nan"])


@case("predict", "--pixel-spacing 0 0")
def _spacing_zero(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "slice.png"), spacing=("0", "0")),
                   ["--pixel-spacing"], ["positive", "0 mm", "0.0"])


@case("predict", "DICOM without PixelData")
def _dicom_no_pixel_data(ws, d):
    path = _edit_dicom(_dicom(d / "nopix.dcm"), lambda ds: delattr(ds, "PixelData"))
    return refused(_predict(ws, d, "--input", path, spacing=None), ["nopix.dcm"], ["PixelData"])


@case("predict", "DICOM with short pixel data (100 of 15360 bytes)")
def _dicom_short_pixel_data(ws, d):
    def cut(ds):
        ds.PixelData = ds.PixelData[:100]
    path = _edit_dicom(_dicom(d / "short.dcm"), cut)
    return refused(_predict(ws, d, "--input", path, spacing=None), ["short.dcm"], ["PixelData"])


@case("predict", "DICOM without PixelSpacing")
def _dicom_no_pixel_spacing(ws, d):
    path = _dicom(d / "nops.dcm", pixel_spacing=None)
    return refused(_predict(ws, d, "--input", path, spacing=None), ["nops.dcm"],
                   ["PixelSpacing"])


@case("predict", "DICOM PixelSpacing 469\\469")
def _dicom_spacing_469(ws, d):
    path = _dicom(d / "big.dcm", pixel_spacing=(469, 469))
    return refused(_predict(ws, d, "--input", path, spacing=None), ["big.dcm"], ["PixelSpacing"])


@case("predict", "DICOM series in the axial plane")
def _dicom_axial(ws, d):
    for k in range(3):
        _dicom(d / "axial" / f"im{k}.dcm", iop=AXIAL_IOP, k=k)
    return refused(_predict(ws, d, "--input", d / "axial", spacing=None), ["axial"],
                   ["axial", "sagittal", "ImageOrientationPatient"])


@case("predict", "DICOM whose Rows x Columns claim 5000x5000")
def _dicom_huge_rows(ws, d):
    def claim(ds):
        ds.Rows, ds.Columns = 5000, 5000
    path = _edit_dicom(_dicom(d / "huge.dcm"), claim)
    return refused(_predict(ws, d, "--input", path, spacing=None), ["huge.dcm"], ["Rows"])


@case("predict", "an empty folder as the DICOM series")
def _dicom_empty_folder(ws, d):
    (d / "series").mkdir()
    return refused(_predict(ws, d, "--input", d / "series", spacing=None), ["series"])


@case("predict", "a folder of non-DICOM files as the series")
def _dicom_folder_of_text(ws, d):
    (d / "series").mkdir()
    (d / "series" / "readme.txt").write_text("hello\n")
    return refused(_predict(ws, d, "--input", d / "series", spacing=None), ["series"])


@case("predict", "2-D MHA with ElementSpacing 0 0.5")
def _mha_zero_spacing(ws, d):
    path = _mha(d / "slice.mha", "0 0.5")
    return refused(_predict(ws, d, "--input", path, spacing=None), ["slice.mha"],
                   ["ElementSpacing"])


@case("predict", "2-D MHA with ElementSpacing -0.5 0.5")
def _mha_negative_spacing(ws, d):
    path = _mha(d / "slice.mha", "-0.5 0.5")
    return refused(_predict(ws, d, "--input", path, spacing=None), ["slice.mha"],
                   ["ElementSpacing"])


@case("predict", "2-D MHA with ElementSpacing 469 469")
def _mha_469_spacing(ws, d):
    path = _mha(d / "slice.mha", "469 469")
    return refused(_predict(ws, d, "--input", path, spacing=None), ["slice.mha"],
                   ["ElementSpacing"])


@case("predict", "2-D MHA with ElementSpacing nan nan")
def _mha_nan_spacing(ws, d):
    path = _mha(d / "slice.mha", "nan nan")
    return refused(_predict(ws, d, "--input", path, spacing=None), ["slice.mha"],
                   ["ElementSpacing"])


@case("predict", "2-D NIfTI with pixdim 0 (SimpleITK alone reads 1 mm)")
def _nifti_zero_pixdim(ws, d):
    path = _nifti_pixdim(d / "slice.nii", 0.0)
    return refused(_predict(ws, d, "--input", path, spacing=None), ["slice.nii"], ["pixdim"])


@case("predict", "a truncated MHA (header, half the pixels)")
def _mha_truncated(ws, d):
    path = _mha(d / "slice.mha")
    _truncate(path)
    return refused(_predict(ws, d, "--input", path, spacing=None), ["slice.mha"])


@case("predict", "--odi 120")
def _odi_out_of_range(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--odi", "120", "--nrs", "5"),
                   ["odi", "ODI"], ["120"])


@case("predict", "--odi abc")
def _odi_not_a_number(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--odi", "abc", "--nrs", "5"),
                   ["odi", "ODI"], ["abc"])


@case("predict", "--odi -1")
def _odi_negative(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--odi", "-1", "--nrs", "5"),
                   ["odi", "ODI"], ["-1"])


@case("predict", "--nrs 11")
def _nrs_out_of_range(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--odi", "40", "--nrs", "11"),
                   ["nrs", "NRS"], ["11"])


@case("predict", "--nrs 5.5 (the scale is whole numbers)")
def _nrs_fractional(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--odi", "40", "--nrs", "5.5"),
                   ["nrs", "NRS"], ["5.5"])


@case("predict", "--odi given, --nrs missing (half of the scores)")
def _scores_half_given(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--odi", "40"),
                   ["nrs", "--nrs"], ["missing"])


@case("predict", "--out is a file")
def _out_is_a_file(ws, d):
    (d / "afile").write_text("keep")
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), out=d / "afile"),
                   ["afile"], ["--out"])


@case("predict", "--out is under a file")
def _out_under_a_file(ws, d):
    (d / "afile").write_text("keep")
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), out=d / "afile" / "out"),
                   ["afile"], ["--out"])


@case("predict", "--out is a folder of other files")
def _out_folder_of_other_files(ws, d):
    (d / "out").mkdir()
    (d / "out" / "thesis.tex").write_text("years of work")
    return refused(_predict(ws, d, "--input", _png(d / "s.png")), ["out"], ["--out"])


@case("predict", "--out is a previous report: replaced whole (tiny bundle, mask supplied)")
def _out_previous_report(ws, d):
    from spoils_tf.serve.run import REPORT_FILES
    png, mask = _synthetic_inputs(ws, d)
    (d / "out").mkdir()
    for name in REPORT_FILES.values():
        (d / "out" / name).write_bytes(b"old " + name.encode())
    old_inode = os.stat(d / "out").st_ino
    run = _predict(ws, d, "--input", png, "--mask", mask, models=ws.models.bundle)

    def check(r):
        out = d / "out"
        names = sorted(p.name for p in out.iterdir())
        if names != sorted(REPORT_FILES.values()):
            return f"out holds {names}"
        if any(p.read_bytes().startswith(b"old ") for p in out.iterdir()):
            return "a file of the old report survived"
        if os.stat(out).st_ino == old_inode:
            return "the old folder was refilled, not replaced"
        if sorted(p.name for p in d.iterdir()) != ["mask.png", "out", "slice.png"]:
            return f"left beside out: {sorted(p.name for p in d.iterdir())}"
        if json.loads((out / "report.json").read_text())["input"]["segmentation"] != \
                "supplied mask":
            return "the report does not say the mask was supplied"
        return None
    return accepted(run, check)


@case("predict", "--models: bundle card whose sha256 does not match the model")
def _bundle_wrong_sha256(ws, d):
    from spoils_tf.serve import bundle
    models = d / "bundle"
    shutil.copytree(ws.models.bundle, models)
    version = models / bundle.SEG / "1"
    card = json.loads(bundle.card_path(version).read_text())
    card["sha256"] = "0" * 64
    bundle.card_path(version).write_text(json.dumps(card))
    png, mask = _synthetic_inputs(ws, d)
    return refused(_predict(ws, d, "--input", png, "--mask", mask, models=models),
                   [bundle.card_path(version).name, str(version)], ["sha256"])


@case("predict", "--models: bundle whose SavedModel variables are truncated")
def _bundle_truncated_savedmodel(ws, d):
    from spoils_tf.serve import bundle
    models = d / "bundle"
    shutil.copytree(ws.models.bundle, models)
    for data_file in (models / bundle.SEG / "1" / "variables").glob("variables.data-*"):
        _truncate(data_file)
    png, mask = _synthetic_inputs(ws, d)
    return refused(_predict(ws, d, "--input", png, "--mask", mask, models=models),
                   [str(models / bundle.SEG / "1")], ["SavedModel", "variables"])


@case("predict", "--models: bundle card that is not JSON")
def _bundle_card_bad_json(ws, d):
    from spoils_tf.serve import bundle
    models = d / "bundle"
    shutil.copytree(ws.models.bundle, models)
    card = bundle.card_path(models / bundle.SEG / "1")
    card.write_text('{"kind": "segmentation",')
    png, mask = _synthetic_inputs(ws, d)
    return refused(_predict(ws, d, "--input", png, "--mask", mask, models=models), [card.name],
                   ["JSON"])


@case("predict", "--models: an empty folder (no segmentation model)")
def _bundle_empty(ws, d):
    (d / "bundle").mkdir()
    png, mask = _synthetic_inputs(ws, d)
    return refused(_predict(ws, d, "--input", png, "--mask", mask, models=d / "bundle"),
                   ["bundle"], ["spoils_seg"])


@case("predict", "--models: a folder that does not exist")
def _bundle_missing(ws, d):
    png, mask = _synthetic_inputs(ws, d)
    return refused(_predict(ws, d, "--input", png, "--mask", mask, models=d / "nowhere"),
                   ["nowhere"])


@case("predict", "--mask of another size than the slice")
def _mask_wrong_size(ws, d):
    png = _png(d / "s.png")
    mask = _png(d / "mask.png", np.zeros((40, 40), np.uint8))
    return refused(_predict(ws, d, "--input", png, "--mask", mask), ["mask.png"], ["--mask"])


@case("predict", "--mask with class id 200")
def _mask_bad_class(ws, d):
    png = _png(d / "s.png")
    mask = _png(d / "mask.png", np.full(_grey().shape, 200, np.uint8))
    return refused(_predict(ws, d, "--input", png, "--mask", mask), ["mask.png"], ["--mask"])


@case("predict", "--mask is a colour PNG")
def _mask_colour(ws, d):
    png = _png(d / "s.png")
    return refused(_predict(ws, d, "--input", png, "--mask", _colour_png(d / "mask.png")),
                   ["mask.png"], ["--mask"])


@case("predict", "--mask does not exist")
def _mask_missing(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--mask", d / "nomask.png"),
                   ["nomask.png"], ["--mask"])


@case("predict", "--slices 2 (even)")
def _slices_even(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--slices", "2"),
                   ["--slices"], ["odd"])


@case("predict", "--slices 3 with a 2-D PNG")
def _slices_on_a_picture(ws, d):
    return refused(_predict(ws, d, "--input", _png(d / "s.png"), "--slices", "3"), ["s.png"],
                   ["--slices"])


# === spoils segment ===
@case("segment", "input file does not exist")
def _seg_input_missing(ws, d):
    return refused(_segment(ws, d, d / "nope.png", model=None), ["nope.png"])


@case("segment", "an empty folder as the only input")
def _seg_empty_folder(ws, d):
    (d / "in").mkdir()
    return refused(_segment(ws, d, d / "in", model=None), ["in", "input"])


@case("segment", "a corrupt PNG among good ones: the good ones written, the bad one named")
def _seg_corrupt_in_batch(ws, d):
    for i in range(2):
        _png(d / "in" / f"s{i}.png", _grey(seed=i))
    (d / "in" / "bad.png").write_bytes(b"this is not a PNG file\n")
    rec = refused(_segment(ws, d, d / "in"), ["bad.png"], codes=(EXIT_PARTIAL,),
                  may_write=["out", "out/s0_*", "out/s1_*"])
    written = sorted(p.name for p in (d / "out").glob("*")) if (d / "out").is_dir() else []
    if rec["verdict"] == CLEAR and len(written) != 8:     # 4 files for each good slice
        rec["verdict"] = f"FAIL (the good slices' files: {written})"
    return rec


@case("segment", "a colour PNG (batch of one)")
def _seg_colour(ws, d):
    return refused(_segment(ws, d, _colour_png(d / "overlay.png")), ["overlay.png"], ["colour"],
                   codes=(EXIT_PARTIAL,))


@case("segment", "a 1-px PNG (batch of one)")
def _seg_one_pixel(ws, d):
    path = _png(d / "dot.png", np.zeros((1, 1), np.uint8))
    return refused(_segment(ws, d, path), ["dot.png"], ["too small"], codes=(EXIT_PARTIAL,))


@case("segment", "PNG whose header claims 8000x8000")
def _seg_huge_header(ws, d):
    path = _png_header_only(d / "huge.png", 8000, 8000)
    return refused(_segment(ws, d, path), ["huge.png"], ["8000x8000"], codes=(EXIT_PARTIAL,))


@case("segment", "DICOM without PixelData (batch of one)")
def _seg_dicom_no_pixels(ws, d):
    path = _edit_dicom(_dicom(d / "nopix.dcm"), lambda ds: delattr(ds, "PixelData"))
    return refused(_segment(ws, d, path, extra=()), ["nopix.dcm"], ["PixelData"],
                   codes=(EXIT_PARTIAL,))


@case("segment", "2-D MHA with ElementSpacing 0 0.5 (batch of one)")
def _seg_mha_zero_spacing(ws, d):
    path = _mha(d / "slice.mha", "0 0.5")
    return refused(_segment(ws, d, path, extra=()), ["slice.mha"], ["ElementSpacing"],
                   codes=(EXIT_PARTIAL,))


@case("segment", "PNG without pixel spacing for a model that works in mm")
def _seg_png_no_spacing(ws, d):
    return refused(_segment(ws, d, _png(d / "s.png"), extra=()), ["s.png"], ["pixel spacing"],
                   codes=(EXIT_PARTIAL,))


@case("segment", "--pixel-spacing 469 469")
def _seg_spacing_469(ws, d):
    return refused(_segment(ws, d, _png(d / "s.png"), model=None,
                            extra=("--pixel-spacing", "469", "469")),
                   ["--pixel-spacing"], ["469 mm"])


@case("segment", "--out is a file")
def _seg_out_is_a_file(ws, d):
    (d / "afile").write_text("keep")
    return refused(_segment(ws, d, _png(d / "s.png"), model=None, out=d / "afile"),
                   ["afile"], ["--out"])


@case("segment", "--out is under a file")
def _seg_out_under_a_file(ws, d):
    (d / "afile").write_text("keep")
    return refused(_segment(ws, d, _png(d / "s.png"), model=None, out=d / "afile" / "out"),
                   ["afile"], ["--out"])


@case("segment", "--model: a truncated .keras file")
def _seg_truncated_keras(ws, d):
    model = d / "seg.keras"
    shutil.copy(ws.models.keras_file, model)
    _truncate(model)
    return refused(_segment(ws, d, _png(d / "s.png"), model=model,
                            extra=("--target-spacing-mm", "1.0")),
                   ["seg.keras"], ["truncated"])


@case("segment", "--model: a .keras file that does not exist")
def _seg_missing_keras(ws, d):
    return refused(_segment(ws, d, _png(d / "s.png"), model=d / "nope.keras"), ["nope.keras"],
                   ["not found"])


@case("segment", "--model: an any-size .keras without --target-spacing-mm")
def _seg_keras_without_target_spacing(ws, d):
    return refused(_segment(ws, d, _png(d / "s.png"), model=ws.models.keras_file),
                   [ws.models.keras_file.name], ["--target-spacing-mm"])


@case("segment", "--model: a SavedModel whose variables are truncated")
def _seg_truncated_savedmodel(ws, d):
    version = d / "1"
    shutil.copytree(ws.models.saved_model, version)
    for data_file in (version / "variables").glob("variables.data-*"):
        _truncate(data_file)
    return refused(_segment(ws, d, _png(d / "s.png"), model=version), [str(version)],
                   ["SavedModel"], may_write=[])


@case("segment", "--model: a bundle whose card's sha256 does not match")
def _seg_bundle_wrong_sha256(ws, d):
    from spoils_tf.serve import bundle
    models = d / "bundle"
    version = models / bundle.SEG / "1"
    shutil.copytree(ws.models.saved_model, version)
    bundle.write_card(version, {"kind": "segmentation", "model_file": ".",
                                "resize_mode": "spacing", "target_spacing_mm": 1.0,
                                "sha256": "f" * 64})
    return refused(_segment(ws, d, _png(d / "s.png"), model=models),
                   [bundle.card_path(version).name, str(version)], ["sha256"])


@case("segment", "--model: a file with another extension (.h5)")
def _seg_model_wrong_extension(ws, d):
    (d / "seg.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    return refused(_segment(ws, d, _png(d / "s.png"), model=d / "seg.h5"), ["seg.h5"],
                   [".keras", "SavedModel"])


# === spoils convert-spider ===
def _convert(ws: Workspace, d: pathlib.Path, src: pathlib.Path,
             out: Optional[pathlib.Path] = None) -> Run:
    return ws.spoils(d, ["convert-spider", "--src", src, "--out", out or d / "out",
                         "--no-progress"])


@case("convert-spider", "--src does not exist")
def _spider_src_missing(ws, d):
    return refused(_convert(ws, d, d / "nowhere"), ["nowhere"], ["images/"])


@case("convert-spider", "no masks/ folder")
def _spider_no_masks(ws, d):
    return refused(_convert(ws, d, _spider(d, masks=False)), ["spider"], ["masks/"])


@case("convert-spider", "images/ folder empty")
def _spider_images_empty(ws, d):
    return refused(_convert(ws, d, _spider(d, images=False)), ["images"],
                   ["_t2_SPACE_slice"])


@case("convert-spider", "radiological_gradings.csv with a Pfirrmann grade of 9")
def _spider_pfirrmann_9(ws, d):
    src = _spider(d, gradings=["9,1,0,0,0,0,0,0,0,3", "9,2,0,0,0,0,0,0,0,9"])
    return refused(_convert(ws, d, src), ["radiological_gradings.csv"],
                   ["line 3: Pfirrman grade"])


@case("convert-spider", "radiological_gradings.csv with a grade of 3.5")
def _spider_pfirrmann_fraction(ws, d):
    src = _spider(d, gradings=["9,1,0,0,0,0,0,0,0,3.5"])
    return refused(_convert(ws, d, src), ["radiological_gradings.csv"],
                   ["line 2: Pfirrman grade"])


@case("convert-spider", "radiological_gradings.csv without the Pfirrmann column")
def _spider_gradings_missing_column(ws, d):
    src = _spider(d)
    text = (src / "radiological_gradings.csv").read_text().replace(",Pfirrman grade", "")
    (src / "radiological_gradings.csv").write_text(text)
    return refused(_convert(ws, d, src), ["radiological_gradings.csv"], ["Pfirrman grade"])


@case("convert-spider", "radiological_gradings.csv is empty (0 bytes)")
def _spider_gradings_empty(ws, d):
    src = _spider(d)
    (src / "radiological_gradings.csv").write_bytes(b"")
    return refused(_convert(ws, d, src), ["radiological_gradings.csv"], ["Patient"])


@case("convert-spider", "overview.csv missing")
def _spider_no_overview(ws, d):
    src = _spider(d)
    (src / "overview.csv").unlink()
    return refused(_convert(ws, d, src), ["overview.csv"])


@case("convert-spider", "overview.csv without new_file_name")
def _spider_overview_no_name_column(ws, d):
    src = _spider(d)
    (src / "overview.csv").write_text("file,PixelSpacing\n9_t2_SPACE,\"[0.5, 0.5]\"\n")
    return refused(_convert(ws, d, src), ["overview.csv"], ["new_file_name"])


@case("convert-spider", "overview.csv PixelSpacing [469, 469]: the patient's slices skipped "
                        "and listed in issues.csv")
def _spider_overview_spacing_469(ws, d):
    run = _convert(ws, d, _spider(d, pixel_spacing="[469, 469]"))

    def check(r):
        issues = (d / "out" / "issues.csv").read_text()
        if "9_t2_SPACE_slice5.png" not in issues or "469 mm" not in issues \
                or "PixelSpacing" not in issues:
            return f"issues.csv does not name the file, field and value: {issues!r:.200}"
        if list((d / "out").rglob("*.json")) != [d / "out" / "conversion_summary.json"]:
            return "a LabelMe file was written for the skipped slice"
        return None
    return accepted(run, check)


@case("convert-spider", "a mask with values outside SPIDER's (0, 29, 100+, 201+): skipped "
                        "and listed in issues.csv")
def _spider_mask_bad_values(ws, d):
    run = _convert(ws, d, _spider(d, mask=np.full((SIDE, SIDE), 7, np.uint8)))

    def check(r):
        issues = (d / "out" / "issues.csv").read_text()
        if "9_t2_SPACE_slice5.png" not in issues or "mask values [7]" not in issues:
            return f"issues.csv does not name the file and values: {issues!r:.200}"
        return None
    return accepted(run, check)


@case("convert-spider", "--out is a file")
def _spider_out_is_a_file(ws, d):
    (d / "afile").write_text("keep")
    return refused(_convert(ws, d, _spider(d), out=d / "afile"), ["afile"], ["--out"])


@case("convert-spider", "--out is under a file")
def _spider_out_under_a_file(ws, d):
    (d / "afile").write_text("keep")
    return refused(_convert(ws, d, _spider(d), out=d / "afile" / "out"), ["afile"], ["--out"])


# === spoils decide ===
@case("decide", "--config is not valid JSON")
def _decide_config_bad_json(ws, d):
    return refused(_decide_config(ws, d, '{"odi_bands": [}'), ["decision.json"], ["JSON"])


@case("decide", "--config: odi_bands of the wrong type (5)")
def _decide_config_wrong_type(ws, d):
    return refused(_decide_config(ws, d, '{"odi_bands": 5}'), ["decision.json"], ["odi_bands"])


@case("decide", "--config: a band bound that is a string")
def _decide_config_wrong_inner_type(ws, d):
    text = json.dumps({"odi_bands": [["low", "fifty", "x"], ["high", 100, "y"]]})
    return refused(_decide_config(ws, d, text), ["decision.json"], ["odi_bands[0][1]"])


@case("decide", "--config: an unknown key")
def _decide_config_unknown_key(ws, d):
    return refused(_decide_config(ws, d, '{"no_such_key": 1}'), ["decision.json"],
                   ["no_such_key"])


@case("decide", "--config: a rule of the wrong type")
def _decide_config_rule_type(ws, d):
    return refused(_decide_config(ws, d, '{"rules": [{"id": 7}]}'), ["decision.json"],
                   ["rules[0].id"])


@case("decide", "--config: a JSON list at the top level")
def _decide_config_list(ws, d):
    return refused(_decide_config(ws, d, "[1, 2]"), ["decision.json"])


@case("decide", "--config does not exist")
def _decide_config_missing(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5=4M", "--odi", "45", "--nrs", "7",
                           "--config", d / "nope.json"), ["nope.json"])


@case("decide", "--odi 101")
def _decide_odi_101(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5=4M", "--odi", "101", "--nrs", "7"),
                   ["ODI", "odi"], ["101"])


@case("decide", "--odi nan")
def _decide_odi_nan(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5=4M", "--odi", "nan", "--nrs", "7"),
                   ["ODI", "odi"], ["nan"])


@case("decide", "--nrs -1")
def _decide_nrs_negative(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5=4M", "--odi", "45", "--nrs", "-1"),
                   ["NRS", "nrs"], ["-1"])


@case("decide", "--nrs 7.5")
def _decide_nrs_fraction(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5=4M", "--odi", "45", "--nrs", "7.5"),
                   ["NRS", "nrs"], ["7.5"])


@case("decide", "--nrs missing (half of the scores)")
def _decide_nrs_missing(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5=4M", "--odi", "45"), ["--nrs"])


@case("decide", "--class L4-L5=9X (unknown grade class)")
def _decide_unknown_class(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5=9X", "--odi", "45", "--nrs", "7"),
                   ["--class", "discs"], ["9X"])


@case("decide", "--class L9-L10=3M (unknown level)")
def _decide_unknown_level(ws, d):
    return refused(_decide(ws, d, "--class", "L9-L10=3M", "--odi", "45", "--nrs", "7"),
                   ["--class", "discs"], ["L9-L10"])


@case("decide", "--class without '='")
def _decide_class_no_equals(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5", "--odi", "45", "--nrs", "7"),
                   ["--class"], ["LEVEL=CLASS"])


@case("decide", "the same level given twice with different classes")
def _decide_level_twice(ws, d):
    return refused(_decide(ws, d, "--class", "L4-L5=2L", "--class", "L4-L5=5H", "--odi", "45",
                           "--nrs", "7"), ["--class", "discs"], ["L4-L5"])


@case("decide", "no --class at all")
def _decide_no_class(ws, d):
    return refused(_decide(ws, d, "--odi", "45", "--nrs", "7"), ["--class"])


@case("decide", "--odi 100 --nrs 0 (the bounds): accepted")
def _decide_bounds(ws, d):
    from spoils_tf.clinical import rules
    run = _decide(ws, d, "--class", "L4-L5=4M", "--odi", "100", "--nrs", "0")

    def check(r):
        want = rules.decide({"L4-L5": "4M"}, 100, 0).summary()
        return None if r.stdout.strip() == want.strip() else \
            f"printed {r.stdout!r:.120}, rules.decide gives {want!r:.120}"
    return accepted(run, check)


# === spoils features ===
@case("features", "--data is an empty folder (no labelme/)")
def _features_empty_folder(ws, d):
    (d / "data").mkdir()
    return refused(_features(ws, d, d / "data"), ["data"], ["labelme/"])


@case("features", "--data has an empty labelme/ folder")
def _features_empty_labelme(ws, d):
    (d / "data" / "labelme").mkdir(parents=True)
    return refused(_features(ws, d, d / "data"), ["labelme"])


@case("features", "patients.csv without the pixel spacing columns")
def _features_patients_no_columns(ws, d):
    data = _dataset(d, "patient,sex\nP1,F\n")
    return refused(_features(ws, d, data), ["patients.csv"], ["pixel_spacing_row_mm"])


@case("features", "patients.csv without the patient column")
def _features_patients_no_patient(ws, d):
    data = _dataset(d, "id,pixel_spacing_row_mm,pixel_spacing_col_mm\nP1,0.5,0.5\n")
    return refused(_features(ws, d, data), ["patients.csv"], ["patient"])


@case("features", "patients.csv row with pixel spacing 469")
def _features_patients_469(ws, d):
    data = _dataset(d, "patient,pixel_spacing_row_mm,pixel_spacing_col_mm\nP1,469,469\n")
    return refused(_features(ws, d, data), ["patients.csv"], ["line 2"])


@case("features", "patients.csv lists a patient twice")
def _features_patients_twice(ws, d):
    data = _dataset(d, "patient,pixel_spacing_row_mm,pixel_spacing_col_mm\n"
                       "P1,0.5,0.5\nP1,0.6,0.6\n")
    return refused(_features(ws, d, data), ["patients.csv"], ["line 3: patient"])


@case("features", "patients.csv slice_spacing_mm 'abc'")
def _features_patients_bad_slice_spacing(ws, d):
    data = _dataset(d, "patient,pixel_spacing_row_mm,pixel_spacing_col_mm,slice_spacing_mm\n"
                       "P1,0.5,0.5,abc\n")
    return refused(_features(ws, d, data), ["patients.csv"], ["line 2: slice_spacing_mm"])


@case("features", "patients.csv is empty (0 bytes)")
def _features_patients_empty(ws, d):
    data = _dataset(d, "")
    return refused(_features(ws, d, data), ["patients.csv"], ["patient"])


@case("features", "patients.csv is not UTF-8")
def _features_patients_binary(ws, d):
    data = _dataset(d)
    (data / "patients.csv").write_bytes(b"patient,pixel_spacing_row_mm\n\xff\xfe\x00P1,0.5\n")
    return refused(_features(ws, d, data), ["patients.csv"])


@case("features", "--out does not end in .parquet")
def _features_out_not_parquet(ws, d):
    data = _dataset(d, "patient,pixel_spacing_row_mm,pixel_spacing_col_mm\nP1,0.5,0.5\n")
    return refused(_features(ws, d, data, out=d / "features.csv"), ["features.csv"], ["--out"])


@case("features", "--out is under a file")
def _features_out_under_a_file(ws, d):
    (d / "afile").write_text("keep")
    data = _dataset(d, "patient,pixel_spacing_row_mm,pixel_spacing_col_mm\nP1,0.5,0.5\n")
    return refused(_features(ws, d, data, out=d / "afile" / "f.parquet"), ["afile"], ["--out"])


@case("features", "--out names an existing folder")
def _features_out_is_a_folder(ws, d):
    (d / "f.parquet").mkdir()
    data = _dataset(d, "patient,pixel_spacing_row_mm,pixel_spacing_col_mm\nP1,0.5,0.5\n")
    return refused(_features(ws, d, data, out=d / "f.parquet"), ["f.parquet"], ["--out"])


@case("features", "a LabelMe file with bad JSON among good ones: listed as skipped, the "
                  "rest measured")
def _features_bad_labelme_in_batch(ws, d):
    data = _dataset(d, "patient,pixel_spacing_row_mm,pixel_spacing_col_mm\nP1,0.5,0.5\n")
    (data / "labelme" / "broken.json").write_text("{not json")
    run = _features(ws, d, data)

    def check(r):
        issues = (d / "features_issues.csv").read_text()
        if "broken.json" not in issues or "invalid JSON" not in issues:
            return f"features_issues.csv does not list broken.json: {issues!r:.200}"
        if "broken.json" not in r.stderr:
            return "stderr does not name broken.json"
        return None
    return accepted(run, check, codes=(EXIT_OK, EXIT_PARTIAL))


# === LabelMe reader ===
@case("labelme", "file does not exist")
def _lm_missing(ws, d):
    return refused(_read_labelme(ws, d, d / "nope.json"), ["nope.json"], ["json"])


@case("labelme", "empty (0-byte) file")
def _lm_empty(ws, d):
    (d / "empty.json").write_bytes(b"")
    return refused(_read_labelme(ws, d, d / "empty.json"), ["empty.json"], ["json"])


@case("labelme", "bad JSON")
def _lm_bad_json(ws, d):
    (d / "bad.json").write_text('{"shapes": [')
    return refused(_read_labelme(ws, d, d / "bad.json"), ["bad.json"], ["json"])


@case("labelme", "a JSON list at the top level")
def _lm_top_level_list(ws, d):
    (d / "list.json").write_text("[]")
    return refused(_read_labelme(ws, d, d / "list.json"), ["list.json"], ["json"])


@case("labelme", "no shapes key")
def _lm_no_shapes(ws, d):
    path = _labelme(d)
    doc = json.loads(path.read_text())
    del doc["shapes"]
    path.write_text(json.dumps(doc))
    return refused(_read_labelme(ws, d, path), ["slice.json"], ["shapes"])


@case("labelme", "shapes is not a list")
def _lm_shapes_not_list(ws, d):
    return refused(_read_labelme(ws, d, _labelme(d, shapes={"a": 1})), ["slice.json"],
                   ["shapes"])


@case("labelme", "no imagePath and no imageData")
def _lm_no_image_path(ws, d):
    path = _labelme(d)
    doc = json.loads(path.read_text())
    del doc["imagePath"]
    path.write_text(json.dumps(doc))
    return refused(_read_labelme(ws, d, path), ["slice.json"], ["imagePath"])


@case("labelme", "imagePath names a file that does not exist")
def _lm_image_path_missing(ws, d):
    return refused(_read_labelme(ws, d, _labelme(d, imagePath="gone.png")), ["slice.json"],
                   ["imagePath"])


@case("labelme", "imagePath outside the dataset (../../etc/passwd)")
def _lm_image_path_outside(ws, d):
    return refused(_read_labelme(ws, d, _labelme(d, imagePath="../../../../etc/passwd")),
                   ["slice.json"], ["imagePath"])


@case("labelme", "unknown label")
def _lm_unknown_label(ws, d):
    path = _labelme(d, shapes=[_rect("L4-L5", 2, 2, 8, 6), _rect("kidney", 1, 1, 4, 4)])
    return refused(_read_labelme(ws, d, path), ["slice.json"], ["shapes[1]"])


@case("labelme", "label that is a number")
def _lm_label_number(ws, d):
    shape = _rect("L4-L5", 2, 2, 8, 6)
    shape["label"] = 7
    return refused(_read_labelme(ws, d, _labelme(d, shapes=[shape])), ["slice.json"],
                   ["shapes[0]"])


@case("labelme", "a vertex at x = 1e12")
def _lm_vertex_far_outside(ws, d):
    path = _labelme(d, shapes=[_rect("L4-L5", 2, 2, 8, 6), _rect("S1", 0, 0, 1e12, 10)])
    return refused(_read_labelme(ws, d, path), ["slice.json"], ["shapes[1].points[1]"])


@case("labelme", "a vertex NaN")
def _lm_vertex_nan(ws, d):
    path = d / "slice.json"
    _labelme(d)
    path.write_text(path.read_text().replace("[8, 6]", "[NaN, 6]"))
    return refused(_read_labelme(ws, d, path), ["slice.json"], ["shapes[0].points"])


@case("labelme", "a polygon of 2 points")
def _lm_too_few_points(ws, d):
    shape = {"label": "L4-L5", "points": [[1, 1], [5, 5]], "group_id": None,
             "shape_type": "polygon", "flags": {}}
    return refused(_read_labelme(ws, d, _labelme(d, shapes=[shape])), ["slice.json"],
                   ["shapes[0].points"])


@case("labelme", "shape_type 'cuboid'")
def _lm_unknown_shape_type(ws, d):
    shape = _rect("L4-L5", 2, 2, 8, 6, shape_type="cuboid")
    return refused(_read_labelme(ws, d, _labelme(d, shapes=[shape])), ["slice.json"],
                   ["shapes[0].shape_type"])


@case("labelme", "imageData that is not base64")
def _lm_image_data_not_base64(ws, d):
    return refused(_read_labelme(ws, d, _labelme(d, imageData="%%%not base64%%%")),
                   ["slice.json"], ["imageData"])


@case("labelme", "imageData: valid base64 of a text, not an image")
def _lm_image_data_not_image(ws, d):
    data = base64.b64encode(b"hello, not a png").decode()
    return refused(_read_labelme(ws, d, _labelme(d, imageData=data)), ["slice.json"],
                   ["imageData"])


@case("labelme", "imageData: a PNG header claiming 5000x5000")
def _lm_image_data_huge(ws, d):
    png = _png_header_only(d / "huge.png", 5000, 5000)
    data = base64.b64encode(png.read_bytes()).decode()
    return refused(_read_labelme(ws, d, _labelme(d, imageData=data)), ["slice.json"],
                   ["imageData"])


@case("labelme", "imageHeight disagrees with the image")
def _lm_image_height_wrong(ws, d):
    return refused(_read_labelme(ws, d, _labelme(d, imageHeight=999)), ["slice.json"],
                   ["imageHeight"])


@case("labelme", "spoils.pixel_spacing_mm [469, 469]")
def _lm_spacing_469(ws, d):
    path = _labelme(d, spoils={"pixel_spacing_mm": [469, 469]})
    return refused(_read_labelme(ws, d, path), ["slice.json"], ["spoils.pixel_spacing_mm"])


@case("labelme", "spoils.pixel_spacing_mm [-0.5, 0.5]")
def _lm_spacing_negative(ws, d):
    path = _labelme(d, spoils={"pixel_spacing_mm": [-0.5, 0.5]})
    return refused(_read_labelme(ws, d, path), ["slice.json"], ["spoils.pixel_spacing_mm"])


@case("labelme", "spoils.pixel_spacing_mm 'half a mm' (a string)")
def _lm_spacing_string(ws, d):
    path = _labelme(d, spoils={"pixel_spacing_mm": "half a mm"})
    return refused(_read_labelme(ws, d, path), ["slice.json"], ["spoils.pixel_spacing_mm"])


@case("labelme", "the image file is a colour PNG")
def _lm_colour_image(ws, d):
    path = _labelme(d)
    _colour_png(d / "slice.png")
    doc = json.loads(path.read_text())
    doc["imageHeight"], doc["imageWidth"] = SIDE, SIDE - 16
    path.write_text(json.dumps(doc))
    return refused(_read_labelme(ws, d, path), ["slice.png", "slice.json"], ["colour"])


@case("labelme", "a vertex a little outside the image: clipped, 50 px painted")
def _lm_vertex_little_outside(ws, d):
    # corners (-3, -3) and (9, 4) on a 20 x 30 image: rows 0..4 x columns 0..9 = 50 pixels
    path = _labelme(d, shapes=[_rect("L4-L5", -3, -3, 9, 4)])
    run = _read_labelme(ws, d, path)

    def check(r):
        from spoils_tf import labels
        mask = np.asarray(r.value.mask)
        n = int((mask == labels.SEG_ID["L4-L5"]).sum())
        return None if n == 50 and (mask[:5, :10] != 0).all() else f"{n} px painted, not 50"
    return accepted(run, check)


# === Clinical inputs: MR weighting, orientation, stacks, DICOM/NIfTI oddities ===
T1_HEADER = {"EchoTime": 12, "RepetitionTime": 550, "SeriesDescription": "sag T1 tse"}
T2_HEADER = {"EchoTime": 100, "RepetitionTime": 3500, "SeriesDescription": "sag T2 tse"}
NOT_GRADED = "-weighted: grades not computed"


def _synthetic_series(ws: Workspace, folder: pathlib.Path, n: int = 3, *,
                      iop=SAGITTAL_IOP, transpose: bool = False, **kwargs) -> pathlib.Path:
    """The synthetic 256 px slice as an ``n``-file sagittal DICOM series (1.2 mm pixels unless
    ``pixel_spacing`` is given); ``transpose`` stores it with rows and columns swapped (give
    the matching ``iop``)."""
    image, _ = ws.synthetic_case
    pixels = (image.T if transpose else image).astype(np.uint16) * 4
    folder.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("pixel_spacing", (1.2, 1.2))
    for k in range(n):
        _dicom_writer().write_mr_slice(folder / f"im{k:03d}.dcm", pixels, k, iop=iop, phi={},
                                       **kwargs)
    return folder


def _mask_png(ws: Workspace, d: pathlib.Path) -> pathlib.Path:
    return _png(d / "mask.png", ws.synthetic_case[1].astype(np.uint8))


def _predict_series(ws: Workspace, d: pathlib.Path, series: pathlib.Path, *args) -> Run:
    """``spoils predict`` on a DICOM series / volume with the synthetic mask and the tiny
    bundle (no grade classifier: the decision reports why)."""
    return _predict(ws, d, "--input", series, "--mask", _mask_png(ws, d), "--odi", "40",
                    "--nrs", "6", *args, models=ws.models.bundle, spacing=None)


def _report(d: pathlib.Path) -> dict:
    return json.loads((d / "out" / "report.json").read_text())


def _not_graded_check(d: pathlib.Path, weighting: str) -> Callable[[Run], Optional[str]]:
    """The report of a series that is not T2: weighting named, no grade, no recommendation,
    and the page says so."""
    def check(r):
        rep = _report(d)
        w = rep["input"].get("weighting", {})
        if w.get("weighting") != weighting or w.get("graded") is not False:
            return f"input.weighting is {w}"
        if rep["recommendation"] is not None:
            return "a recommendation was given"
        if not str(rep["recommendation_note"]).startswith(weighting + NOT_GRADED):
            return f"recommendation_note: {rep['recommendation_note']!r:.80}"
        if weighting + NOT_GRADED not in rep["status_message"]:
            return f"status_message: {rep['status_message']!r}"
        if any(disc.get("predicted_class") for disc in rep["discs"]) or not rep["discs"]:
            return "discs missing or graded"
        if weighting + NOT_GRADED not in (d / "out" / "report.html").read_text():
            return "the page does not say the grades were not computed"
        return None
    return check


@case("predict", "DICOM series, T1-weighted (EchoTime 12 ms, RepetitionTime 550 ms): measured, "
                 "not graded, no recommendation")
def _dicom_t1_series(ws, d):
    series = _synthetic_series(ws, d / "t1", extra=T1_HEADER)
    return accepted(_predict_series(ws, d, series), _not_graded_check(d, "T1"))


@case("predict", "DICOM series described 'SAG STIR', no timings: STIR, not graded")
def _dicom_stir_description(ws, d):
    series = _synthetic_series(ws, d / "stir", extra={"SeriesDescription": "SAG STIR"})
    return accepted(_predict_series(ws, d, series), _not_graded_check(d, "STIR"))


@case("predict", "folder with a T1 sagittal series (5 files) and a T2 one (3 files): the T2 is "
                 "used, both listed")
def _dicom_t1_and_t2_folder(ws, d):
    study = d / "study"
    _synthetic_series(ws, study / "a", n=5, extra=T1_HEADER, series_number=3,
                      series_uid="1.2.826.0.1.3680043.8.498.31")
    _synthetic_series(ws, study / "b", n=3, extra=T2_HEADER, series_number=4,
                      series_uid="1.2.826.0.1.3680043.8.498.32")
    run = _predict_series(ws, d, study)

    def check(r):
        rep = _report(d)
        notes = " ".join(rep["input"]["reader_notes"])
        if rep["input"]["weighting"]["weighting"] != "T2" or rep["input"]["n_slices_total"] != 3:
            return f"used {rep['input']['weighting']}, {rep['input']['n_slices_total']} slices"
        if "series #3 (5 files, sagittal, T1)" not in notes or "used series #4" not in notes:
            return f"reader notes: {notes!r:.120}"
        return None
    return accepted(run, check)


@case("predict", "one series holding an axial and a sagittal stack (a localizer): the "
                 "sagittal stack is used")
def _dicom_two_planes_one_series(ws, d):
    series = _synthetic_series(ws, d / "loc", n=3, extra=T2_HEADER)
    for k in range(4):
        _dicom(series / f"ax{k}.dcm", iop=AXIAL_IOP, k=k)
    run = _predict_series(ws, d, series)

    def check(r):
        notes = " ".join(_report(d)["input"]["reader_notes"])
        return None if "2 stacks" in notes and "used series #2, stack 2 (3 files, sagittal, " \
            "T2)" in notes else f"reader notes: {notes!r:.160}"
    return accepted(run, check)


@case("predict", "DICOM series with one file copied twice (same SOPInstanceUID): the copy is "
                 "skipped and counted")
def _dicom_duplicated_instance(ws, d):
    series = _synthetic_series(ws, d / "dup", n=3, extra=T2_HEADER)
    (series / "copy.dcm").write_bytes((series / "im001.dcm").read_bytes())
    run = _predict_series(ws, d, series)

    def check(r):
        rep = _report(d)
        notes = " ".join(rep["input"]["reader_notes"])
        return None if rep["input"]["n_slices_total"] == 3 and "1 file(s) repeating the " \
            "SOPInstanceUID" in notes else f"{rep['input']['n_slices_total']} slices; {notes!r:.120}"
    return accepted(run, check)


@case("predict", "DICOM series with slices missing (positions 0, 1, 2, 5, 6 x 3 mm): read, "
                 "the gap noted")
def _dicom_missing_slices(ws, d):
    image, _ = ws.synthetic_case
    series = d / "gap"
    series.mkdir()
    for i, k in enumerate((0, 1, 2, 5, 6)):
        _dicom_writer().write_mr_slice(series / f"im{i}.dcm", image.astype(np.uint16) * 4, k,
                                       iop=SAGITTAL_IOP, phi={}, pixel_spacing=(1.2, 1.2),
                                       extra=T2_HEADER)
    run = _predict_series(ws, d, series)

    def check(r):
        notes = " ".join(_report(d)["input"]["reader_notes"])
        return None if "about 2 slice(s) missing" in notes else f"reader notes: {notes!r:.120}"
    return accepted(run, check)


@case("predict", "DICOM series with two files at one position (two echoes, different UIDs)")
def _dicom_two_echoes(ws, d):
    series = d / "echoes"
    for k in range(3):
        _dicom(series / f"e1_{k}.dcm", k=k)
        _dicom(series / f"e2_{k}.dcm", k=k)
    return refused(_predict(ws, d, "--input", series, spacing=None), ["echoes"],
                   ["ImagePositionPatient"])


@case("predict", "DICOM with PixelSpacing 0.6 x 1.2 mm stored transposed: spacing follows the "
                 "transpose")
def _dicom_non_square_pixels(ws, d):
    # rows of the file along +y (posterior, 1.2 mm), columns along -z (feet, 0.6 mm)
    series = _synthetic_series(ws, d / "aniso", n=1, iop=(0, 0, -1, 0, 1, 0), transpose=True,
                               pixel_spacing=(1.2, 0.6), extra=T2_HEADER)
    run = _predict_series(ws, d, series / "im000.dcm")

    def check(r):
        inp = _report(d)["input"]
        if inp["pixel_spacing_mm"] != [0.6, 1.2] or inp["reorientation"] != ["transpose"]:
            return f"spacing {inp['pixel_spacing_mm']}, reorientation {inp['reorientation']}"
        return None
    return accepted(run, check)


@case("predict", "DICOM without ImageOrientationPatient")
def _dicom_no_orientation(ws, d):
    path = _dicom(d / "noiop.dcm")
    _edit_dicom(path, lambda ds: delattr(ds, "ImageOrientationPatient"))
    return refused(_predict(ws, d, "--input", path, spacing=None), ["noiop.dcm"],
                   ["ImageOrientationPatient"])


@case("predict", "RGB DICOM (a secondary-capture screenshot)")
def _dicom_rgb(ws, d):
    path = d / "rgb.dcm"
    _dicom_writer().write_mr_slice(path, np.zeros((SIDE, SIDE), np.uint16), 0, iop=SAGITTAL_IOP,
                                   phi={}, extra={"SamplesPerPixel": 3,
                                                  "PhotometricInterpretation": "RGB"})
    return refused(_predict(ws, d, "--input", path, spacing=None), ["rgb.dcm"],
                   ["SamplesPerPixel"])


@case("predict", "multi-frame (enhanced) MR DICOM, NumberOfFrames 3")
def _dicom_multiframe(ws, d):
    path = _dicom(d / "enhanced.dcm", extra={"NumberOfFrames": 3})
    return refused(_predict(ws, d, "--input", path, spacing=None), ["enhanced.dcm"],
                   ["NumberOfFrames"])


@case("predict", "DICOM compressed as JPEG Lossless with no decoder installed")
def _dicom_jpeg_lossless_no_decoder(ws, d):
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    uid = "1.2.840.10008.1.2.4.70"
    path = _dicom(d / "jpegll.dcm")

    def compress(ds):
        ds.file_meta.TransferSyntaxUID = uid
        ds.PixelData = encapsulate([b"\xff\xd8" + bytes(100)])
        ds["PixelData"].VR = "OB"
    _edit_dicom(path, compress)
    field = "PixelData" if get_decoder(uid).is_available else "TransferSyntaxUID"
    return refused(_predict(ws, d, "--input", path, spacing=None), ["jpegll.dcm"], [field])


@case("predict", "DICOM file truncated in its pixel data")
def _dicom_truncated(ws, d):
    path = _dicom(d / "cut.dcm")
    _truncate(path)
    return refused(_predict(ws, d, "--input", path, spacing=None), ["cut.dcm"], ["PixelData"])


def _nifti_volume(ws: Workspace, path: pathlib.Path, *, flip_lr: bool = True,
                  shape4d: bool = False) -> pathlib.Path:
    """The synthetic slice as a 3-slice sagittal NIfTI (nibabel, RAS affine, 3 mm slices):
    file axis 0 along left-right (towards the right when ``flip_lr``), axis 1 towards
    anterior, axis 2 towards the feet, so the reader must flip the columns back (display
    column c is file index 255 - c) and keep the rows (display row r is file index r)."""
    import nibabel as nib
    image, _ = ws.synthetic_case
    plane = image[:, ::-1].T                 # [file y (towards anterior), file z (to the feet)]
    data = np.stack([plane] * 3).astype(np.int16)
    affine = np.diag([-3.0 if flip_lr else 3.0, 1.2, -1.2, 1.0])
    affine[:3, 3] = [0.0, -150.0, 150.0]
    if shape4d:
        data = np.stack([data, data], axis=-1)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@case("predict", ".nii.gz sagittal volume stored with x to the right, y anterior, z to the "
                 "feet (nibabel affine): flipped upright, as the mask")
def _nifti_gz_flipped(ws, d):
    path = _nifti_volume(ws, d / "sag.nii.gz")
    run = _predict_series(ws, d, path)

    def check(r):
        rep = _report(d)
        inp = rep["input"]
        if inp["kind"] != "volume" or not np.allclose(inp["pixel_spacing_mm"], 1.2):
            return f"kind {inp['kind']}, spacing {inp['pixel_spacing_mm']}"
        got = np.asarray(PIL.Image.open(d / "out" / "input.png"))
        image = ws.synthetic_case[0]
        if np.corrcoef(got.ravel().astype(float), image.ravel().astype(float))[0, 1] < 0.99:
            return "the slice read is not the synthetic slice upright"
        if inp["weighting"]["weighting"] != "unknown" or rep["status"] != "ok":
            return f"weighting {inp['weighting']}, status {rep['status']}"
        return None
    return accepted(run, check)


@case("predict", ".nii volume with a dcm2niix sidecar .json saying T1 (EchoTime 0.012 s)")
def _nifti_sidecar_t1(ws, d):
    path = _nifti_volume(ws, d / "sag.nii")
    (d / "sag.json").write_text(json.dumps({"EchoTime": 0.012, "RepetitionTime": 0.55}))
    return accepted(_predict_series(ws, d, path), _not_graded_check(d, "T1"))


@case("predict", ".nii.gz with a sidecar .json that is not JSON")
def _nifti_sidecar_broken(ws, d):
    path = _nifti_volume(ws, d / "vol.nii.gz")
    (d / "vol.json").write_text("{EchoTime: 0.1")
    return refused(_predict(ws, d, "--input", path, spacing=None), ["vol.json"])


@case("predict", "4-D NIfTI (two volumes)")
def _nifti_4d(ws, d):
    path = _nifti_volume(ws, d / "dyn.nii.gz", shape4d=True)
    return refused(_predict(ws, d, "--input", path, spacing=None), ["dyn.nii.gz"],
                   ["4-D", "3-D"])


@case("predict", "NIfTI with qform_code = sform_code = 0 (no orientation)")
def _nifti_no_orientation(ws, d):
    path = _nifti_volume(ws, d / "bare.nii")
    data = bytearray(path.read_bytes())
    data[252:256] = np.asarray([0, 0], "<i2").tobytes()
    path.write_bytes(bytes(data))
    return refused(_predict(ws, d, "--input", path, spacing=None), ["bare.nii"],
                   ["qform_code"])


@case("predict", "axial NIfTI volume (thick slices along head-foot)")
def _nifti_axial(ws, d):
    import nibabel as nib
    path = d / "axial.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((SIDE, SIDE, 5), np.int16),
                             np.diag([0.5, 0.5, 4.0, 1.0])), str(path))
    return refused(_predict(ws, d, "--input", path, spacing=None), ["axial.nii.gz"],
                   ["axial"])


# a real SPIDER slice (patient 107's middle slice), when ../shared is there
REAL_SLICE = REPO.parent / "shared" / "data" / "spider_t2space" / "images" / \
    "107_t2_SPACE_slice60.png"
REAL_SPACING_MM = ("0.46875", "0.46875")      # overview.csv PixelSpacing of patient 107


def _shipped_on_turned_png(ws: Workspace, d: pathlib.Path, turn: str) -> dict:
    """The real slice given ``turn``ed (``levels.ORIENTATIONS``) to ``spoils predict`` with the
    shipped bundle: its orientation network must correct it (noted in the report) or refuse
    it naming the orientation."""
    from spoils_tf import levels, weights
    from spoils_tf.serve import segmenter
    grey = np.asarray(PIL.Image.open(REAL_SLICE))
    grey = grey if grey.ndim == 2 else grey[..., 0]
    path = _png(d / f"{turn}.png", np.ascontiguousarray(levels.orient(grey, turn)))
    run = _predict(ws, d, "--input", path, "--pixel-spacing", *REAL_SPACING_MM,
                   models=weights.DEFAULT_BUNDLE, spacing=None)
    if run.code == EXIT_BAD_INPUT:
        return refused(run, [path.name], ["orientation"])
    words = segmenter.ORIENTATION_WORDS[turn]

    def check(r):
        notes = " ".join(_report(d)["notes"])
        return None if f"was given {words}; corrected" in notes else \
            f"no correction of '{words}' noted: {notes!r:.160}"
    return accepted(run, check, codes=(EXIT_OK, EXIT_NO_DISC))


if REAL_SLICE.is_file():
    @case("predict", "real SPIDER slice as a PNG mirrored left-right (anterior on the right), "
                     "shipped bundle")
    def _png_mirrored_shipped(ws, d):
        return _shipped_on_turned_png(ws, d, "flip_lr")

    @case("predict", "real SPIDER slice as a PNG rotated by 180 degrees, shipped bundle")
    def _png_rot180_shipped(ws, d):
        return _shipped_on_turned_png(ws, d, "rot180")


# === spoils serve (the web page, FastAPI TestClient) ===
HAS_WEB = (importlib.util.find_spec("fastapi") is not None
           and (REPO / "spoils_tf" / "serve" / "web.py").is_file())
WEB_MAX_UPLOAD_BYTES = 3_000_000        # the limit of the catalogue's app (413 above)


def _web_post(ws: Workspace, d: pathlib.Path, files: Sequence[tuple[str, bytes]],
              **fields: str) -> Run:
    """``POST /api/report`` with ``files`` (name, bytes) under the form's ``files`` field;
    the record's code is the HTTP status and its stderr the JSON error."""
    files_arg = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return ws.web_post(d, files_arg, dict(fields))


def _web_refused(ws: Workspace, d: pathlib.Path, files, names, fields=(), status=400,
                 **form) -> dict:
    return refused(_web_post(ws, d, files, **form), names, fields, codes=(status,))


def _dicom_zip(paths: Sequence[pathlib.Path], arcnames: Optional[Sequence[str]] = None) -> bytes:
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, p in enumerate(paths):
            z.writestr(arcnames[i] if arcnames else f"series/{p.name}", p.read_bytes())
    return buf.getvalue()


if HAS_WEB:
    @case("web", "empty (0-byte) file uploaded")
    def _web_empty_file(ws, d):
        return _web_refused(ws, d, [("empty.dcm", b"")], ["empty.dcm"])

    @case("web", "PNG uploaded under the name scan.dcm (wrong extension)")
    def _web_wrong_extension(ws, d):
        buf = io.BytesIO()
        PIL.Image.fromarray(_grey()).save(buf, format="PNG")
        return _web_refused(ws, d, [("scan.dcm", buf.getvalue())], ["scan.dcm"])

    @case("web", "PNG slice without a pixel spacing in the form")
    def _web_png_without_spacing(ws, d):
        png = _png(d / "src" / "slice.png", ws.synthetic_case[0])
        return _web_refused(ws, d, [("slice.png", png.read_bytes())], ["slice.png"],
                            ["pixel spacing", "pixel_spacing"], status=422)

    @case("web", "DICOM file truncated in its pixel data")
    def _web_truncated_dicom(ws, d):
        path = _dicom(d / "src" / "cut.dcm")
        _truncate(path)
        return _web_refused(ws, d, [("cut.dcm", path.read_bytes())], ["cut.dcm"],
                            ["PixelData"], status=422)

    @case("web", "zip whose member is ../../evil.dcm (path traversal)")
    def _web_zip_traversal(ws, d):
        path = _dicom(d / "src" / "a.dcm")
        data = _dicom_zip([path], ["../../evil.dcm"])
        return _web_refused(ws, d, [("series.zip", data)], ["series.zip"], ["../../evil.dcm"])

    @case("web", f"upload over the app's limit ({WEB_MAX_UPLOAD_BYTES / 1e6:g} MB)")
    def _web_over_limit(ws, d):
        big = np.random.default_rng(0).integers(0, 255, WEB_MAX_UPLOAD_BYTES + 10_000,
                                                np.uint8).tobytes()
        run = _web_post(ws, d, [("big.nii.gz", big)])
        # refused from Content-Length, before any file name is read: the message names the
        # upload and the limit
        return refused(run, ["the upload"], ["MB"], codes=(413,))

    @case("web", "NRS 11 (out of 0..10)")
    def _web_nrs_11(ws, d):
        png = _png(d / "src" / "s.png", ws.synthetic_case[0])
        return _web_refused(ws, d, [("s.png", png.read_bytes())], ["nrs"], ["nrs"],
                            nrs="11", odi="40")

    @case("web", "ODI 120 % (over 100)")
    def _web_odi_120(ws, d):
        png = _png(d / "src" / "s.png", ws.synthetic_case[0])
        return _web_refused(ws, d, [("s.png", png.read_bytes())], ["odi"], ["odi"],
                            nrs="5", odi="120")

    @case("web", "ODI questionnaire with only 5 of 10 sections answered")
    def _web_odi_too_few_sections(ws, d):
        png = _png(d / "src" / "s.png", ws.synthetic_case[0])
        sections = {f"odi_section_{k}": "2" for k in range(1, 6)}
        return _web_refused(ws, d, [("s.png", png.read_bytes())], ["odi sections"],
                            ["answered", "sections"], nrs="5", **sections)

    @case("web", "ODI given both as a percentage and as sections")
    def _web_odi_both_ways(ws, d):
        png = _png(d / "src" / "s.png", ws.synthetic_case[0])
        sections = {f"odi_section_{k}": "2" for k in range(1, 11)}
        return _web_refused(ws, d, [("s.png", png.read_bytes())], ["odi"], ["both"],
                            nrs="5", odi="40", **sections)

    @case("web", "zip of an axial DICOM series")
    def _web_axial_zip(ws, d):
        paths = [_dicom(d / "src" / f"ax{k}.dcm", iop=AXIAL_IOP, k=k) for k in range(3)]
        # the web app names a zip's series as "the uploaded DICOM series (N files)"
        return _web_refused(ws, d, [("axial.zip", _dicom_zip(paths))],
                            ["axial.zip", "the uploaded DICOM series"], ["axial", "sagittal"],
                            status=422)

    @case("web", "zip of a T1 DICOM series (+ ODI 40, NRS 6): the page says T1, grades not "
                 "computed")
    def _web_t1_zip(ws, d):
        series = _synthetic_series(ws, d / "src" / "t1", extra=T1_HEADER)
        data = _dicom_zip(sorted(series.iterdir()))
        run = _web_post(ws, d, [("t1.zip", data)], nrs="6", odi="40")

        def check(r):
            page = r.stdout
            if "MR weighting" not in page or "weighting: T1" not in page:
                return "the page does not show the T1 weighting"
            if "T1" + NOT_GRADED not in page and "no intervertebral disc" not in page:
                return "the page neither says grades not computed nor no disc"
            return None
        return accepted(run, check, codes=(200,))


# === Running the catalogue ===
def run_case(ws: Workspace, c: Case) -> dict[str, Any]:
    """One case's record: the verdict and what was observed, with the case's identity."""
    t0 = time.perf_counter()
    d = ws.folder(c.id)
    try:
        rec = c.run(ws, d)
    except Exception as e:  # noqa: BLE001 - a broken case is reported, the others still run
        rec = {"argv": None, "outcome": "case could not be built", "exit_code": None,
               "exception": type(e).__name__, "message_head": f"{type(e).__name__}: {e}",
               "names_file": None, "names_field": None, "left_behind": [],
               "verdict": f"FAIL (the case itself raised {type(e).__name__}: {e})"}
    root = str(ws.root)
    rec["argv"] = [a.replace(root, "<tmp>") for a in rec["argv"]] if rec["argv"] else None
    rec["message_head"] = rec["message_head"].replace(root, "<tmp>")
    return {"id": c.id, "command": c.command, "case": c.description, **rec,
            "seconds": round(time.perf_counter() - t0, 3)}


def verdict_kind(verdict: str) -> str:
    return "FAIL" if verdict.startswith("FAIL") else verdict


def select(only: Optional[str] = None) -> list[Case]:
    return [c for c in CASES if only is None or only in c.id]


def _md_cell(text: Any, limit: int = 140) -> str:
    s = str(text).replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def markdown(result: dict) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in result["counts"].items())
    lines = [f"# Bad inputs: {result['n_cases']} cases ({counts})", "",
             f"Runtime {result['runtime_s']:.1f} s on {result['machine'].get('cpu_model') or '?'}"
             f" ({result['machine'].get('cpu_count')} CPUs); `{' '.join(result['command'])}`"
             f" at {result['git_commit'] or '?'}.", "",
             "| # | command | case | outcome | message head | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(result["cases"], 1):
        lines.append(f"| {i} | {r['command']} | {_md_cell(r['case'], 90)} | {r['outcome']} | "
                     f"`{_md_cell(r['message_head']).replace('`', '')}` | "
                     f"{_md_cell(r['verdict'], 200)} |")
    return "\n".join(lines) + "\n"


def _machine() -> dict[str, Any]:
    try:
        from spoils_tf.train import common
        return common.machine_info()
    except Exception as e:  # noqa: BLE001 - the record is still useful without it
        return {"error": f"{type(e).__name__}: {e}"}


def _git_commit() -> Optional[str]:
    """The short HEAD commit, with ``+changes`` when tracked files differ from it."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=REPO).returncode
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def run_catalogue(cases: Sequence[Case], root: pathlib.Path) -> dict[str, Any]:
    """Runs ``cases`` under ``root`` (one folder each) and returns the result dict."""
    t0 = time.perf_counter()
    with Workspace(root) as ws:
        records = [run_case(ws, c) for c in cases]
    counts: dict[str, int] = {CLEAR: 0, CORRECT: 0, "FAIL": 0}
    for r in records:
        counts[verdict_kind(r["verdict"])] += 1
    return {"n_cases": len(records), "counts": counts,
            "runtime_s": round(time.perf_counter() - t0, 1), "cases": records}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="run only the cases whose id holds this")
    ap.add_argument("--out-dir", type=pathlib.Path, default=REPO / "benchmarks" / "results",
                    help="where bad_inputs.json and bad_inputs.md go")
    ap.add_argument("--keep", action="store_true", help="keep the temporary case folders")
    args = ap.parse_args(argv)
    cases = select(args.only)
    if not cases:
        ap.error(f"--only {args.only!r} matches no case")
    root = pathlib.Path(tempfile.mkdtemp(prefix="bad_inputs-"))
    try:
        result = run_catalogue(cases, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result.update(command=["tools/bad_inputs.py", *(argv if argv is not None else sys.argv[1:])],
                  git_commit=_git_commit(), machine=_machine())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(args.out_dir / "bad_inputs.json",
                             json.dumps(result, indent=1, default=fileio.json_default) + "\n")
    fileio.atomic_write_text(args.out_dir / "bad_inputs.md", markdown(result))
    for r in result["cases"]:
        if verdict_kind(r["verdict"]) == "FAIL":
            print(f"{r['id']}: {r['verdict']}\n    {r['message_head']}")
    print(f"{result['n_cases']} cases: " + ", ".join(f"{v} {k}" for k, v in
                                                      result["counts"].items())
          + f"; {result['runtime_s']:.1f} s on {result['machine'].get('cpu_model') or '?'}"
          + (f" (kept in {root})" if args.keep else ""))
    print(f"wrote {args.out_dir / 'bad_inputs.json'} and {args.out_dir / 'bad_inputs.md'}")
    return 1 if result["counts"]["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
