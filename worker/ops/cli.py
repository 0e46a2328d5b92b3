"""The ``payouts`` command line: one style for every command (worker/ops/style.py).

Each command is declared once with its help, its flags' help and ``--json``; it answers
one line (or one JSON object), with detail rows before it where it lists things.
Commands that bring their own parser (``doctor``, ``health``, ``enqueue``, ``demo``,
``bench``, ``sandbox``) are listed in :data:`DELEGATED` and imported only when used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from worker.errors import PayoutError
from worker.ops.style import Answer, add_commands, arg, command, emit, iso, missing_extra, version
from worker.settings import ConfigError, get_settings
from worker.states import State

#: order fields that are bookkeeping, not facts an operator reads (``show`` leaves them out)
INTERNAL_FIELDS = frozenset({"fp", "claim_epoch", "lease", "result_pending"})
_BY_HELP = "who is acting (recorded in the order's history)"
_ID_HELP = "the order's payout_cl_id"


def _runtime() -> Any:
    from worker.logs import configure_logging
    from worker.runtime import get_runtime

    s = get_settings()
    # the answer line is the command's output: the library's own records (e.g. the audit
    # line of a resume) stay out of it; errors still show, as JSON on stderr
    configure_logging(s.log_format, "ERROR")
    return get_runtime()


def order_view(order: Any, now: float | None = None) -> dict[str, Any]:
    """An order as an operator reads it: masked personal data, ISO-8601 times, no bookkeeping."""
    now = time.time() if now is None else now
    view = {k: v for k, v in order.public().items() if k not in INTERNAL_FIELDS}
    for k in list(view):
        if k.endswith("_at") and view[k] not in (None, ""):
            with contextlib.suppress(TypeError, ValueError):
                view[k] = iso(view[k])
    if order.due_at:
        view["due_in_s"] = round(float(order.due_at) - now, 1)
    view["history"] = [
        {**h, "at": iso(h["at"])} if isinstance(h.get("at"), (int, float, str)) and h.get("at") != "" else h
        for h in order.history
    ]
    return view


@command(
    "show", "one order: state, history, next due, last gateway answer", arg("payout_cl_id", help=_ID_HELP)
)
def cmd_show(args: argparse.Namespace) -> Answer:
    order = _runtime().store.get(args.payout_cl_id)
    if order is None:
        return Answer(f"no order {args.payout_cl_id!r}", {"error": "not_found"}, code=1)
    view = order_view(order)
    rows = [f"{k:<16} {v}" for k, v in view.items() if k not in ("history", "payout_cl_id", "state")]
    rows += [
        f"  {h.get('at')}  {h.get('from') or '-':>12} -> {h.get('to'):<12} {h.get('reason', '')}"
        for h in view["history"]
    ]
    return Answer(f"{order.payout_cl_id}: {order.state.value}", view, rows=rows)


@command(
    "list",
    "open (or review) orders, optionally of one state",
    arg("--state", choices=[x.value for x in State], help="only orders in this state"),
    arg("--limit", type=int, default=100, help="at most this many orders (default 100)"),
)
def cmd_list(args: argparse.Namespace) -> Answer:
    from worker.desk.reads import list_orders

    state = State(args.state) if args.state else None
    rows = list_orders(_runtime(), state, args.limit)
    lines = [
        f"{r['payout_cl_id']:<34} {r['state']:<12} {r['amount']:>14} {r['age_s']:>9}s  {r['reason']}"
        for r in rows
    ]
    return Answer(f"{len(rows)} order(s)", {"orders": rows}, rows=lines)


@command("stats", "counts per state, oldest open order, due backlog, pauses, balance")
def cmd_stats(args: argparse.Namespace) -> Answer:
    from worker.desk.reads import stats

    st = stats(_runtime())
    sweep = "never" if st["last_sweep_age_s"] is None else f"{st['last_sweep_age_s']}s ago"
    counts = " ".join(f"{k}={v}" for k, v in sorted(st["counts"].items()) if v)
    rows = [
        f"counts           {counts or 'none'}",
        f"open             {st['open']} (due now {st['due_backlog']}, "
        f"oldest late {st['oldest_due_late_s']}s)",
        f"review           {st['review']}",
        f"last sweep       {sweep}",
    ]
    rows += [
        f"paused           {p['scope']}: {p.get('reason', '')} ({p.get('source')})" for p in st["paused"]
    ]
    if st["balance"] is not None:
        rows.append(
            f"balance          available {st['balance']['available']} ({st['balance']['age_s']}s old)"
        )
    paused = "paused" if st["paused"] else "running"
    data = {**st, "paused": [_pause_view(p) for p in st["paused"]]}
    return Answer(f"{st['open']} open, {st['review']} in review, {paused}", data, rows=rows)


@command("check", "query the gateway for one order now", arg("payout_cl_id", help=_ID_HELP))
def cmd_check(args: argparse.Namespace) -> Answer:
    from worker.desk.order_actions import check_now

    rt = _runtime()
    status = check_now(rt, args.payout_cl_id)
    order = rt.store.get(args.payout_cl_id, with_history=False)
    state = order.state.value if order else "missing"
    return Answer(f"{status.value}: now {state}", {"check": status.value, "state": state})


@command(
    "resolve",
    "close an order in review (an operator's decision, recorded)",
    arg("payout_cl_id", help=_ID_HELP),
    arg(
        "--state",
        required=True,
        choices=["succeeded", "failed"],
        help="the final state the operator established",
    ),
    arg("--note", required=True, help="why (recorded in the history)"),
    arg("--by", default="cli", help=_BY_HELP),
)
def cmd_resolve(args: argparse.Namespace) -> Answer:
    from worker.desk.order_actions import resolve

    resolve(_runtime(), args.payout_cl_id, State(args.state), args.note, by=args.by)
    return Answer(
        f"{args.payout_cl_id}: {args.state}", {"payout_cl_id": args.payout_cl_id, "state": args.state}
    )


@command(
    "pause",
    "stop create requests (every bank, or --bank CODE)",
    arg("--bank", default=None, help="pause this bank code only (default: every bank)"),
    arg("--reason", required=True, help="why (shown in pauses, health and /metrics)"),
    arg("--by", default="cli", help=_BY_HELP),
)
def cmd_pause(args: argparse.Namespace) -> Answer:
    from worker.desk.pausing import pause

    p = pause(_runtime(), reason=args.reason, by=args.by, bank=args.bank)
    scope = "every bank" if p.scope == "*" else p.scope
    return Answer(f"paused {scope}: {p.reason} (by {p.by})", {"pause": _pause_view(p.public())})


@command(
    "resume",
    "end a pause (every bank, or --bank CODE)",
    arg("--bank", default=None, help="resume this bank code only (default: the every-bank pause)"),
    arg("--by", default="cli", help=_BY_HELP),
)
def cmd_resume(args: argparse.Namespace) -> Answer:
    from worker.desk.pausing import pauses, resume

    rt = _runtime()
    ended = resume(rt, by=args.by, bank=args.bank)
    scope = args.bank or "every bank"
    left = [_pause_view(p.public()) for p in pauses(rt)]
    rows = [f"still paused: {p['scope']}: {p.get('reason', '')} (source {p.get('source')})" for p in left]
    data = {"resumed": ended is not None, "scope": args.bank or "*", "still_paused": left}
    if ended is None:
        return Answer(f"{scope} was not paused", data, rows=rows)
    return Answer(f"resumed {scope} (was: {ended.reason}, source {ended.source})", data, rows=rows)


def _pause_view(p: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if k == "since" and v else v for k, v in p.items()}


@command("pauses", "the pauses in force (operator, balance, merchant code)")
def cmd_pauses(args: argparse.Namespace) -> Answer:
    from worker.desk.pausing import pauses

    ps = [_pause_view(p.public()) for p in pauses(_runtime())]
    rows = [
        f"{p['scope']:<8} {p.get('source', ''):<10} since {p.get('since')}  "
        f"{p.get('reason', '')} (by {p.get('by')})"
        for p in ps
    ]
    return Answer(f"{len(ps)} pause(s) in force", {"pauses": ps}, rows=rows)


def _ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.ids)
    if args.csv:
        import csv

        with open(args.csv, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if rows and rows[0] and rows[0][0].strip().lower() in ("payout_cl_id", "id"):
            header = [h.strip().lower() for h in rows[0]]
            col = header.index("payout_cl_id") if "payout_cl_id" in header else 0
            rows = rows[1:]
        else:
            col = 0
        ids += [r[col].strip() for r in rows if len(r) > col and r[col].strip()]
    if not ids:
        raise PayoutError("give order ids, or --csv FILE with a payout_cl_id column")
    return ids


_IDS = arg("ids", nargs="*", help="order ids (payout_cl_id)")
_CSV = arg(
    "--csv",
    default=None,
    metavar="FILE",
    help="a CSV file whose payout_cl_id column (or first) lists the ids",
)


@command(
    "approve",
    "approve orders awaiting approval (ids, or --csv FILE)",
    _IDS,
    _CSV,
    arg("--by", required=True, help="the approver (not the requester)"),
)
def cmd_approve(args: argparse.Namespace) -> Answer:
    from worker.desk.approval import approve_many

    ids = _ids(args)
    rows = approve_many(_runtime(), ids, by=args.by)
    bad = sum(r.outcome.startswith("error") for r in rows)
    return Answer(
        f"{len(rows)} order(s), {len(rows) - bad} approved, {bad} refused",
        {"orders": [{"payout_cl_id": r.payout_cl_id, "outcome": r.outcome} for r in rows]},
        code=1 if bad else 0,
        rows=[f"{r.payout_cl_id}: {r.outcome}" for r in rows],
    )


@command(
    "reject",
    "refuse orders awaiting approval (-> rejected, never sent)",
    _IDS,
    _CSV,
    arg("--by", required=True, help="the checker refusing them (recorded)"),
    arg("--note", required=True, help="why (recorded in the history)"),
)
def cmd_reject(args: argparse.Namespace) -> Answer:
    from worker.desk.approval import reject

    ids = _ids(args)
    rt = _runtime()
    out: list[dict[str, str]] = []
    for i in ids:
        try:
            out.append({"payout_cl_id": i, "outcome": reject(rt, i, by=args.by, note=args.note).value})
        except PayoutError as exc:
            out.append({"payout_cl_id": i, "outcome": f"error: {exc}"})
    bad = sum(r["outcome"].startswith("error") for r in out)
    return Answer(
        f"{len(out)} order(s), {len(out) - bad} rejected, {bad} refused",
        {"orders": out},
        code=1 if bad else 0,
        rows=[f"{r['payout_cl_id']}: {r['outcome']}" for r in out],
    )


@command(
    "resubmit",
    "send a review/rejected order again (after a query says the gateway does not have it)",
    arg("payout_cl_id", help=_ID_HELP),
    arg(
        "--force",
        action="store_true",
        help="resubmit although the order has a payout_id or reached accepted/succeeded/failed "
        "(needs --note; recorded)",
    ),
    arg("--note", help="why (required with --force; recorded in the history)"),
    arg("--by", default="cli", help=_BY_HELP),
    arg(
        "--approved-by",
        default=None,
        help="a second person (not --by) who approves sending an order whose final state was "
        "already published to the web app, e.g. a rejected one (with --force --note; recorded)",
    ),
)
def cmd_resubmit(args: argparse.Namespace) -> Answer:
    from worker.desk.order_actions import resubmit

    resubmit(
        _runtime(),
        args.payout_cl_id,
        force=args.force,
        note=args.note,
        by=args.by,
        approved_by=args.approved_by,
    )
    return Answer(
        f"{args.payout_cl_id}: resubmitted", {"payout_cl_id": args.payout_cl_id, "state": "received"}
    )


@command(
    "back-to-polling",
    "put an order in review back to polling the gateway",
    arg("payout_cl_id", help=_ID_HELP),
    arg("--note", required=True, help="why (recorded in the history)"),
    arg("--by", default="cli", help=_BY_HELP),
)
def cmd_back_to_polling(args: argparse.Namespace) -> Answer:
    from worker.desk.order_actions import back_to_polling

    state = back_to_polling(_runtime(), args.payout_cl_id, by=args.by, note=args.note)
    return Answer(
        f"{args.payout_cl_id}: {state.value} (polling again)",
        {"payout_cl_id": args.payout_cl_id, "state": state.value},
    )


@command(
    "reconcile",
    "compare orders with the gateway, list orphans; exit 1 on any mismatch or orphan",
    arg("ids", nargs="*", help="only these order ids (default: open, review and recently final orders)"),
    arg(
        "--orphans-hours",
        type=float,
        default=24.0,
        help="list gateway orders created in the last N hours that the store does not know (0: skip; "
        "not with ids)",
    ),
)
def cmd_reconcile(args: argparse.Namespace) -> Answer:
    from worker.desk.reads import find_orphans, reconcile

    rt = _runtime()
    compared: list[dict[str, str]] = []
    for r in reconcile(rt, args.ids or None):  # rows as they are compared (O(page))
        compared.append(
            {"verdict": r.verdict, "payout_cl_id": r.payout_cl_id, "ours": r.ours, "gateway": r.gateway}
        )
        if not args.json:
            print(f"{r.verdict:<9} {r.payout_cl_id:<34} ours={r.ours:<12} gateway={r.gateway}", flush=True)
    bad = [c for c in compared if c["verdict"] != "match"]
    orphans = []
    if not args.ids and args.orphans_hours > 0:
        orphans = find_orphans(rt, since=time.time() - args.orphans_hours * 3600)
    rows = [
        f"{'orphan':<9} {o.payout_cl_id:<34} ours={'unknown':<12} gateway=status {o.status}, "
        f"payout_id {o.payout_id}, amount {o.amount}"
        for o in orphans
    ]
    text = f"{len(compared)} compared, {len(compared) - len(bad)} match, {len(bad)} not matching"
    if not args.ids and args.orphans_hours > 0:
        text += f"; {len(orphans)} orphan(s) in the last {args.orphans_hours:g}h the store does not know"
    data = {
        "compared": len(compared),
        "not_matching": bad,
        "orphans": [vars(o) for o in orphans],
    }
    return Answer(text, data, code=1 if bad or orphans else 0, rows=rows)


@command(
    "rekey",
    "re-seal stored account numbers and names under the first PII_KEYS key (resumable)",
    arg("--page", type=int, default=500, help="orders per SCAN page"),
    arg("--pages", type=int, default=0, help="stop after N pages (0: to the end); resumable"),
    arg("--pause-s", type=float, default=0.0, help="seconds to wait between pages"),
    arg("--restart", action="store_true", help="start from the beginning, not the stored cursor"),
    arg("--new-key", metavar="ID", help="print a new ID:key entry for PII_KEYS and exit"),
)
def cmd_rekey(args: argparse.Namespace) -> Answer:
    """Re-seal stored orders under the first PII_KEYS key, page by page, resumable."""
    from worker.pii import KeyRing
    from worker.privacy import RekeyReport, key_usage, rekey_cursor, rekey_page

    if args.new_key:
        entry = KeyRing.generate(args.new_key)  # a fresh key to put first in PII_KEYS
        return Answer(entry, {"pii_keys_entry": entry})
    rt = _runtime()
    ring = rt.settings.require_pii()
    cursor = 0 if args.restart else rekey_cursor(rt.redis)
    # progress on stderr as it goes (a long run); the answer comes once, at the end
    print(f"rekey: sealing under {ring.current!r}, from cursor {cursor}", file=sys.stderr)
    total, pages = RekeyReport(cursor=cursor), 0
    while True:
        page = rekey_page(rt.redis, ring, cursor=total.cursor, count=args.page)
        total.add(page)
        pages += 1
        print(
            f"page {pages}: {page.scanned} scanned, {page.resealed} re-sealed, cursor {page.cursor}",
            file=sys.stderr,
        )
        if total.cursor == 0 or (args.pages and pages >= args.pages):
            break
        if args.pause_s:
            time.sleep(args.pause_s)  # rate: leave the store to the workers between pages
    done = total.cursor == 0
    usage = key_usage(rt.redis) if done else {}
    text = (
        f"{total.scanned} scanned, {total.resealed} re-sealed, {total.current} already current, "
        f"{total.erased} erased, {len(total.unreadable)} unreadable, {total.retried} retried"
        + ("" if done else f"; resume with `payouts rekey` (cursor {total.cursor} stored)")
    )
    if done:
        text += "; values per key: " + (", ".join(f"{k}={v}" for k, v in sorted(usage.items())) or "none")
    data = {
        "scanned": total.scanned,
        "resealed": total.resealed,
        "current": total.current,
        "erased": total.erased,
        "unreadable": total.unreadable[:50],
        "retried": total.retried,
        "done": done,
        "cursor": total.cursor,
        "values_per_key": usage,
    }
    rows = [f"unreadable: {pid}" for pid in total.unreadable[:50]]
    return Answer(text, data, code=1 if total.unreadable else 0, rows=rows)


@command(
    "forget",
    "erase a final order's account number and name (tombstone kept)",
    arg("payout_cl_id", help=_ID_HELP),
    arg("--reason", required=True, help="why (kept as erased_reason; no personal data)"),
    arg("--by", default="cli", help=_BY_HELP),
)
def cmd_forget(args: argparse.Namespace) -> Answer:
    """Erase a final order's account number and name now."""
    from worker.privacy import forget

    state = forget(_runtime().redis, args.payout_cl_id, reason=f"{args.by}: {args.reason}")
    return Answer(
        f"{args.payout_cl_id}: personal data erased ({state}; amounts, states and gateway ids kept)",
        {"payout_cl_id": args.payout_cl_id, "state": str(state), "erased": True},
    )


