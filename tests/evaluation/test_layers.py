"""The harness sits above the user tools: `sagefm.tl` imports neither `sagefm.pl` nor the harness."""

from __future__ import annotations

import ast
from pathlib import Path

import sagefm.tl


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "sagefm":
                names |= {f"sagefm.{alias.name}" for alias in node.names}
    return names


def test_tl_imports_neither_pl_nor_evaluation() -> None:
    files = sorted(Path(sagefm.tl.__file__).parent.glob("*.py"))
    assert len(files) > 3
    for path in files:
        bad = {
            m for m in _imported_modules(path) if m.startswith(("sagefm.pl", "sagefm.evaluation"))
        }
        assert not bad, f"{path.name} imports {sorted(bad)}"
