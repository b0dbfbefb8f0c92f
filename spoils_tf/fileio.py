"""Atomic file writes and renames: the one implementation every stage uses.

A file is written to a temporary sibling (same directory, so the rename stays on one file
system) and moved into place with ``os.replace``; on any error the temporary file is removed.
A reader therefore sees either the old file or the complete new one, never a partial file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable, Iterable, Sequence

import numpy as np


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Writes ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: pathlib.Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Writes ``text`` as UTF-8 to ``path`` atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars/arrays, paths, tuples and sets."""
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
