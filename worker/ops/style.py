"""One style for every ``payouts`` command: declared once, answered once.

A command is a function that takes the parsed arguments and returns an :class:`Answer`:
one human line (``text``), the same answer as data (``data``, printed as one JSON object
with ``--json``), optional detail rows printed before the answer line in human mode, and
the exit code. :func:`command` declares it: its help, its description, every flag with its
help, and ``--json`` added for it. Nothing else prints::

    @command("pause", "stop create requests (every bank, or --bank CODE)",
             arg("--bank", help="one bank code (default: every bank)"),
             arg("--reason", required=True, help="why (recorded)"))
    def cmd_pause(args: argparse.Namespace) -> Answer:
        p = pause(...)
        return Answer(f"paused {p.scope}: {p.reason}", {"scope": p.scope, "reason": p.reason})

Times in answers are ISO-8601 UTC (:func:`iso`); an error is an Answer with a non-zero
``code`` (or a :class:`~worker.errors.PayoutError`, turned into one by :func:`run`).
Commands with their own parser (doctor, health, enqueue, ...) use :func:`parser` and
:func:`emit` for the same flags and output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Final, TextIO

DIST: Final = "payout-worker"


@dataclass(frozen=True)
class Answer:
    """What a command answers: one line for a person, the same as data for a program."""

    text: str
    data: Mapping[str, Any] = field(default_factory=dict)
    code: int = 0
    #: detail lines (human mode only), printed before the answer line
    rows: Sequence[str] = ()


@dataclass(frozen=True)
class Arg:
    """One positional argument or flag: ``argparse.add_argument``'s arguments; ``help`` required."""

    names: tuple[str, ...]
    kwargs: Mapping[str, Any]


def arg(*names: str, help: str, **kwargs: Any) -> Arg:
    """A positional argument or flag of a command; every one has a help text."""
    return Arg(names, {"help": help, **kwargs})


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    args: tuple[Arg, ...]
    func: Callable[[argparse.Namespace], Answer]


#: the commands declared with :func:`command`, in declaration order
COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, *args: Arg, description: str | None = None
) -> Callable[[Callable[[argparse.Namespace], Answer]], Callable[[argparse.Namespace], Answer]]:
    """Declare a ``payouts`` command: its one-line help, a longer description, its arguments."""

    def register(func: Callable[[argparse.Namespace], Answer]) -> Callable[[argparse.Namespace], Answer]:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} declared twice")
        COMMANDS[name] = Command(name, help, description or help, tuple(args), func)
        return func

    return register


def version() -> str:
    """The installed distribution's version (``payouts --version``)."""
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object instead of text")


def parser(prog: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """An argument parser in the house style: a description, ``--json``."""
    p = argparse.ArgumentParser(prog=prog, description=description, **kwargs)
    add_json_flag(p)
    return p


def add_commands(sub: Any) -> None:
    """Add every declared command to an ``add_subparsers`` object."""
    for c in COMMANDS.values():
        p = sub.add_parser(c.name, help=c.help, description=c.description)
        for a in c.args:
            p.add_argument(*a.names, **a.kwargs)
        add_json_flag(p)
        p.set_defaults(func=c.func)


def iso(ts: float | str | None) -> str | None:
    """A Unix time as ISO-8601 UTC with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    if ts is None or ts == "":
        return None
    t = dt.datetime.fromtimestamp(float(ts), tz=dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def emit(answer: Answer, *, as_json: bool, out: TextIO | None = None) -> int:
    """Print the answer: one JSON object (``--json``), else the detail rows and one line."""
    f = out or sys.stdout
    if as_json:
        doc = {"ok": answer.code == 0, "message": answer.text, **answer.data}
        f.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    else:
        for row in answer.rows:
            f.write(row + "\n")
        f.write(answer.text + "\n")
    f.flush()
    return answer.code


def missing_extra(exc: ModuleNotFoundError, extra: str, what: str) -> Answer:
    """The answer for a command whose optional extra is not installed."""
    return Answer(
        f"error: {what} needs the '{extra}' extra ({exc.name} is not installed): "
        f"pip install 'payout-worker[{extra}]'",
        {"error": "missing_extra", "extra": extra, "module": exc.name},
        code=2,
    )
