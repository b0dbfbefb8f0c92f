"""The project's error type and the exit codes of every ``spoils`` command.

Every reader, loader and command raises :class:`SpoilsError` (or a subclass) for input it
cannot use; the message names the file and, where there is one, the field or row at fault.
Command-line entry points turn it into a one-line message on stderr and :data:`EXIT_BAD_INPUT`;
anything else escaping is a bug in this package.

Exit codes (the README lists them once):

* :data:`EXIT_OK` (0): done, every output written.
* :data:`EXIT_PARTIAL` (1): a batch finished but some items failed (each one reported).
* :data:`EXIT_BAD_INPUT` (2): input or output refused before work started; nothing written.
* :data:`EXIT_NO_DISC` (3): ``spoils predict`` found no disc; a report saying so, no
  recommendation.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Sequence, Union

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_BAD_INPUT = 2
EXIT_NO_DISC = 3


class SpoilsError(ValueError):
    """Input (a file, a field of it, an argument) that this package refuses, with the reason.

    Subclasses ``ValueError`` so callers that catch ``ValueError`` keep working.

    ``SpoilsError(message)`` with a single argument (no ``field``, no ``reason``) takes it as
    the whole message, for raise sites that format their own: ``path`` and ``field`` are then
    ``None`` and ``reason`` is the message.

    Attributes:
        path: the file or folder at fault (``None`` when the input is not a file).
        field: the field, row, tag or argument at fault, e.g. ``"shapes[3].points"``,
            ``"PixelSpacing"``, ``"row 7: pfirrmann"`` (``None`` when the whole file is bad).
        reason: what was wrong and what was expected.
    """

    def __init__(self, path: Optional[Union[str, os.PathLike]] = None,
                 field: Optional[str] = None, reason: Optional[str] = None):
        if reason is None:
            if field is None and path is not None:   # SpoilsError("whole message")
                path, reason = None, str(path)
            else:
                reason = ""
        self.path = path
        self.field = field
        self.reason = reason
        super().__init__(format_message(path, field, reason))

    def __reduce__(self):  # picklable across worker processes despite the 3-argument __init__
        return (type(self), (self.path, self.field, self.reason))


def format_message(path: Any, field: Optional[str], reason: str) -> str:
    """``"<path>: field '<field>': <reason>"``, leaving out the parts that are ``None``."""
    parts = []
    if path is not None:
        parts.append(str(path))
    if field is not None:
        parts.append(f"field '{field}'")
    parts.append(reason)
    return ": ".join(parts)


def wrap(path: Optional[Union[str, os.PathLike]], what: str, exc: BaseException,
         field: Optional[str] = None) -> SpoilsError:
    """A :class:`SpoilsError` for a third-party exception raised while reading ``path``; the
    library's message is folded onto one line (SimpleITK's spans several).

    Args:
      path: the file being read.
      what: what the file was expected to be, e.g. ``"a DICOM image"``.
      exc: the library's exception (chained by the caller with ``raise ... from exc``).
      field: the field at fault, when known.
    """
    detail = " ".join(str(exc).split()) or type(exc).__name__    # one line
    return SpoilsError(path, field, f"cannot be read as {what} ({type(exc).__name__}: {detail})")


def require_columns(path: Union[str, os.PathLike], present: Optional[Iterable[str]],
                    required: Sequence[str]) -> None:
    """Checks that a table's header holds every ``required`` column.

    Args:
      path: the CSV file (named in the message).
      present: the header's column names (``None`` for an empty file).
      required: the columns the reader needs.

    Raises:
      SpoilsError: ``field`` lists the missing columns, ``reason`` what the header holds.
    """
    have = [str(c) for c in (present or [])]
    missing = [c for c in required if c not in have]
    if missing:
        raise SpoilsError(path, ", ".join(missing),
                          f"missing column(s) {missing}; the header has {have}, expected at "
                          f"least {list(required)}")
