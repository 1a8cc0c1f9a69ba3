"""Lines of Python under tokend/store/ at given revisions, per module: physical lines and code
lines (no blank line, comment or docstring), and the same without the definitions that now
live in tokend/model.py (the data model, which an older store kept in its __init__.py).

    python bench/store_lines.py 1a8e3f5 44e4d3f HEAD
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def code_lines(source: str) -> set[int]:
    """Line numbers holding code: tokens other than comments, and strings that are not a
    statement of their own (docstrings)."""
    docstrings = {node.value.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                  and isinstance(node.value.value, str)}
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in skip or (token.type == tokenize.STRING
                                  and token.start[0] in docstrings):
            continue
        lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def model_lines(source: str, names: set[str]) -> set[int]:
    """Lines of the top-level definitions whose names tokend/model.py defines today."""
    found: set[int] = set()
    for node in ast.parse(source).body:
        targets = ([node.name] if isinstance(node, ast.ClassDef | ast.FunctionDef)
                   else [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)])
        if set(targets) & names:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            found.update(range(first, node.end_lineno + 1))
    return found


def main(revisions: list[str]) -> None:
    model = ast.parse((ROOT / "tokend" / "model.py").read_text())
    names = {n.name for n in model.body if isinstance(n, ast.ClassDef)} | {
        t.id for n in model.body if isinstance(n, ast.Assign) for t in n.targets
        if isinstance(t, ast.Name)}
    print("| revision | module | lines | code lines | lines without the model | code lines "
          "without the model |")
    print("|---|---|---:|---:|---:|---:|")
    for rev in revisions:
        totals = [0, 0, 0, 0]
        paths = [p for p in git("ls-tree", "-r", "--name-only", rev, "tokend/store").split()
                 if p.endswith(".py")]
        for path in paths:
            source = git("show", f"{rev}:{path}")
            physical = set(range(1, source.count("\n") + 1))
            code, moved = code_lines(source), model_lines(source, names)
            row = [len(physical), len(code), len(physical - moved), len(code - moved)]
            totals = [a + b for a, b in zip(totals, row, strict=True)]
            print(f"| {rev} | {path.removeprefix('tokend/')} | "
                  + " | ".join(f"{n:,}" for n in row) + " |")
        print(f"| {rev} | **total** | " + " | ".join(f"**{n:,}**" for n in totals) + " |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["HEAD"])
