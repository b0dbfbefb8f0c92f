"""tools/code_stats.py on a hand-written module whose lengths and nested imports are counted by hand."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

_TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "code_stats.py"
_spec = importlib.util.spec_from_file_location("code_stats", _TOOL)
code_stats = importlib.util.module_from_spec(_spec)
sys.modules["code_stats"] = code_stats     # its dataclass looks its module up there
_spec.loader.exec_module(code_stats)

# Line numbers on the left are the source's own (line 1 is `import os`).
SOURCE = '''\
import os
from typing import Any


def short():
    return 1


class Reader:
    def read(self, path):
        import json
        with open(path) as f:
            return json.load(f)

    @staticmethod
    def helper():
        pass


def outer(x):
    from math import sqrt
    if x > 0:
        import cmath

    def inner(y):
        import re
        return re.sub("a", "b", y)

    class Local:
        def method(self):
            from os import path
            return path

    return sqrt(x) + len(inner("a"))


try:
    import numpy
except ImportError:
    numpy = None
'''
# 8 import statements; `os`, `typing` and the module-level try/except `numpy` are outside any
# function, which leaves json (read), sqrt and cmath (outer), re (inner), path (method): 5.


def test_function_lengths_counted_by_hand():
    got = {f.qualname: (f.lines, f.lineno) for f in code_stats.function_lengths(SOURCE)}
    assert got == {
        "short": (2, 5),
        "Reader.read": (4, 10),
        "Reader.helper": (2, 16),        # decorator line not counted
        "outer": (15, 20),               # line 20 `def outer` .. line 34 `return ...`
        "outer.inner": (3, 25),
        "outer.Local.method": (3, 30),
    }


def test_imports_in_functions_counted_by_hand():
    assert code_stats.imports_in_functions(SOURCE) == 5
    assert code_stats.imports_in_functions("import os\n\ndef f():\n    return os\n") == 0


def test_collect_and_outputs(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text(SOURCE)
    (pkg / "sub" / "b.py").write_text("def g():\n    import os\n    return os\n")
    stats = code_stats.collect(pkg, top=2)
    assert stats["n_modules"] == 2
    assert stats["n_functions"] == 7
    assert stats["imports_in_functions"] == 6
    assert stats["total_lines"] == len(SOURCE.splitlines()) + 3
    assert stats["longest_functions"] == [
        {"lines": 15, "name": "outer", "where": "pkg/a.py:20"},
        {"lines": 4, "name": "Reader.read", "where": "pkg/a.py:10"},
    ]
    assert stats["largest_modules"] == [
        {"lines": len(SOURCE.splitlines()), "module": "pkg/a.py"},
        {"lines": 3, "module": "pkg/sub/b.py"},
    ]

    out = tmp_path / "results" / "stats.json"
    assert code_stats.main(["--root", str(pkg), "--top", "2", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["longest_functions"][0]["name"] == "outer"
    markdown = out.with_suffix(".md").read_text()
    assert "| 15 | `outer` | `pkg/a.py:20` |" in markdown
    assert "inside function bodies: **6**" in markdown
