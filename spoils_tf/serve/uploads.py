"""Uploaded files -> one input that ``spoils_tf.serve.run.run_predict`` reads, safely.

Used by the web page (``spoils_tf.serve.web``); nothing here imports a web framework.

* :class:`MultipartReceiver` parses a ``multipart/form-data`` body as it streams in
  (``python_multipart``), writing each uploaded file straight into one per-request folder
  under a name of its own (``incoming/0001``...; the user's file name is kept for messages
  only, never used as a path) and counting every byte: more than ``max_bytes`` is
  :class:`UploadTooLarge` at once, before the rest is read.
* :func:`prepare_input` checks what was uploaded by its content (magic bytes, and the name's
  suffix where it has one) and lays it out for the reader: one PNG/JPEG picture, one
  MHA/NIfTI/NRRD volume, one zip archive (unpacked by :func:`extract_zip`), or the DICOM
  files of one series (a folder upload or several files).
* :func:`extract_zip` refuses absolute paths, ``..`` components, links, encrypted members,
  nested archives and more than ``max_extracted_bytes`` unpacked (counted while
  decompressing, not trusted from the archive's directory) or :data:`MAX_ZIP_MEMBERS` members.

Every refusal is an :class:`UploadError` (a ``SpoilsError``) whose message names the file as
the user named it (``name``; ``archive.zip: member 'x'`` inside a zip) and says what was
expected; :class:`UploadTooLarge` (HTTP 413) says which limit and how to raise it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import zipfile
from typing import Optional

from spoils_tf.errors import SpoilsError

MAX_FIELD_BYTES = 10_000       # a form field's value (a number or a word)
MAX_FILES = 5_000              # files in one upload (a DICOM series is a few hundred)
MAX_ZIP_MEMBERS = 5_000
MAX_NAME_CHARS = 200           # a file name as quoted in messages
_CHUNK = 1 << 20

# kind -> suffix given to the file so that ``spoils_tf.serve.inputs`` reads it as that kind
KIND_SUFFIX: dict[str, str] = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm", "zip": ".zip",
                               "nii": ".nii", "nii.gz": ".nii.gz", "mha": ".mha",
                               "nrrd": ".nrrd"}
KIND_NAMES: dict[str, str] = {"png": "PNG image", "jpeg": "JPEG image",
                              "dicom": "DICOM file", "zip": "zip archive",
                              "nii": "NIfTI volume", "nii.gz": "gzipped NIfTI volume",
                              "mha": "MetaImage (MHA) volume", "nrrd": "NRRD volume"}
# name suffix -> the kind its content must be
_SUFFIX_KIND: dict[str, str] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
                                ".dcm": "dicom", ".dicom": "dicom", ".ima": "dicom",
                                ".zip": "zip", ".nii": "nii", ".nii.gz": "nii.gz",
                                ".mha": "mha", ".nrrd": "nrrd"}
ACCEPTED = ("a DICOM series (its folder, its files, or a .zip of them), one DICOM file, "
            "an MHA/NIfTI/NRRD volume (.mha, .nii, .nii.gz, .nrrd), or a PNG/JPEG slice "
            "with its pixel spacing")
PICTURE_KINDS = ("png", "jpeg")
VOLUME_KINDS = ("nii", "nii.gz", "mha", "nrrd")
# files a folder upload or a zip commonly carries besides the images: skipped, not refused
_SKIPPED_NAMES = ("dicomdir", "thumbs.db", "desktop.ini")


class UploadError(SpoilsError):
    """An upload or form refused; ``str(e)`` is the message shown to the user."""
    status_code = 400


class UploadTooLarge(UploadError):
    """An upload over a size limit (HTTP 413)."""
    status_code = 413


def display_name(name: str) -> str:
    """A user-given file name made safe to quote: control characters dropped, cut to
    :data:`MAX_NAME_CHARS`; ``"(unnamed file)"`` when nothing is left."""
    clean = "".join(ch for ch in str(name) if ch.isprintable()).strip()
    if len(clean) > MAX_NAME_CHARS:
        clean = clean[:MAX_NAME_CHARS - 3] + "..."
    return clean or "(unnamed file)"


def mb(n_bytes: int) -> str:
    """``n_bytes`` in MB (10^6 bytes) for messages, e.g. ``"512 MB"``."""
    return f"{n_bytes / 1e6:g} MB"


# === Receiving ===
@dataclasses.dataclass(frozen=True)
class UploadedFile:
    """One received file: ``name`` as the user gave it (for messages only), ``path`` where it
    was written inside the request folder, ``size_bytes``."""
    name: str
    path: pathlib.Path
    size_bytes: int


@dataclasses.dataclass
class ReceivedForm:
    """A parsed form: ``fields`` name -> text (the last value of a repeated name), ``files``
    in the order received (file parts with an empty file name, i.e. no file chosen, left
    out), ``file_fields`` the form field name of each file."""
    fields: dict[str, str]
    files: list[UploadedFile]
    file_fields: list[str]


class MultipartReceiver:
    """Parses a ``multipart/form-data`` body fed in chunks; files go to ``folder/incoming/``.

    ``feed(chunk)`` for each chunk of the body, then ``finish()``. Nothing is written outside
    ``folder`` (the caller removes it). Limits: ``max_bytes`` for the whole body,
    :data:`MAX_FILES` files, :data:`MAX_FIELD_BYTES` per text field.

    Raises (from ``__init__``, ``feed`` or ``finish``):
        UploadTooLarge: the body passed ``max_bytes`` (raised as soon as it does).
        UploadError: not ``multipart/form-data``, no boundary, a malformed body, too many
            files, a text field too long or not UTF-8.
    """

    def __init__(self, content_type: Optional[str], folder: pathlib.Path, *, max_bytes: int):
        from python_multipart.multipart import MultipartParser, parse_options_header
        ctype, params = parse_options_header(content_type or "")
        if ctype != b"multipart/form-data" or b"boundary" not in params:
            raise UploadError(None, None, "the request is not a form upload "
                                          "(multipart/form-data with a boundary); use the page's "
                                          "form")
        self.max_bytes = int(max_bytes)
        self.folder = pathlib.Path(folder) / "incoming"
        self.folder.mkdir(parents=True, exist_ok=False)
        self.received = 0
        self._fields: dict[str, str] = {}
        self._files: list[UploadedFile] = []
        self._file_fields: list[str] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_name = ""
        self._part_filename: Optional[str] = None
        self._part_data = bytearray()
        self._part_file = None
        self._part_path: Optional[pathlib.Path] = None
        self._part_size = 0
        self._n_files = 0
        self._ended = False
        self._parser = MultipartParser(params[b"boundary"], {
            "on_part_begin": self._on_part_begin, "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished, "on_end": self._on_end})

    # --- python_multipart callbacks ---
    def _on_part_begin(self) -> None:
        self._disposition, self._part_name, self._part_filename = b"", "", None
        self._part_data, self._part_file, self._part_path, self._part_size = \
            bytearray(), None, None, 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise UploadError(None, None, "a form part has no field name; use the page's form")
        self._part_name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self._part_filename = options[b"filename"].decode("utf-8", "replace")
            if not self._part_filename:      # an empty file input sends a part without a name
                return
            self._n_files += 1
            if self._n_files > MAX_FILES:
                raise UploadError(None, None, f"more than {MAX_FILES} files uploaded; upload "
                                              "one series (or a .zip of it)")
            self._part_path = self.folder / f"{self._n_files:04d}"
            self._part_file = open(self._part_path, "xb")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_file is not None:
            self._part_file.write(data[start:end])
            self._part_size += end - start
        elif self._part_filename is None:
            self._part_data += data[start:end]
            if len(self._part_data) > MAX_FIELD_BYTES:
                raise UploadError(None, f"{self._part_name}",
                                  f"longer than {MAX_FIELD_BYTES} bytes; expected a short value")

    def _on_part_end(self) -> None:
        if self._part_file is not None:
            self._part_file.close()
            self._part_file = None
            self._files.append(UploadedFile(display_name(self._part_filename or ""),
                                            self._part_path, self._part_size))
            self._file_fields.append(self._part_name)
        elif self._part_filename is None:
            try:
                self._fields[self._part_name] = bytes(self._part_data).decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(None, self._part_name, "not UTF-8 text") from None

    def _on_end(self) -> None:
        self._ended = True

    # --- public ---
    def feed(self, chunk: bytes) -> None:
        """Parses the next chunk of the body (files are written as they arrive)."""
        from python_multipart.exceptions import ParseError
        self.received += len(chunk)
        if self.received > self.max_bytes:
            self.close()
            raise UploadTooLarge(None, None, f"the upload is larger than the limit of "
                                             f"{mb(self.max_bytes)} (spoils serve "
                                             "--max-upload-mb); upload one series, or a smaller "
                                             "file")
        try:
            self._parser.write(chunk)
        except ParseError as e:
            self.close()
            raise UploadError(None, None, f"the form upload is malformed ({e}); use the "
                                          "page's form") from None

    def finish(self) -> ReceivedForm:
        """The parsed form, once the whole body was fed.

        Raises:
            UploadError: the body ended before the form's closing boundary.
        """
        self.close()
        if not self._ended:
            raise UploadError(None, None, "the form upload ended early (incomplete request); "
                                          "try again")
        return ReceivedForm(dict(self._fields), list(self._files), list(self._file_fields))

    def close(self) -> None:
        """Closes a file still open (after an error); safe to call twice."""
        if self._part_file is not None:
            self._part_file.close()
            self._part_file = None


# === What a file is ===
def _suffix(name: str) -> str:
    low = name.lower()
    if low.endswith(".nii.gz"):
        return ".nii.gz"
    return pathlib.PurePosixPath(low.replace("\\", "/")).suffix


def _content_kind(head: bytes, suffix: str) -> Optional[str]:
    """The kind that the first bytes of a file show, or None (no known signature)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head.startswith(b"\x1f\x8b"):
        return "nii.gz" if suffix == ".nii.gz" else None
    if len(head) >= 348 and suffix == ".nii" and (
            int.from_bytes(head[:4], "little") in (348, 540)
            or int.from_bytes(head[:4], "big") in (348, 540)):
        return "nii"
    if suffix == ".mha" and b"NDims" in head[:4096] and b"ElementDataFile" in head:
        return "mha"
    return None


