"""The `payouts` command line has one style: help for every command and flag, `--json`
everywhere, one answer line, ISO-8601 times, a clear message for a missing extra."""

from __future__ import annotations

import argparse
import importlib
import io
import json
from typing import Any

import pytest

from worker.ops import cli
from worker.ops.style import Answer, emit, iso, version

#: delegated commands whose parser is built from their module's ``build_parser``
DELEGATED_PARSERS = ("doctor", "health", "enqueue", "demo", "bench", "sandbox")


def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def parser_of(name: str) -> argparse.ArgumentParser:
    if name in DELEGATED_PARSERS:
        module = importlib.import_module(cli.DELEGATED[name][0])
        built: argparse.ArgumentParser = module.build_parser()
        return built
    return subparsers(cli.build_parser())[name]


def undocumented(p: argparse.ArgumentParser) -> list[str]:
    """The arguments of a parser that have no help text."""
    return [
        "/".join(a.option_strings) or a.dest
        for a in p._actions
        if a.help in (None, "") and not isinstance(a, argparse._HelpAction)
    ]


def test_every_command_is_listed_with_help() -> None:
    """`payouts --help` lists every command with a one-line help."""
    # given / when
    action = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in action._choices_actions}
    # then
    assert set(helps) == set(subparsers(cli.build_parser()))
    assert all(helps.values()), helps


@pytest.mark.parametrize("name", sorted(subparsers(cli.build_parser())))
def test_every_command_and_flag_has_help(name: str) -> None:
    """Each command has a description and every one of its arguments a help text."""
    # given
    p = parser_of(name)
    # when
    missing = undocumented(p)
    # then
    assert p.description, name
    assert missing == [], f"{name}: {missing}"


@pytest.mark.parametrize("name", sorted(set(subparsers(cli.build_parser())) - {"sandbox"}))
def test_every_command_takes_json(name: str) -> None:
    """`--json` is a flag of every command (the sandbox is a server, not a command with an answer)."""
    # given
    p = parser_of(name)
    # when
    flags = {o for a in p._actions for o in a.option_strings}
    # then
    assert "--json" in flags


def test_sandbox_help_names_the_command_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`payouts sandbox --help` names itself `payouts sandbox`, `python -m sandbox` names that."""
    # given
    monkeypatch.setattr("sys.argv", ["/venv/bin/payouts", "sandbox", "--help"])
    # when
    through_payouts = parser_of("sandbox").prog
    monkeypatch.setattr("sys.argv", ["/repo/sandbox/__main__.py"])
    direct = parser_of("sandbox").prog
    # then
    assert through_payouts == "payouts sandbox"
    assert direct == "python -m sandbox"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`payouts --version` prints the installed distribution's version."""
    # when
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    # then
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"payouts {version()}"
    assert version()[0].isdigit()


def test_json_answer_is_one_line_and_text_answer_ends_with_one_line() -> None:
    """--json prints exactly one JSON object; text prints the rows, then one answer line."""
    # given
    answer = Answer("2 order(s)", {"orders": [{"id": "a"}, {"id": "b"}]}, rows=["a", "b"])
    as_json, as_text = io.StringIO(), io.StringIO()
    # when
    emit(answer, as_json=True, out=as_json)
    emit(answer, as_json=False, out=as_text)
    # then
    lines = as_json.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"ok": True, "message": "2 order(s)", "orders": [{"id": "a"}, {"id": "b"}]}
    assert as_text.getvalue().splitlines() == ["a", "b", "2 order(s)"]


def test_times_are_iso_8601_utc() -> None:
    """Epoch seconds become ISO-8601 UTC with milliseconds; nothing stays nothing."""
    # when / then
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso("1767225600.25") == "2026-01-01T00:00:00.250Z"
    assert iso(None) is None and iso("") is None


@pytest.mark.parametrize("name", ["sandbox", "demo", "bench"])
def test_a_missing_extra_is_named(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the `sandbox` extra, the command says which extra to install (exit 2), no traceback."""

    # given: the extra's library is not importable
    def missing(module: str, *a: Any) -> Any:
        raise ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")

    monkeypatch.setattr(importlib, "import_module", missing)
    # when
    code = cli.main([name, "--json"])
    # then
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    doc = json.loads(err[0])
    assert doc["extra"] == "sandbox" and "pip install 'payout-worker[sandbox]'" in doc["message"]


def test_a_payout_error_is_one_answer_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused command answers one line (text or JSON) and exits 1."""
    # given: approve with no ids (refused before any store is touched)
    # when
    code = cli.main(["approve", "--by", "checker", "--json"])
    # then
    out = capsys.readouterr().out.splitlines()
    assert code == 1 and len(out) == 1
    assert json.loads(out[0])["ok"] is False and "give order ids" in json.loads(out[0])["message"]


def test_a_missing_extra_is_named_before_the_command_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo imports the sandbox's server only in a child process: the extra is checked first."""
    # given
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "aiohttp" else real(n, *a))
    # when
    code = cli.main(["demo", "--payouts", "1"])
    # then
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        "error: payouts demo needs the 'sandbox' extra (aiohttp is not installed): "
        "pip install 'payout-worker[sandbox]'"
    )
