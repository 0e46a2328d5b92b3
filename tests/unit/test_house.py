"""House rules a reviewer would otherwise check by eye: every test says its rule, no hand layout."""

from __future__ import annotations

import ast
import re
import tomllib
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


# -- the repository explains itself ---------------------------------------------------------

DOCS = ROOT / "docs"
#: where citations may live: every text file of the repository (build output and venvs excluded)
TEXT_DIRS = ("worker", "tasks", "sandbox", "tests", "docs", "config", ".ci")
TEXT_FILES = (
    "README.md",
    "CHANGELOG.md",
    ".env.example",
    "Procfile",
    "docker-compose.yml",
    "pyproject.toml",
    "Makefile",
    "constraints.txt",
)
TEXT_SUFFIXES = {".py", ".md", ".lua", ".toml", ".yml", ".yaml", ".json", ".txt", ".conf", ".css", ".cfg", ""}
#: a decision number (D1, D21; not D-NTF, a gateway source tag)
DECISION = re.compile(r"(?<![\w-])D(\d{1,3})\b")
#: a gateway section (§2a, §4.1, §11.3)
SECTION = re.compile(r"§\s?(\d+[a-z]?(?:\.\d+)?)")
#: a test named in docs/decisions.md
TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")


def _text_files() -> list[Path]:
    paths = [ROOT / name for name in TEXT_FILES if (ROOT / name).is_file()]
    for d in TEXT_DIRS:
        paths += [
            p
            for p in (ROOT / d).rglob("*")
            if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
        ]
    return paths


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def _cited(pattern: re.Pattern[str]) -> dict[str, list[str]]:
    """Each match of ``pattern`` in the repository -> the files citing it."""
    found: dict[str, list[str]] = {}
    for path in _text_files():
        for match in pattern.finditer(_read(path)):
            found.setdefault(match.group(1), []).append(str(path.relative_to(ROOT)))
    return found


def _decision_entries() -> set[str]:
    text = (DOCS / "decisions.md").read_text(encoding="utf-8")
    return set(re.findall(r"^### D(\d+) ", text, flags=re.MULTILINE))


def test_every_decision_cited_has_an_entry() -> None:
    """Every `Dnn` cited anywhere in the repository has its entry in docs/decisions.md."""
    # given the entries of docs/decisions.md
    entries = _decision_entries()
    # when every decision number cited in the repository is looked up
    missing = {f"D{n}": files[:3] for n, files in _cited(DECISION).items() if n not in entries}
    # then none is missing
    assert not missing, f"decisions cited without an entry in docs/decisions.md: {missing}"


def test_decision_entries_are_in_order_each_once() -> None:
    """docs/decisions.md holds each number once, in ascending order, D1-D56 all present
    (later numbers are reserved in ranges, so a range may leave a gap)."""
    # given the entry headings, in file order
    text = (DOCS / "decisions.md").read_text(encoding="utf-8")
    numbers = [int(n) for n in re.findall(r"^### D(\d+) ", text, flags=re.MULTILINE)]
    # then they ascend without repeats and the reviewed range is complete
    assert numbers == sorted(set(numbers)), numbers
    assert set(range(1, 57)) <= set(numbers)


def test_every_test_named_by_a_decision_exists() -> None:
    """A test that docs/decisions.md names as proof is a real test function in that file."""
    # given every `tests/...py::test_name` in docs/decisions.md
    refs = TEST_REF.findall((DOCS / "decisions.md").read_text(encoding="utf-8"))
    assert refs
    missing = []
    for file, name in refs:
        path = ROOT / file
        # when the file does not define the function, then it is listed
        defined = path.is_file() and any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
        if not defined:
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/decisions.md names tests that do not exist: {missing}"


def test_every_gateway_section_cited_has_a_heading() -> None:
    """Every `§N` cited in the repository is a heading of docs/gateway.md."""
    # given the section headings of docs/gateway.md
    text = (DOCS / "gateway.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ §(\S+)", text, flags=re.MULTILINE))
    # when every cited section is looked up
    missing = {s: files[:3] for s, files in _cited(SECTION).items() if s not in headings}
    # then none is missing
    assert not missing, f"sections cited without a heading in docs/gateway.md: {missing}"


def test_no_file_cites_documents_outside_the_repository() -> None:
    """No file points at the design notes or the gateway spec kept outside this repository."""
    # given the names of documents the repository does not contain (spelled so that this
    # file does not match itself)
    spec, design = "SP" + "EC", "DES" + "IGN"
    outside = re.compile("|".join([re.escape(".." + "/shared"), rf"\b{spec}\b", rf"\b{design}\b"]))
    # when a text file mentions one, then it is listed
    citing = sorted(
        f"{p.relative_to(ROOT)}: {m.group(0)}" for p in _text_files() for m in outside.finditer(_read(p))
    )
    assert not citing, f"citations of documents not in the repository: {citing[:20]}"


