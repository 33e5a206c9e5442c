"""Imports point down the layers: edge_agent (1) <- training (2) <- export (3) <- deploy (4).

The agent never imports training or release tooling, training never imports export or the gate, and so
on. Every import counts, including those inside functions (a lazy import is still a dependency).
``scripts/`` may import anything; it is parsed so that a syntax error there still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"edge_agent": 1, "training": 2, "export": 3, "deploy": 4}
CHECKED = (*LAYERS, "scripts")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the tree, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return sorted(found)


def upward_imports(path: Path) -> list[str]:
    """``file:line: a -> b`` for each import in ``path`` of a higher layer than its own."""
    relative = path.relative_to(ROOT)
    own = LAYERS.get(relative.parts[0])
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if own is None:  # scripts: any import is allowed
        return []
    return [
        f"{relative}:{line}: {relative.parts[0]} imports {module}"
        for line, module in imported_modules(tree)
        if LAYERS.get(module.split(".")[0], 0) > own
    ]


def test_every_import_points_down_a_layer() -> None:
    files = sorted(p for top in CHECKED for p in (ROOT / top).rglob("*.py"))
    assert len(files) > 50  # the tree was found
    problems = [problem for path in files for problem in upward_imports(path)]
    assert not problems, "imports that point up a layer:\n" + "\n".join(problems)


def test_a_lazy_import_inside_a_function_is_seen() -> None:
    tree = ast.parse("def f():\n    from training.data import read_urbansound8k\n")
    assert imported_modules(tree) == [(2, "training.data")]
