"""House rules a reviewer would otherwise check by eye: every test says its rule, no hand layout."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("worker", "tasks", "sandbox", "tests") for p in (ROOT / d).rglob("*.py")]


def test_every_test_has_a_docstring() -> None:
    """Each test function states the rule it checks in its docstring (STYLE 13)."""
    # given every test module of the suite
    missing = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_test = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test"
            )
            # when a test has no docstring, then it is listed
            if is_test and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(ROOT)}::{node.name}")
    assert not missing, f"{len(missing)} test(s) without a docstring: {missing[:20]}"


def test_no_hand_layout_markers() -> None:
    """`ruff format` lays out the code: no fmt-skip markers anywhere (real tables use fmt: off/on)."""
    # given every Python file of the project, when one carries the marker, then it is listed
    marked = [
        str(p.relative_to(ROOT)) for p in SOURCES if "# fmt: " + "skip" in p.read_text(encoding="utf-8")
    ]
    assert not marked, f"fmt-skip markers in {marked}"


def test_one_seam_for_transitions() -> None:
    """Only worker/moves.py logs ``payout.transition`` and hands finals to result delivery
    (issue 19): a new entry point cannot forget either."""
    # given every product module
    logged, delivered = [], []
    for path in (ROOT / "worker").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(ROOT))
        # when one logs the event or calls deliver itself, then it is listed
        if '"payout.transition"' in text and rel != "worker/moves.py":
            logged.append(rel)
        if "deliver(rt" in text and rel not in ("worker/moves.py", "worker/sweep.py", "worker/results.py"):
            delivered.append(rel)
    assert not logged, f"transition logged outside the seam: {logged}"
    assert not delivered, f"result delivery outside the seam: {delivered}"
