"""Size statistics of a Python package: longest functions, largest modules, imports in functions.

    .venv/bin/python tools/code_stats.py [--root spoils_tf] [--top 10]
                                          [--out benchmarks/results/code_stats.json]

Reads every ``*.py`` file under ``--root`` with :mod:`ast` (nothing is imported, so the
package's dependencies need not be installed) and reports:

* the ``--top`` longest functions and methods, nested ones included, each with its length in
  lines (``def`` line to last line of the body, decorators not counted), its qualified name
  (``Class.method``, ``outer.inner``) and ``file:line``;
* the ``--top`` largest modules by line count;
* how many ``import`` / ``from ... import`` statements sit inside a function body (at any
  depth: a function nested in a function, or a class defined in one, counts too).

Prints the three tables and writes ``--out`` (JSON: the tables, the totals, the commit and
whether the tree under ``--root`` had uncommitted changes) and a markdown twin with the same
stem (``.md``). Exit status: 0, or 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import pathlib
import subprocess
import sys
from typing import Iterator, Optional, Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class FunctionLength:
    """One function or method: ``lines`` from its ``def`` line to its last line."""
    lines: int
    qualname: str
    path: str
    lineno: int


def _walk_defs(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
    """Yields ``(qualified name, def node)`` for every function under ``node``, depth first."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{child.name}"
            yield name, child
            yield from _walk_defs(child, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _walk_defs(child, f"{prefix}{child.name}.")
        else:
            yield from _walk_defs(child, prefix)


def function_lengths(source: str, path: str = "<string>") -> list[FunctionLength]:
    """Every function and method in ``source``, in source order, with its length in lines.

    Raises ``SyntaxError`` when ``source`` does not parse.
    """
    tree = ast.parse(source, filename=path)
    return [FunctionLength(node.end_lineno - node.lineno + 1, name, path, node.lineno)
            for name, node in _walk_defs(tree, "")]


def imports_in_functions(source: str, path: str = "<string>") -> int:
    """Number of import statements inside a function body (any depth) in ``source``."""
    tree = ast.parse(source, filename=path)
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # Count this function's own imports; nested functions are visited by ast.walk.
            stack = list(node.body)
            while stack:
                child = stack.pop()
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    count += 1
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    stack.extend(ast.iter_child_nodes(child))
    return count


def collect(root: pathlib.Path, top: int = 10, base: Optional[pathlib.Path] = None) -> dict:
    """The statistics of every ``*.py`` under ``root`` (paths shown relative to ``base``)."""
    base = base or root.parent
    functions: list[FunctionLength] = []
    modules: list[tuple[int, str]] = []
    nested_imports = 0
    files = sorted(root.rglob("*.py"))
    for file in files:
        rel = file.relative_to(base).as_posix()
        source = file.read_text(encoding="utf-8")
        modules.append((len(source.splitlines()), rel))
        functions.extend(function_lengths(source, rel))
        nested_imports += imports_in_functions(source, rel)
    functions.sort(key=lambda f: (-f.lines, f.path, f.lineno))
    modules.sort(key=lambda m: (-m[0], m[1]))
    return {
        "root": root.relative_to(base).as_posix() if root.is_relative_to(base) else str(root),
        "n_modules": len(files),
        "n_functions": len(functions),
        "total_lines": sum(n for n, _ in modules),
        "imports_in_functions": nested_imports,
        "longest_functions": [
            {"lines": f.lines, "name": f.qualname, "where": f"{f.path}:{f.lineno}"}
            for f in functions[:top]],
        "largest_modules": [{"lines": n, "module": rel} for n, rel in modules[:top]],
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def to_markdown(stats: dict) -> str:
    """The three tables as markdown."""
    dirty = " (with uncommitted changes)" if stats.get("dirty") else ""
    lines = [
        f"# Code statistics of `{stats['root']}/`",
        "",
        f"`tools/code_stats.py` at {stats.get('git_commit') or 'unknown commit'}{dirty}: "
        f"{stats['n_modules']} modules, {stats['total_lines']} lines, "
        f"{stats['n_functions']} functions and methods.",
        "",
        f"Import statements inside function bodies: **{stats['imports_in_functions']}**",
        "",
        "## Longest functions and methods",
        "",
        "| lines | function | where |",
        "| ---: | --- | --- |",
    ]
    lines += [f"| {f['lines']} | `{f['name']}` | `{f['where']}` |"
              for f in stats["longest_functions"]]
    lines += ["", "## Largest modules", "", "| lines | module |", "| ---: | --- |"]
    lines += [f"| {m['lines']} | `{m['module']}` |" for m in stats["largest_modules"]]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO / "spoils_tf"),
                        help="package folder to measure (default: spoils_tf/)")
    parser.add_argument("--top", type=int, default=10, help="rows per table (default 10)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/code_stats.json"),
                        help="JSON file to write; the markdown goes next to it as .md")
    args = parser.parse_args(argv)
    root = pathlib.Path(args.root).resolve()
    if not root.is_dir():
        parser.error(f"--root {args.root}: not a folder")
    if args.top < 1:
        parser.error(f"--top {args.top}: expected a positive number of rows")
    stats = collect(root, args.top, base=REPO if root.is_relative_to(REPO) else root.parent)
    stats["git_commit"] = _git("rev-parse", "--short", "HEAD")
    stats["dirty"] = bool(_git("status", "--porcelain", "--", str(root)))
    markdown = to_markdown(stats)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    sys.stdout.write(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