def _map_rows() -> dict[str, str]:
    """The README's "Where things are" table: package folder -> its row."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([\w/]+/)` \|(.*)", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_readme_map_lists_every_module() -> None:
    """The README's map names every module of worker/, tasks/ and sandbox/ in its package's row."""
    # given the map's rows and every package folder holding Python modules
    rows = _map_rows()
    missing = []
    for top in ("worker", "tasks", "sandbox"):
        for module in sorted((ROOT / top).rglob("*.py")):
            if module.name == "__init__.py" or "__pycache__" in module.parts:
                continue
            package = f"{module.parent.relative_to(ROOT).as_posix()}/"
            # when the module's package has no row, or the row does not name the module
            if f"`{module.name}`" not in rows.get(package, ""):
                # then it is listed
                missing.append(f"{package}{module.name}")
    assert not missing, f"modules missing from the README map: {missing}"


def test_tasks_and_sandbox_are_imported_only_under_worker() -> None:
    """`tasks/` and `sandbox/` are imported as `worker.tasks` and `worker.sandbox` only: a
    top-level `import tasks` would load the same file a second time under another name."""
    # given every Python file of the project
    offending = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            # when one imports a top-level `tasks` or `sandbox`, then it is listed
            offending += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("tasks", "sandbox")
            ]
    assert not offending, offending


def test_every_product_module_is_under_an_import_contract() -> None:
    """Each top-level module and product package of worker/ (the desk, the console) is a source
    of the contract that keeps the product off the operator tools, the harness and the tasks,
    or of the web process's contract."""
    # given the import contracts of pyproject.toml
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    covered: set[str] = set()
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["name"].startswith(("the product never imports", "the web process")):
            covered |= set(contract["source_modules"])
    # when a module of worker/ is in neither, then it is listed
    modules = {f"worker.{p.stem}" for p in (ROOT / "worker").glob("*.py") if p.name != "__init__.py"}
    # and each product package (the operator tools, harness, tasks and sandbox have their own)
    packages = {f"worker.{p.parent.name}" for p in (ROOT / "worker").glob("*/__init__.py")}
    modules |= packages - {"worker.ops", "worker.harness", "worker.tasks", "worker.sandbox"}
    assert covered and not modules - covered, sorted(modules - covered)


def test_every_place_a_decision_names_exists() -> None:
    """Each file docs/decisions.md and docs/gateway.md name exists, and so does each function
    or class they name beside a module (`worker/x.py` `name`)."""
    # given the two documents
    text = "".join((DOCS / name).read_text(encoding="utf-8") for name in ("decisions.md", "gateway.md"))
    missing = []
    # when a named file does not exist, then it is listed
    for path in set(re.findall(r"`((?:worker|tasks|sandbox|tests|config|docs)/[\w/.-]+)`", text)):
        if not (ROOT / path).exists():
            missing.append(path)
    # when a name given beside a module is not defined there, then it is listed
    for module, names in re.findall(
        r"`((?:worker|tasks|sandbox)/[\w/]+\.(?:py|lua))`((?:,? `[\w.]+`)+)", text
    ):
        source = (ROOT / module).read_text(encoding="utf-8") if (ROOT / module).is_file() else ""
        for name in re.findall(r"`([\w.]+)`", names):
            short = name.rsplit(".", 1)[-1]
            if not re.search(rf"\b(def|class)\s+{short}\b|^\s*{short}\b.*=", source, flags=re.MULTILINE):
                missing.append(f"{module} {name}")
    assert not missing, f"docs name places that do not exist: {sorted(missing)}"


def test_every_complexity_exception_says_why() -> None:
    """Each function above the complexity cap (ruff C901, 13) carries `# noqa: C901 — reason`."""
    # given every Python file of the project
    bare = []
    for path in SOURCES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            # when an exception has no reason after the dash, then it is listed
            match = re.search(r"#\s*noqa:\s*C901(.*)$", line)
            if match and not re.match(r"\s+—\s+\S.{9,}", match.group(1)):
                bare.append(f"{path.relative_to(ROOT)}:{number}")
    assert not bare, f"C901 exceptions without a reason: {bare}"


def test_changelog_unreleased_has_one_heading_per_kind() -> None:
    """CHANGELOG.md's [Unreleased] is grouped by kind, each once, in Keep a Changelog order
    (Added, Changed, Deprecated, Removed, Fixed, Security), not by work round."""
    # given the headings of the [Unreleased] section
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^#{3,} (.+)$", unreleased, flags=re.MULTILINE)
    # then each is a bare kind, once, in order
    order = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]
    assert headings and all(h in order for h in headings), headings
    assert headings == sorted(set(headings), key=order.index), headings


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
