"""Atomic file writes and renames: the one implementation every stage uses.

A file is written to a temporary sibling (same directory, so the rename stays on one file
system) and moved into place with ``os.replace``; on any error the temporary file is removed.
A reader therefore sees either the old file or the complete new one, never a partial file.

An output folder (``spoils predict --out``) is built the same way, one level up
(:func:`atomic_output_dir`): every file goes into a hidden temporary sibling folder, which is
renamed into place only when all of them are written; a failure removes it and leaves the
target as it was. :func:`check_output_dir` and :func:`check_writable_dir` refuse an unusable
output path (a file, a folder of other files, no write permission) before any work starts.

Every result file of the library goes through the writers here: :func:`write_json` (numpy
values as numbers, optionally sorted keys), :func:`save_config` (a run's resolved config),
:func:`write_csv`, :func:`write_parquet` and :func:`write_table` (CSV + Parquet of one
``DataFrame``), :func:`atomic_save_keras`. :func:`json_safe` makes a nested value strict JSON
(no NaN or infinity).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import logging
import math
import os
import pathlib
import secrets
import shutil
import tempfile
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

from spoils_tf.errors import SpoilsError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> pathlib.Path:
    """Calls ``write(tmp_path)`` and then renames ``tmp_path`` to ``path``.

    ``write`` receives the temporary file's path as a ``str`` (for writers such as
    ``DataFrame.to_parquet`` or ``np.save`` that open the file themselves). Parent directories
    are created. Returns ``path`` as a ``pathlib.Path``.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save_keras(model: Any, path: str | os.PathLike) -> pathlib.Path:
    """``model.save`` into a hidden ``*.keras`` sibling, then renamed to ``path``.

    Keras picks the format from the ``.keras`` suffix, so the temporary file keeps it. On any
    failure the temporary file is removed and ``path`` is untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Writes ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: pathlib.Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Writes ``text`` as UTF-8 to ``path`` atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# === JSON ===
def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars/arrays, paths, tuples and sets.

    Raises:
        TypeError: any other type (the caller's object is not data).
    """
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pathlib.Path):
        return str(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def json_safe(obj: Any) -> Any:
    """``obj`` as strict JSON types: every non-finite float (NaN, +-inf) becomes None.

    Mappings become dicts with ``str`` keys; lists, tuples, sets and numpy arrays become lists;
    numpy booleans, integers and floats become ``bool`` / ``int`` / ``float``; paths become
    ``str``. Anything else is returned unchanged. The result passes
    ``json.dumps(..., allow_nan=False)`` whenever ``obj`` holds only those types.
    """
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, np.ndarray)):
        return [json_safe(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2,
               sort_keys: bool = False) -> pathlib.Path:
    """Writes ``obj`` as JSON (UTF-8, ``indent`` spaces, one trailing newline) atomically.

    Numpy scalars and arrays, paths, tuples and sets are written through
    :func:`json_default`; NaN and infinity as Python's ``json`` writes them (``NaN``,
    ``Infinity``; pass ``json_safe(obj)`` for strict JSON). ``sort_keys`` sorts every
    mapping's keys. Returns ``path``.

    Raises:
        TypeError: ``obj`` holds a value :func:`json_default` does not convert.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=json_default)
    return atomic_write_text(path, text + "\n")


def save_config(config: Any, workdir: str | os.PathLike) -> pathlib.Path:
    """Saves a run's resolved config as ``workdir/config.json`` (2-space indent, sorted keys).

    ``config`` is an ``ml_collections.ConfigDict`` (written with ``to_json_best_effort``) or
    a plain mapping. Returns the path written.
    """
    path = pathlib.Path(workdir) / "config.json"
    if hasattr(config, "to_json_best_effort"):
        text = config.to_json_best_effort(indent=2, sort_keys=True)
    else:
        text = json.dumps(config, indent=2, sort_keys=True, default=json_default)
    return atomic_write_text(path, text + "\n")


# === Tables ===
def write_csv(path: str | os.PathLike, df: Any) -> pathlib.Path:
    """Writes a ``pandas.DataFrame`` as CSV (no index, ``\\n`` line ends) atomically; returns
    ``path``."""
    return atomic_write_text(path, df.to_csv(index=False))


def write_parquet(path: str | os.PathLike, df: Any) -> pathlib.Path:
    """Writes a ``pandas.DataFrame`` as Parquet (no index) atomically; returns ``path``."""
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_table(stem: str | os.PathLike, df: Any, *, parquet: bool = True) -> None:
    """Writes ``<stem>.csv`` and, when ``parquet``, ``<stem>.parquet`` (each atomically)."""
    stem = pathlib.Path(stem)
    write_csv(stem.with_name(stem.name + ".csv"), df)
    if parquet:
        write_parquet(stem.with_name(stem.name + ".parquet"), df)


# === Hashes ===
_HASH_CHUNK = 1 << 20


def sha256_of_files(paths: Iterable[str | os.PathLike]) -> str:
    """Hex sha256 of the files' bytes, concatenated in the given order (read in 1 MiB
    blocks, so a large model file is never held in memory)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(_HASH_CHUNK):
                h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of one file's bytes."""
    return sha256_of_files([path])