def sniff(path: pathlib.Path, name: str) -> str:
    """The kind (a :data:`KIND_SUFFIX` key) of the file at ``path`` that the user named
    ``name``, from its content; a suffix of ``name`` that promises another kind is refused.

    Raises:
        UploadError: naming ``name``: empty; content that does not match its suffix (e.g. a
            ``.png`` that is not a PNG); no known signature (not a supported file).
    """
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if not head:
        raise UploadError(name, None, "empty file (0 bytes)")
    suffix = _suffix(name)
    kind = _content_kind(head, suffix)
    promised = _SUFFIX_KIND.get(suffix)
    if promised is not None and kind != promised:
        if promised == "dicom" and kind is None:
            raise UploadError(name, None, "not a DICOM Part 10 file (no 'DICM' at byte 128); "
                                          "expected a DICOM image file")
        found = f"its content is a {KIND_NAMES[kind]}" if kind else \
            "its content has no known file signature"
        raise UploadError(name, None, f"named {suffix} but {found}; expected a "
                                      f"{KIND_NAMES[promised]}")
    if kind is None:
        raise UploadError(name, None, f"not a supported file; expected {ACCEPTED}")
    return kind


def _skipped(name: str) -> bool:
    """True for a folder upload's or zip's side files: hidden files, ``DICOMDIR``, ``__MACOSX``."""
    parts = name.replace("\\", "/").split("/")
    base = parts[-1].lower()
    return (base.startswith(".") or base in _SKIPPED_NAMES or "__MACOSX" in parts)


