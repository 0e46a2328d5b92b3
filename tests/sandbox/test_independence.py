"""The sandbox imports nothing of the worker: it is the adversary, not a copy of it."""

from __future__ import annotations

import ast
from pathlib import Path

SANDBOX = Path(__file__).resolve().parents[2] / "sandbox"
FORBIDDEN = ("worker", "config", "tasks")


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_sandbox_imports_no_worker_config_or_tasks_module():
    """No module of sandbox/ imports worker.*, config.* or tasks.* (also inside functions)."""
    offending = {
        f"{path.name}: {name}"
        for path in sorted(SANDBOX.glob("*.py"))
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert offending == set()
    assert len(list(SANDBOX.glob("*.py"))) >= 10  # the scan did look at the package
