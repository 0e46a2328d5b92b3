"""``payouts enqueue``: one payout from flags, or many from a CSV or JSON-lines file.

The beneficiary's name and account number are never command-line values (shell history,
``ps``, process accounting): a single payout reads them from ``--name-file`` and
``--number-file`` (a path, or ``-`` for standard input; both ``-``: the name on the first
line, the number on the second; on a terminal they are asked for without echo).

Every row is validated first (the same :func:`worker.payout.validate_payout` the
producer uses, with the configured banks and limits), and checked against orders
already stored. If any row is bad -- a broken field, an id repeated in the file,
an id already stored with different data, or an id used before whose order has
expired (ids are never reused) -- each problem is printed with its line number and
**nothing** is enqueued. Otherwise every row goes through
:func:`worker.producer.enqueue_payout`, which is idempotent per ``payout_cl_id``.
The file's digest is recorded in ``payouts:imports``: running an already imported
file again is refused unless ``--force`` (which enqueues only what is missing, and
still never re-creates an expired id).

CSV: a header row naming the payout fields (``payout_cl_id,amount,bank_name,name,
number[,notify_url]``); ``amount`` in minor units (IDR x 100) as digits.
JSON lines: one object per line with the same fields; ``amount`` a JSON integer.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker import keys
from worker.errors import DuplicatePayout, InvalidPayout
from worker.ops.style import iso, parser
from worker.payout import FIELDS, Payout, validate_payout
from worker.settings import Settings, get_settings

FORMATS = ("csv", "jsonl")


@dataclass(frozen=True)
class Row:
    line: int
    data: dict[str, Any]


@dataclass
class Problem:
    line: int
    field: str
    rule: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field}: {self.rule}"


@dataclass
class Plan:
    """Validated rows and what enqueueing them would do."""

    payouts: list[tuple[int, Payout]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    present: set[str] = field(default_factory=set)


def _csv_value(name: str, raw: str | None) -> Any:
    if raw is None:
        return None
    if name == "notify_url" and raw == "":
        return None
    if name == "amount" and raw.isascii() and raw.isdigit():
        return int(raw)
    return raw


def read_csv(text: str) -> Iterator[Row | Problem]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    start = 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field longer than csv.field_size_limit()
            yield Problem(start, "file", f"is not readable as CSV from here on ({exc})")
            return
        line, start = start, reader.line_num + 1
        if not values or all(not v.strip() for v in values):
            continue
        if header is None:
            header = [h.strip() for h in values]
            header[0] = header[0].lstrip("\ufeff")
            unknown = [h for h in header if h not in FIELDS]
            for h in unknown:
                yield Problem(line, h[:40] or "(empty)", "is not a payout field (header row)")
            if unknown:
                return
            continue
        if len(values) != len(header):
            yield Problem(line, "row", f"has {len(values)} values, the header names {len(header)}")
            continue
        yield Row(line, {h: _csv_value(h, v) for h, v in zip(header, values, strict=True)})
    if header is None:
        yield Problem(1, "file", "is empty: expected a header row naming the payout fields")


def read_jsonl(text: str) -> Iterator[Row | Problem]:
    # lines end at "\n" only: str.splitlines() would also split at U+2028, U+0085 and other
    # separators that JSON allows inside a string (D32)
    for n, line in enumerate(text.split("\n"), start=1):
        raw = line.removesuffix("\r")
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield Problem(n, "line", f"is not valid JSON ({exc.msg})")
            continue
        if not isinstance(doc, dict):
            yield Problem(n, "line", "must be a JSON object")
            continue
        yield Row(n, doc)


def plan_rows(rows: Sequence[Row | Problem], s: Settings, store: Any | None) -> Plan:
    """Validate every row; find repeats in the file and conflicts with stored orders."""
    plan = Plan()
    first_line: dict[str, int] = {}
    for item in rows:
        if isinstance(item, Problem):
            plan.problems.append(item)
            continue
        try:
            payout = validate_payout(
                item.data,
                banks=s.bank_list,
                amount_min=s.amount_min_minor,
                amount_max=s.amount_max_minor,
            )
        except InvalidPayout as exc:
            plan.problems.extend(Problem(item.line, p.field, p.rule) for p in exc.problems)
            continue
        pid = payout.payout_cl_id
        if pid in first_line:
            plan.problems.append(
                Problem(item.line, "payout_cl_id", f"repeats the id of line {first_line[pid]}")
            )
            continue
        first_line[pid] = item.line
        plan.payouts.append((item.line, payout))
    if store is not None and plan.payouts:
        existing = store.get_many(p.payout_cl_id for _, p in plan.payouts)
        used = store.used_before(p.payout_cl_id for _, p in plan.payouts if p.payout_cl_id not in existing)
        for line, payout in plan.payouts:
            order = existing.get(payout.payout_cl_id)
            if order is None:
                if payout.payout_cl_id in used:
                    plan.problems.append(
                        Problem(
                            line,
                            "payout_cl_id",
                            "was used before and its order has expired: ids are never reused",
                        )
                    )
                continue
            if store.same_data(order.fields.get("fp", ""), payout):
                plan.present.add(payout.payout_cl_id)
            else:
                plan.problems.append(
                    Problem(line, "payout_cl_id", "already stored with different data (conflict)")
                )
    plan.problems.sort(key=lambda p: p.line)
    return plan


#: the single-payout flags; the personal fields come from files or standard input
_FLAGS = ("id", "amount", "bank", "name_file", "number_file")


class _Refused(Exception):
    """A single-payout flag problem, said without the value."""


def _personal_fields(args: argparse.Namespace) -> tuple[str, str]:
    """(name, number) from ``--name-file`` / ``--number-file`` (``-``: standard input)."""
    sources = {"name": args.name_file, "number": args.number_file}
    stdin_fields = [f for f, src in sources.items() if src == "-"]
    out: dict[str, str] = {}
    if stdin_fields:
        if sys.stdin.isatty():
            import getpass

            for f in stdin_fields:  # asked without echo: nothing left on the screen
                out[f] = getpass.getpass(f"beneficiary {'account number' if f == 'number' else 'name'}: ")
        else:
            lines = sys.stdin.read().splitlines()
            if len(lines) < len(stdin_fields):
                raise _Refused(
                    f"standard input: expected {' then '.join(stdin_fields)}, one a line "
                    f"(got {len(lines)} line(s))"
                )
            out.update(zip(stdin_fields, lines, strict=False))
    for f, src in sources.items():
        if src == "-":
            continue
        try:
            out[f] = Path(src).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise _Refused(f"--{f}-file: cannot read {src}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise _Refused(f"--{f}-file: {src} is not UTF-8 text") from None
    return out["name"], out["number"]


def _rows_from_flags(args: argparse.Namespace) -> list[Row | Problem]:
    missing = [f"--{n.replace('_', '-')}" for n in _FLAGS if getattr(args, n) is None]
    if missing:
        return [Problem(0, "flags", f"missing {', '.join(missing)} (or use --file)")]
    amount: Any = args.amount
    if amount.isascii() and amount.isdigit():
        amount = int(amount)
    try:
        name, number = _personal_fields(args)
    except _Refused as exc:
        return [Problem(0, "flags", str(exc))]
    return [
        Row(
            0,
            {
                "payout_cl_id": args.id,
                "amount": amount,
                "bank_name": args.bank,
                "name": name,
                "number": number,
                "notify_url": args.notify_url,
            },
        )
    ]


def build_parser() -> argparse.ArgumentParser:
    p = parser(
        "payouts enqueue",
        "Enqueue one payout from flags, or many from a CSV / JSON-lines file. "
        "Every row is validated first; one bad row enqueues nothing.",
    )
    p.add_argument("--file", type=Path, help="CSV (header row) or JSON-lines file of payouts")
    p.add_argument("--format", choices=FORMATS, help="file format (default: by extension)")
    p.add_argument("--id", help="payout_cl_id")
    p.add_argument("--amount", help="amount in minor units (IDR x 100), digits")
    p.add_argument("--bank", help="bank_name (a code from PAYOUT_BANK_LIST)")
    p.add_argument(
        "--name-file", metavar="PATH", help="file holding the beneficiary account name ('-': standard input)"
    )
    p.add_argument(
        "--number-file",
        metavar="PATH",
        help="file holding the beneficiary account number ('-': standard input; never a flag value)",
    )
    # refused with a message that does not repeat the value (argparse's own error would)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--number", help=argparse.SUPPRESS)
    p.add_argument("--notify-url", help="callback URL (default PAYOUT_NOTIFY_URL)")
    p.add_argument("--dry-run", action="store_true", help="validate and report; enqueue nothing")
    p.add_argument(
        "--force",
        action="store_true",
        help="enqueue an already imported file again (only what is missing; expired ids are refused anyway)",
    )
    p.add_argument("--requested-by", default=None, help="who asks for these payouts (cannot approve them)")
    p.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="skip the duplicate-beneficiary guard (same bank+account+amount under another id)",
    )
    return p


def _detect_format(path: Path, given: str | None) -> str | None:
    if given:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from worker.ops.style import Answer, emit

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    def done(text: str, code: int, rows: Sequence[str] = (), **data: Any) -> int:
        """The one answer (with --json, one JSON object holding the problems too)."""
        if args.json:
            data["problems"] = list(rows)
        elif rows:
            print("\n".join(rows), file=sys.stderr)
        return emit(Answer(text, data, code=code), as_json=args.json, out=sys.stderr if code else None)

    s = get_settings()
    digest: str | None = None
    if args.name is not None or args.number is not None:
        return done(
            "error: the beneficiary's name and account number are never taken from the command line "
            "(shell history, ps): use --name-file and --number-file (a path, or - for standard input)",
            2,
        )
    if args.file is not None:
        if any(getattr(args, n) is not None for n in _FLAGS):
            return done("error: use either --file or the single-payout flags", 2)
        fmt = _detect_format(args.file, args.format)
        if fmt is None:
            return done(f"error: cannot tell the format of {args.file}: use --format csv|jsonl", 2)
        try:
            raw = args.file.read_bytes()
            text = raw.decode("utf-8")
        except OSError as exc:
            return done(f"error: cannot read {args.file}: {exc.strerror}", 2)
        except UnicodeDecodeError:
            return done(f"error: {args.file} is not UTF-8 text", 2)
        digest = hashlib.sha256(raw).hexdigest()
        rows = list(read_csv(text) if fmt == "csv" else read_jsonl(text))
    else:
        rows = _rows_from_flags(args)

    from worker.logs import configure_logging
    from worker.runtime import get_runtime

    configure_logging(s.log_format, "ERROR")
    rt = get_runtime()
    source = str(args.file) if args.file else "flags"
    notes: list[str] = []
    previous = rt.redis.hget(keys.IMPORTS, digest) if digest else None
    if previous:
        info = json.loads(previous)
        when = iso(float(info.get("at", 0)))
        if not (args.force or args.dry_run):
            return done(
                f"{source}: already imported at {when} ({info.get('rows')} rows); nothing "
                "enqueued (use --force to enqueue only what is missing)",
                1,
                imported_at=when,
            )
        notes.append(
            f"{source}: already imported at {when} ({info.get('rows')} rows); enqueueing only what is missing"
        )
    plan = plan_rows(rows, s, rt.store)
    if plan.problems:
        lines = len({p.line for p in plan.problems})
        return done(
            f"{len(plan.problems)} problem(s) in {lines} row(s); nothing enqueued",
            1,
            [f"{source}: {problem}" for problem in plan.problems],
            enqueued=0,
        )
    if not plan.payouts:
        return done(f"{source}: no payouts found; nothing enqueued", 1, enqueued=0)
    if args.dry_run:
        new = len(plan.payouts) - len(plan.present)
        return done(
            f"dry run: {len(plan.payouts)} valid row(s): {new} new, "
            f"{len(plan.present)} already present; nothing enqueued",
            0,
            notes,
            valid=len(plan.payouts),
            new=new,
            present=len(plan.present),
        )

    from worker.producer import enqueue_payout

    new = present = conflicts = 0
    for line, p in plan.payouts:
        try:
            enqueue_payout(
                p.payout_cl_id,
                p.amount,
                p.bank_name,
                p.name,
                p.number,
                p.notify_url,
                runtime=rt,
                requested_by=args.requested_by,
                allow_duplicate=args.allow_duplicate,
            )
        except DuplicatePayout as exc:  # stored (or expired) between the check and now
            conflicts += 1
            what = (
                "was used before and its order has expired"
                if exc.expired
                else ("stored meanwhile with different data")
            )
            notes.append(f"{source}: line {line}: payout_cl_id: {what}")
            continue
        if p.payout_cl_id in plan.present:
            present += 1
        else:
            new += 1
    if digest is not None and not conflicts:
        rt.redis.hsetnx(
            keys.IMPORTS,
            digest,
            json.dumps({"at": time.time(), "file": Path(source).name, "rows": len(plan.payouts)}),
        )
    return done(
        f"enqueued {new} new, {present} already present, {conflicts} conflict(s)",
        1 if conflicts else 0,
        notes,
        new=new,
        present=present,
        conflicts=conflicts,
    )


if __name__ == "__main__":
    raise SystemExit(main())