#: commands with their own parser, imported only when used: (module, help, extra it needs)
DELEGATED: dict[str, tuple[str, str, str | None]] = {
    "sandbox": ("worker.sandbox.__main__", "run the sandbox gateway (see payouts sandbox --help)", "sandbox"),
    "demo": ("worker.harness.demo", "end-to-end demo with an embedded Redis and the sandbox", "sandbox"),
    "bench": ("worker.harness.bench.cli", "benchmarks, printed as a table and ratios", "sandbox"),
    "doctor": ("worker.ops.doctor", "check settings, Redis, the gateway and the clock", None),
    "health": ("worker.ops.health", "progress-based liveness check (exit 1 when stuck)", None),
    "enqueue": ("worker.ops.enqueue", "enqueue one payout from flags, or many from a CSV/JSONL file", None),
}


#: the libraries an extra brings, checked before a command that needs the extra starts
EXTRA_MODULES: dict[str, tuple[str, ...]] = {"sandbox": ("aiohttp",)}


def cmd_delegate(name: str, rest: list[str]) -> int:
    """Run a command that has its own parser (and, for some, an optional extra)."""
    import importlib
    import importlib.util

    module, _help, extra = DELEGATED[name]
    as_json = "--json" in rest
    for needed in EXTRA_MODULES.get(extra or "", ()):  # some import their extra only later
        if importlib.util.find_spec(needed) is None:
            exc = ModuleNotFoundError(f"No module named {needed!r}", name=needed)
            return emit(missing_extra(exc, extra or "", f"payouts {name}"), as_json=as_json, out=sys.stderr)
    if extra is None:
        # doctor, health, enqueue answer one line: the library's records stay out of it (errors
        # still show, on stderr); the demo, bench and sandbox configure their own output
        from worker.logs import configure_logging

        fmt = os.environ.get("LOG_FORMAT", "json")
        configure_logging(fmt if fmt in ("json", "console") else "json", "ERROR")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if extra is None or exc.name in (None, module) or (exc.name or "").startswith(("worker", "tasks")):
            raise
        return emit(missing_extra(exc, extra, f"payouts {name}"), as_json=as_json, out=sys.stderr)
    return int(mod.main(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="payouts",
        description="Operate the payout worker. Every command answers one line, or one JSON "
        "object with --json; `payouts COMMAND --help` describes each.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub)
    for name, (_, helptext, _extra) in DELEGATED.items():
        sub.add_parser(name, help=helptext, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    if argv and argv[0] in DELEGATED:
        try:
            return cmd_delegate(argv[0], argv[1:])
        except ConfigError as exc:
            return emit(Answer(f"configuration error: {exc}", {"error": "config"}, code=2), as_json=as_json)
    args = build_parser().parse_args(argv)
    try:
        answer = args.func(args)
    except ConfigError as exc:
        answer = Answer(f"configuration error: {exc}", {"error": "config"}, code=2)
    except PayoutError as exc:
        answer = Answer(f"error: {exc}", {"error": type(exc).__name__}, code=1)
    return emit(answer, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