# === Publishing folders ===
def rename_no_replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Renames ``src`` to ``dst`` atomically, failing if ``dst`` exists (even as an empty folder).

    Uses Linux ``renameat2(..., RENAME_NOREPLACE)``; where that is unavailable (other systems,
    file systems without it) it checks ``dst`` and calls ``os.rename``, which refuses a
    non-empty ``dst`` folder but would replace an empty one created in between.

    Raises:
        FileExistsError: ``dst`` exists.
        OSError: any other failure of the rename.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    renameat2 = _renameat2()
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, f"{dst} already exists; not overwriting it", dst)
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, f"rename {src} -> {dst}: {os.strerror(err)}")
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, f"{dst} already exists; not overwriting it", dst)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, f"{dst} already exists; not overwriting it",
                                  dst) from e
        raise


_RENAMEAT2: list = []


def _renameat2():
    """libc's ``renameat2`` (glibc >= 2.28) or None."""
    if not _RENAMEAT2:
        fn = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


def publish_all_or_none(pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]]) -> None:
    """Renames each staged ``src`` to its ``dst`` with :func:`rename_no_replace`, in order; if
    one fails, the ones already published are renamed back out of sight, every staged ``src``
    is removed, and the error is raised: all are published or none (a reader may see the first
    ones during the milliseconds before such a roll-back).

    Raises:
        FileExistsError: a ``dst`` exists (nothing is overwritten). OSError: another failure.
    """
    published: list[tuple[str, str]] = []
    try:
        for src, dst in pairs:
            rename_no_replace(src, dst)
            published.append((os.fspath(src), os.fspath(dst)))
    except BaseException:
        for src, dst in reversed(published):
            try:
                os.rename(dst, src)          # take it back out of sight, then remove
            except OSError:
                logging.getLogger(__name__).error("could not withdraw %s after a failed "
                                                  "publish", dst)
        for src, _ in pairs:
            shutil.rmtree(src, ignore_errors=True)
        raise


# === Output folders ===
_RENAME_EXCHANGE = 2      # renameat2 flag: swap two existing paths in one step (Linux >= 3.15)


def check_writable_dir(path: str | os.PathLike, *, field: Optional[str] = "--out"
                       ) -> pathlib.Path:
    """Checks that ``path`` is, or can be created as, a folder this process may write into.

    ``path`` may exist as a folder (it must be writable) or not exist yet (its nearest
    existing ancestor must be a writable folder; the missing folders are created by whoever
    writes). Nothing is created or changed.

    Returns:
        ``path`` made absolute.

    Raises:
        SpoilsError: (``path``, ``field``) ``path`` is a file (or a dangling link); an
            ancestor is a file; no write permission (or a read-only file system) where the
            folder would be written or created.
    """
    path = pathlib.Path(os.path.abspath(path))
    if os.path.lexists(path) and not path.is_dir():
        raise SpoilsError(path, field, "is a file; expected a folder (existing, or one to be "
                                       "created)")
    _check_writable_from(path, path, field)
    return path


def _check_writable_from(path: pathlib.Path, start: pathlib.Path, field: Optional[str]) -> None:
    """The nearest existing one of ``start`` and its ancestors must be a writable folder;
    errors name ``path``."""
    anchor = start
    while not os.path.lexists(anchor):
        anchor = anchor.parent
    if not anchor.is_dir():
        raise SpoilsError(path, field, f"cannot be created: {anchor} is a file, not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise SpoilsError(path, field, f"cannot be written: no write permission in {anchor} "
                                       "(or a read-only file system); choose another folder")


