"""tools/render_report.py: HTML -> PNG with headless Chromium (skipped when none is installed)."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil

import numpy as np
import PIL.Image
import pytest

_TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "render_report.py"
_spec = importlib.util.spec_from_file_location("render_report", _TOOL)
render_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_report)

needs_chromium = pytest.mark.skipif(
        not any(shutil.which(n) for n in render_report.CHROMIUM_NAMES),
        reason="no chromium on PATH")

# A white page with one block of a known colour at a known place (CSS px = image px at scale 1).
_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
html, body { margin: 0; padding: 0; background: #ffffff; }
#block { position: absolute; left: 100px; top: 40px; width: 200px; height: 120px;
         background: rgb(26, 127, 60); }
#tall { height: 300px; }
</style></head><body><div id="tall"></div><div id="block"></div></body></html>
"""


def test_trim_bottom_keeps_content_plus_pad():
    image = np.full((50, 4, 3), 255, np.uint8)
    image[10:20] = 0                                 # content rows 10..19
    cropped, reached = render_report.trim_bottom(image, pad=5)
    assert cropped.shape == (25, 4, 3)               # 20 content rows + 5 pad
    assert not reached
    image[48] = 0                                    # content next to the bottom edge
    assert render_report.trim_bottom(image, pad=5)[1]


def test_missing_chromium_is_a_clear_error(tmp_path):
    with pytest.raises(render_report.RenderError, match="not an executable Chromium"):
        render_report.find_chromium(str(tmp_path / "no-such-browser"))


def test_missing_html_is_reported(tmp_path):
    rc = render_report.main([str(tmp_path / "absent.html"), str(tmp_path / "out.png")])
    assert rc == 1
    assert not (tmp_path / "out.png").exists()


@needs_chromium
def test_coloured_block_lands_where_css_puts_it(tmp_path):
    html = tmp_path / "page.html"
    html.write_text(_PAGE)
    out = tmp_path / "page.png"
    info = render_report.render_html(html, out, width=400, max_height=1000, pad=10)
    image = np.asarray(PIL.Image.open(out).convert("RGB")).astype(int)
    assert image.shape[1] == 400
    # page content is 300 px tall (#tall) on white: trimmed to the block's bottom (160) + pad
    assert info["height"] == image.shape[0] == 160 + 10
    assert not info["truncated"]
    assert np.abs(image[100, 200] - (26, 127, 60)).max() <= 2       # inside the block
    assert np.abs(image[100, 50] - (255, 255, 255)).max() <= 2      # left of it
    assert np.abs(image[20, 200] - (255, 255, 255)).max() <= 2      # above it
    assert not list(tmp_path.glob(".page.png.*"))                   # no temporary file left


@needs_chromium
def test_fixed_height_is_not_trimmed(tmp_path):
    html = tmp_path / "page.html"
    html.write_text(_PAGE)
    info = render_report.render_html(html, tmp_path / "fixed.png", width=320, height=240)
    assert (info["width"], info["height"]) == (320, 240)
