"""Renders an HTML report (``spoils predict``'s ``report.html``) to a PNG with headless Chromium.

    .venv/bin/python tools/render_report.py REPORT.html OUT.png [--width 1200]
        [--height H | --max-height 6000] [--chromium PATH]

Chromium draws the page into a ``width x height`` window (``--headless=new --screenshot
--hide-scrollbars --no-sandbox``, device scale factor 1, a throw-away profile). Headless
Chromium only captures the window, not the whole page, so without ``--height`` the page is
drawn into a ``width x max_height`` window and the uniform strip below the content (rows
identical to the bottom row) is cropped, leaving ``--pad`` px. When the content reaches the
bottom of the window the page was taller than ``--max-height``: the PNG is cut there and a
warning is printed.

The PNG is written atomically (a temporary file next to ``OUT.png``, then renamed).

Errors (exit status 1, message on stderr): the HTML file is missing, no Chromium executable
(``chromium``, ``chromium-browser``, ``google-chrome``) is on PATH, Chromium fails or times out
(``--timeout`` s), or it writes no screenshot.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

import numpy as np
import PIL.Image

CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome")


class RenderError(RuntimeError):
    """The page could not be rendered (the message says why and what to do)."""


def find_chromium(explicit: Optional[str] = None) -> str:
    """The Chromium executable: ``explicit`` if given, else the first of ``CHROMIUM_NAMES``
    on PATH.

    Raises:
      RenderError: none found (or ``explicit`` is not executable).
    """
    if explicit:
        found = shutil.which(explicit)
        if not found:
            raise RenderError(f"{explicit}: not an executable Chromium")
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise RenderError(f"no headless browser found: none of {', '.join(CHROMIUM_NAMES)} is on "
                      "PATH; install one (Debian: apt-get install chromium) or pass --chromium")


def trim_bottom(image: np.ndarray, pad: int) -> tuple[np.ndarray, bool]:
    """Crops the uniform strip at the bottom of a screenshot.

    Args:
      image: ``uint8 [H, W, C]``.
      pad: rows of the strip to keep below the last content row (px).

    Returns:
      ``(cropped uint8 [H', W, C], reached_bottom)``; ``reached_bottom`` is True when even the
      second-to-last row differs from the last one, i.e. the content may continue below.
    """
    last = image[-1]
    differs = np.any(image != last[None], axis=(1, 2))     # bool [H]
    rows = np.flatnonzero(differs)
    if rows.size == 0:                                      # blank page
        return image[:max(1, pad)], False
    end = int(rows[-1]) + 1
    return image[:min(image.shape[0], end + pad)], end >= image.shape[0] - 1


def render_html(html_path: str | os.PathLike, out_png: str | os.PathLike, *, width: int = 1200,
                height: Optional[int] = None, max_height: int = 6000, pad: int = 16,
                chromium: Optional[str] = None, timeout_s: float = 120.0) -> dict:
    """Renders ``html_path`` to ``out_png`` (RGB PNG, ``width`` px wide).

    Args:
      html_path: a local HTML file (self-contained: external resources are not fetched).
      out_png: the PNG to write (atomically).
      width: window width in px (CSS px, device scale factor 1).
      height: fixed window height in px; None = fit the page up to ``max_height`` (module doc).
      max_height: the tallest window tried when ``height`` is None (px).
      pad: px kept below the content when fitting.
      chromium: the browser executable; None = :func:`find_chromium`.
      timeout_s: seconds before Chromium is killed.

    Returns:
      ``{"png": str, "width": int, "height": int, "truncated": bool, "chromium": str}``.

    Raises:
      FileNotFoundError: no ``html_path``.
      ValueError: ``width`` / ``height`` / ``max_height`` below 16 px.
      RenderError: no Chromium, it failed, timed out or wrote nothing.
    """
    html_path = pathlib.Path(html_path).resolve()
    out_png = pathlib.Path(out_png)
    if not html_path.is_file():
        raise FileNotFoundError(f"{html_path}: HTML report not found")
    window_h = height if height is not None else max_height
    for name, value in (("width", width), ("height", window_h)):
        if value < 16:
            raise ValueError(f"{name} must be at least 16 px, got {value}")
    exe = find_chromium(chromium)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="render_report_") as tmp:
        shot = pathlib.Path(tmp) / "shot.png"
        cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--force-device-scale-factor=1", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={pathlib.Path(tmp) / 'profile'}",
               f"--window-size={int(width)},{int(window_h)}", f"--screenshot={shot}",
               html_path.as_uri()]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise RenderError(f"{html_path}: {exe} did not finish within {timeout_s:.0f} s") from e
        if proc.returncode != 0 or not shot.is_file():
            tail = proc.stdout.decode("utf-8", "replace").strip()[-800:]
            raise RenderError(f"{html_path}: {exe} exited with status {proc.returncode} and "
                              f"wrote no screenshot; its output ends:\n{tail}")
        with PIL.Image.open(shot) as im:
            image = np.asarray(im.convert("RGB"))
    truncated = False
    if height is None:
        image, truncated = trim_bottom(image, pad)
    fd, tmp_png = tempfile.mkstemp(dir=out_png.parent, prefix=f".{out_png.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            PIL.Image.fromarray(image).save(f, format="PNG")
        os.replace(tmp_png, out_png)
    except BaseException:
        pathlib.Path(tmp_png).unlink(missing_ok=True)
        raise
    return {"png": str(out_png), "width": int(image.shape[1]), "height": int(image.shape[0]),
            "truncated": bool(truncated), "chromium": exe}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line (module docstring). Returns 0, or 1 with a message on stderr."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("html", type=pathlib.Path, help="the HTML report")
    p.add_argument("out", type=pathlib.Path, help="the PNG to write")
    p.add_argument("--width", type=int, default=1200, help="window width, px (default 1200)")
    p.add_argument("--height", type=int, default=None,
                   help="fixed window height, px (default: fit the page up to --max-height)")
    p.add_argument("--max-height", type=int, default=6000, help="px (default 6000)")
    p.add_argument("--pad", type=int, default=16, help="px kept below the content (default 16)")
    p.add_argument("--chromium", default=None, help="browser executable (default: on PATH)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = p.parse_args(argv)
    try:
        info = render_html(args.html, args.out, width=args.width, height=args.height,
                           max_height=args.max_height, pad=args.pad, chromium=args.chromium,
                           timeout_s=args.timeout)
    except (FileNotFoundError, ValueError, RenderError) as e:
        print(f"render_report: {e}", file=sys.stderr)
        return 1
    if info["truncated"]:
        print(f"render_report: warning: the page reaches the bottom of the {args.max_height} px "
              f"window; {args.out} may be cut off (raise --max-height)", file=sys.stderr)
    print(f"{info['png']}: {info['width']}x{info['height']} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