def check_output_dir(path: str | os.PathLike, *,
                     replace_if: Optional[Callable[[pathlib.Path], bool]] = None,
                     field: Optional[str] = "--out") -> pathlib.Path:
    """Checks, before any work, that :func:`atomic_output_dir` may publish a folder at ``path``.

    Accepted: a path that does not exist yet (its nearest existing ancestor a writable
    folder), an empty folder, or a folder for which ``replace_if(path)`` is true (a previous
    output of the same command, recognised by its files). Nothing is created or changed.

    Returns:
        ``path`` made absolute; a symbolic link to a folder is resolved (the folder it points
        to is the one replaced, and the link keeps pointing to the new one).

    Raises:
        SpoilsError: (``path``, ``field``) ``path`` is a file; a non-empty folder that
            ``replace_if`` does not accept (its first entries are named); no write
            permission in ``path`` (when it is to be replaced) or in its parent.
    """
    path = pathlib.Path(os.path.abspath(path))
    if path.is_symlink() and path.is_dir():
        path = pathlib.Path(os.path.realpath(path))
    if os.path.lexists(path) and not path.is_dir():
        raise SpoilsError(path, field, "is a file; expected a folder to write into (a new or "
                                       "empty one, or a previous output folder to replace)")
    if path.is_dir():
        entries = sorted(os.listdir(path))
        if entries and not (replace_if is not None and replace_if(path)):
            shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)"
                                              if len(entries) > 5 else "")
            raise SpoilsError(path, field, f"is a folder holding other files ({shown}) and not "
                                           "a previous output of this command; refusing to "
                                           "replace it: give a new or empty folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise SpoilsError(path, field, "cannot be written or replaced: no write permission "
                                           "in it (or a read-only file system)")
    _check_writable_from(path, path.parent, field)
    return path


def _make_dirs(path: pathlib.Path) -> list[pathlib.Path]:
    """Creates ``path`` and its missing ancestors; returns the folders created, outermost
    first."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    created = []
    for d in reversed(missing):
        d.mkdir()
        created.append(d)
    return created


def _hidden_dir(parent: pathlib.Path, prefix: str) -> pathlib.Path:
    """A new empty folder ``parent/<prefix><random hex>`` (mode from the umask, as a plain
    ``mkdir``)."""
    while True:
        d = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Puts the folder ``src`` in place of the existing folder ``dst`` and removes the old one.

    With Linux ``renameat2(..., RENAME_EXCHANGE)`` the two are swapped in one step, so a reader
    sees the old or the new folder, never neither. Elsewhere ``dst`` is renamed to a hidden
    sibling, ``src`` renamed to ``dst`` (the old one renamed back if that fails), and the old
    one removed: ``dst`` is absent for the moment between the two renames.

    Raises:
        OSError: a rename failed (``dst`` is then as it was and ``src`` still exists).
    """
    src, dst = pathlib.Path(src), pathlib.Path(dst)
    renameat2 = _renameat2()
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst),
                     _RENAME_EXCHANGE) == 0:
            shutil.rmtree(src, ignore_errors=True)    # src now holds the old folder
            _warn_if_left(src)
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, f"rename {src} <-> {dst}: {os.strerror(err)}")
    old = _hidden_dir(dst.parent, f".{dst.name}.old-")
    os.rename(dst, old)                   # onto the empty folder just made: replaces it
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
    _warn_if_left(old)


def _warn_if_left(path: pathlib.Path) -> None:
    if os.path.lexists(path):
        logging.getLogger(__name__).warning("could not remove the replaced folder %s", path)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, *,
                      replace_if: Optional[Callable[[pathlib.Path], bool]] = None,
                      field: Optional[str] = "--out") -> Iterator[pathlib.Path]:
    """Builds an output folder all or nothing.

    Yields a hidden temporary folder ``<parent>/.<name>.tmp-<hex>`` (same parent as ``path``,
    so the final rename stays on one file system) for the caller to fill. When the ``with``
    body finishes, the folder is renamed to ``path``: if ``path`` exists by then (an empty
    folder, or one ``replace_if`` accepts, :func:`check_output_dir`) it is replaced with
    :func:`replace_dir` and the old contents are removed. If the body raises, or publishing
    fails, the temporary folder and any parent folders created for it are removed and
    ``path`` is left as it was.

    ``path`` is checked with :func:`check_output_dir` on entry; callers should also call that
    before any long work, so that a bad ``--out`` is refused at once.

    Raises:
        SpoilsError: ``path`` refused (:func:`check_output_dir`, on entry or again at the
            rename: the folder may have changed during the run), or an ``OSError`` while
            writing or publishing (chained; nothing is left).
        Any other exception of the ``with`` body, unchanged (nothing is left).
    """
    path = check_output_dir(path, replace_if=replace_if, field=field)
    try:
        created = _make_dirs(path.parent)
    except OSError as e:
        raise SpoilsError(path, field, f"cannot be created ({type(e).__name__}: {e})") from e
    tmp = None
    try:
        tmp = _hidden_dir(path.parent, f".{path.name}.tmp-")
        yield tmp
        try:
            rename_no_replace(tmp, path)
        except FileExistsError:
            check_output_dir(path, replace_if=replace_if, field=field)
            replace_dir(tmp, path)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                break
        if isinstance(e, OSError):
            raise SpoilsError(path, field, f"could not be written ({type(e).__name__}: {e}); "
                                           "nothing was written") from e
        raise