# === Zip ===
def _unsafe_member(member: str) -> bool:
    p = member.replace("\\", "/")
    return (p.startswith("/") or (len(p) > 1 and p[1] == ":")
            or any(part == ".." for part in p.split("/")) or "\0" in p)


def extract_zip(archive: pathlib.Path, name: str, dest: pathlib.Path, *,
                max_extracted_bytes: int) -> list[UploadedFile]:
    """Unpacks the zip ``archive`` (named ``name`` by the user) into ``dest`` as flat numbered
    files (no member path is ever used as a path); returns them, named ``"name: member"``.
    Folders, hidden files, ``__MACOSX/`` and ``DICOMDIR`` are skipped.

    Raises:
        UploadTooLarge: the members unpack to more than ``max_extracted_bytes`` (by the
            archive's directory or, counted while decompressing, by the bytes themselves).
        UploadError: naming the archive and the member: not a readable zip, more than
            :data:`MAX_ZIP_MEMBERS` members, an absolute path or a ``..`` component, a link,
            an encrypted member, a damaged member, no file in it.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UploadError(name, None, f"not a readable zip archive ({e})") from None
    too_big = UploadTooLarge(name, None, f"unpacks to more than the limit of "
                                         f"{mb(max_extracted_bytes)} (spoils serve "
                                         "--max-extracted-mb); zip one series only")
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise UploadError(name, None, f"{len(infos)} members; at most {MAX_ZIP_MEMBERS} "
                                          "are accepted (zip one series only)")
        for info in infos:
            if _unsafe_member(info.filename):
                raise UploadError(name, None, f"member '{display_name(info.filename)}': "
                                              "unsafe path (absolute or with '..'); refused")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UploadError(name, None, f"member '{display_name(info.filename)}': "
                                              "a symbolic link; refused")
            if info.flag_bits & 0x1:
                raise UploadError(name, None, f"member '{display_name(info.filename)}': "
                                              "encrypted; upload an archive without a password")
        members = [i for i in infos if not i.is_dir() and not _skipped(i.filename)]
        if sum(i.file_size for i in members) > max_extracted_bytes:
            raise too_big
        dest.mkdir(parents=True, exist_ok=False)
        out: list[UploadedFile] = []
        total = 0
        for k, info in enumerate(members, start=1):
            path = dest / f"{k:04d}"
            size = 0
            try:
                with zf.open(info) as src, open(path, "xb") as dst:
                    while chunk := src.read(_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if total > max_extracted_bytes:
                            raise too_big
                        dst.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError,
                    RuntimeError) as e:
                raise UploadError(name, None, f"member '{display_name(info.filename)}': "
                                              f"cannot be unpacked ({e})") from None
            out.append(UploadedFile(f"{name}: {display_name(info.filename)}", path, size))
    if not out:
        raise UploadError(name, None, f"holds no file; expected {ACCEPTED}")
    return out


# === Laying out the input ===
@dataclasses.dataclass(frozen=True)
class PreparedInput:
    """What :func:`prepare_input` made of an upload.

    Attributes:
        path: the file or DICOM folder to give ``run_predict`` (inside the request folder).
        kind: ``"picture"``, ``"volume"``, ``"dicom_file"`` or ``"dicom_series"``.
        name: how messages call it: the file's name, or ``"the uploaded DICOM series (N
            files)"``.
        skipped: names of side files left out (hidden files, DICOMDIR).
    """
    path: pathlib.Path
    kind: str
    name: str
    skipped: tuple[str, ...] = ()


def prepare_input(files: list[UploadedFile], folder: pathlib.Path, *,
                  max_extracted_bytes: int) -> PreparedInput:
    """Checks the uploaded ``files`` by content and lays them out under ``folder`` for the
    reader: one picture or volume (renamed with the suffix of its kind), one zip (unpacked,
    then the same rules), or DICOM files (moved into ``folder/series/``).

    Raises:
        UploadError: naming the file: nothing uploaded; a file that is not a supported kind
            or whose content does not match its suffix (:func:`sniff`); several files that are
            not all DICOM; a zip inside a zip; a bad zip (:func:`extract_zip`).
        UploadTooLarge: a zip unpacking to more than ``max_extracted_bytes``.
    """
    skipped = tuple(f.name for f in files if _skipped(f.name))
    files = [f for f in files if not _skipped(f.name)]
    if not files:
        raise UploadError(None, "scan", f"no file uploaded; choose {ACCEPTED}")
    if len(files) == 1 and sniff(files[0].path, files[0].name) == "zip":
        archive = files[0]
        files = extract_zip(archive.path, archive.name, folder / "unzipped",
                            max_extracted_bytes=max_extracted_bytes)
        archive.path.unlink()
        kinds = [sniff(f.path, f.name) for f in files]
        if "zip" in kinds:
            bad = files[kinds.index("zip")]
            raise UploadError(bad.name, None, "a zip inside the zip; zip the series' files "
                                              "themselves")
    else:
        kinds = [sniff(f.path, f.name) for f in files]
    if len(files) == 1 and kinds[0] != "dicom":
        kind = kinds[0]
        target = folder / f"input{KIND_SUFFIX[kind]}"
        shutil.move(files[0].path, target)
        return PreparedInput(target, "picture" if kind in PICTURE_KINDS else "volume",
                             files[0].name, skipped)
    not_dicom = [(f, k) for f, k in zip(files, kinds) if k != "dicom"]
    if not_dicom:
        f, k = not_dicom[0]
        raise UploadError(f.name, None, f"a {KIND_NAMES[k]} among {len(files)} files; upload "
                                        "one picture or volume on its own, or only the DICOM "
                                        "files of one series")
    series = folder / "series"
    series.mkdir()
    for k, f in enumerate(files, start=1):
        shutil.move(f.path, series / f"{k:04d}.dcm")
    if len(files) == 1:
        return PreparedInput(series / "0001.dcm", "dicom_file", files[0].name, skipped)
    return PreparedInput(series, "dicom_series",
                         f"the uploaded DICOM series ({len(files)} files)", skipped)
