"""The ``payouts`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from worker.errors import PayoutError
from worker.settings import ConfigError, get_settings
from worker.states import State


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _runtime() -> Any:
    from worker.logs import configure_logging
    from worker.runtime import get_runtime

    s = get_settings()
    configure_logging(s.log_format, "WARNING")
    return get_runtime()


def cmd_show(args: argparse.Namespace) -> int:
    order = _runtime().store.get(args.payout_cl_id)
    if order is None:
        print(f"no order {args.payout_cl_id!r}", file=sys.stderr)
        return 1
    view = order.public()
    if view.get("due_at"):
        view["due_in_s"] = round(float(view["due_at"]) - time.time(), 1)
    _print_json(view)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from worker.ops.commands import list_orders

    state = State(args.state) if args.state else None
    rows = list_orders(_runtime(), state, args.limit)
    for r in rows:
        print(f"{r['payout_cl_id']:<34} {r['state']:<12} {r['amount']:>14} {r['age_s']:>9}s  {r['reason']}")
    print(f"{len(rows)} order(s)", file=sys.stderr)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from worker.ops.commands import stats

    _print_json(stats(_runtime()))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from worker.ops.commands import check_now

    rt = _runtime()
    status = check_now(rt, args.payout_cl_id)
    order = rt.store.get(args.payout_cl_id, with_history=False)
    print(f"{status.value}: now {order.state.value if order else 'missing'}")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from worker.ops.commands import resolve

    resolve(_runtime(), args.payout_cl_id, State(args.state), args.note, by=args.by)
    print(f"{args.payout_cl_id}: {args.state}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from worker.controls import pause

    p = pause(_runtime(), reason=args.reason, by=args.by, bank=args.bank)
    print(f"paused {'every bank' if p.scope == '*' else p.scope}: {p.reason} (by {p.by})")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from worker.controls import pauses, resume

    rt = _runtime()
    ended = resume(rt, by=args.by, bank=args.bank)
    scope = args.bank or "every bank"
    if ended is None:
        print(f"{scope} was not paused", file=sys.stderr)
    else:
        print(f"resumed {scope} (was: {ended.reason}, source {ended.source})")
    for p in pauses(rt):
        print(f"still paused: {p.scope}: {p.reason} (source {p.source})", file=sys.stderr)
    return 0


def cmd_pauses(args: argparse.Namespace) -> int:
    from worker.controls import pauses

    _print_json([p.public() for p in pauses(_runtime())])
    return 0


def _ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.ids)
    if args.csv:
        import csv

        with open(args.csv, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if rows and rows[0] and rows[0][0].strip().lower() in ("payout_cl_id", "id"):
            col = 0
            header = [h.strip().lower() for h in rows[0]]
            col = header.index("payout_cl_id") if "payout_cl_id" in header else 0
            rows = rows[1:]
        else:
            col = 0
        ids += [r[col].strip() for r in rows if len(r) > col and r[col].strip()]
    if not ids:
        raise PayoutError("give order ids, or --csv FILE with a payout_cl_id column")
    return ids


def cmd_approve(args: argparse.Namespace) -> int:
    from worker.controls import approve_many

    rows = approve_many(_runtime(), _ids(args), by=args.by)
    bad = 0
    for r in rows:
        print(f"{r.payout_cl_id}: {r.outcome}")
        bad += r.outcome.startswith("error")
    if len(rows) > 1:
        print(f"{len(rows)} order(s), {len(rows) - bad} approved, {bad} refused", file=sys.stderr)
    return 1 if bad else 0


def cmd_reject(args: argparse.Namespace) -> int:
    from worker.controls import reject

    rt = _runtime()
    bad = 0
    for i in _ids(args):
        try:
            print(f"{i}: {reject(rt, i, by=args.by, note=args.note).value}")
        except PayoutError as exc:
            print(f"{i}: error: {exc}")
            bad += 1
    return 1 if bad else 0


def cmd_resubmit(args: argparse.Namespace) -> int:
    from worker.ops.commands import resubmit

    resubmit(
        _runtime(),
        args.payout_cl_id,
        force=args.force,
        note=args.note,
        by=args.by,
        approved_by=args.approved_by,
    )
    print(f"{args.payout_cl_id}: resubmitted")
    return 0


def cmd_back_to_polling(args: argparse.Namespace) -> int:
    from worker.ops.commands import back_to_polling

    state = back_to_polling(_runtime(), args.payout_cl_id, by=args.by, note=args.note)
    print(f"{args.payout_cl_id}: {state.value} (polling again)")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    import time

    from worker.ops.commands import find_orphans, reconcile

    rt = _runtime()
    bad = n = 0
    for r in reconcile(rt, args.ids or None):  # rows as they are compared (O(page))
        print(f"{r.verdict:<9} {r.payout_cl_id:<34} ours={r.ours:<12} gateway={r.gateway}", flush=True)
        n += 1
        bad += r.verdict != "match"
    print(f"{n} compared, {n - bad} match, {bad} not matching", file=sys.stderr)
    orphans = []
    if not args.ids and args.orphans_hours > 0:
        orphans = find_orphans(rt, since=time.time() - args.orphans_hours * 3600)
        for o in orphans:
            print(
                f"{'orphan':<9} {o.payout_cl_id:<34} ours={'unknown':<12} gateway=status {o.status}, "
                f"payout_id {o.payout_id}, amount {o.amount}"
            )
        print(
            f"{len(orphans)} orphan(s): gateway orders of the last {args.orphans_hours:g}h the store "
            "does not know",
            file=sys.stderr,
        )
    return 1 if bad or orphans else 0


def cmd_rekey(args: argparse.Namespace) -> int:
    """Re-seal stored orders under the first PII_KEYS key, page by page, resumable."""
    from worker.pii import KeyRing
    from worker.privacy import RekeyReport, key_usage, rekey_cursor, rekey_page

    if args.new_key:
        print(KeyRing.generate(args.new_key))  # a fresh key to put first in PII_KEYS
        return 0
    rt = _runtime()
    ring = rt.settings.require_pii()
    cursor = 0 if args.restart else rekey_cursor(rt.redis)
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
    print(
        f"{total.scanned} scanned, {total.resealed} re-sealed, {total.current} already current, "
        f"{total.erased} erased, {len(total.unreadable)} unreadable, {total.retried} retried"
        + ("" if done else f"; resume with `payouts rekey` (cursor {total.cursor} stored)")
    )
    for pid in total.unreadable[:50]:
        print(f"unreadable: {pid}")
    if done:
        usage = key_usage(rt.redis)
        print("values per key: " + (", ".join(f"{k}={v}" for k, v in sorted(usage.items())) or "none"))
    return 1 if total.unreadable else 0


def cmd_forget(args: argparse.Namespace) -> int:
    """Erase a final order's account number and name now."""
    from worker.privacy import forget

    state = forget(_runtime().redis, args.payout_cl_id, reason=f"{args.by}: {args.reason}")
    print(f"{args.payout_cl_id}: personal data erased ({state}; amounts, states and gateway ids kept)")
    return 0


def cmd_delegate(module: str, rest: list[str]) -> int:
    """Run a command that has its own parser (and, for some, an optional extra)."""
    import importlib

    mod = importlib.import_module(module)
    return int(mod.main(rest) or 0)


#: commands with their own parser, imported only when used: the harness needs the
#: ``sandbox`` extra, and a core install must not import it for ``payouts doctor``
DELEGATED: dict[str, tuple[str, str]] = {
    "sandbox": ("sandbox.__main__", "run the sandbox gateway (see --help)"),
    "demo": ("worker.harness.demo", "end-to-end demo with an embedded Redis and the sandbox"),
    "bench": ("worker.harness.bench.cli", "benchmarks, printed as a table and ratios"),
    "doctor": ("worker.ops.doctor", "check settings, Redis, the gateway and the clock"),
    "health": ("worker.ops.health", "progress-based liveness check (exit 1 when stuck)"),
    "enqueue": ("worker.ops.enqueue", "enqueue one payout from flags, or many from a CSV/JSONL file"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payouts", description="Operate the payout worker.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("show", help="one order: state, history, next due, last gateway answer")
    s.add_argument("payout_cl_id")
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("list", help="open (or review) orders, optionally of one state")
    s.add_argument("--state", choices=[x.value for x in State])
    s.add_argument("--limit", type=int, default=100)
    s.set_defaults(func=cmd_list)
    s = sub.add_parser("stats", help="counts per state, oldest open order, due backlog")
    s.set_defaults(func=cmd_stats)
    s = sub.add_parser("check", help="query the gateway for one order now")
    s.add_argument("payout_cl_id")
    s.set_defaults(func=cmd_check)
    s = sub.add_parser("resolve", help="close an order in review (operator decision)")
    s.add_argument("payout_cl_id")
    s.add_argument("--state", required=True, choices=["succeeded", "failed"])
    s.add_argument("--note", required=True)
    s.add_argument("--by", default="cli", help="who decided (recorded in the history)")
    s.set_defaults(func=cmd_resolve)
    s = sub.add_parser("pause", help="stop create requests (every bank, or --bank CODE)")
    s.add_argument("--bank", default=None)
    s.add_argument("--reason", required=True)
    s.add_argument("--by", default="cli")
    s.set_defaults(func=cmd_pause)
    s = sub.add_parser("resume", help="end a pause (every bank, or --bank CODE)")
    s.add_argument("--bank", default=None)
    s.add_argument("--by", default="cli")
    s.set_defaults(func=cmd_resume)
    s = sub.add_parser("pauses", help="the pauses in force (operator, balance, merchant code)")
    s.set_defaults(func=cmd_pauses)
    s = sub.add_parser("approve", help="approve orders awaiting approval (ids, or --csv FILE)")
    s.add_argument("ids", nargs="*")
    s.add_argument("--csv", default=None, metavar="FILE")
    s.add_argument("--by", required=True, help="the approver (not the requester)")
    s.set_defaults(func=cmd_approve)
    s = sub.add_parser("reject", help="refuse orders awaiting approval (-> rejected, never sent)")
    s.add_argument("ids", nargs="*")
    s.add_argument("--csv", default=None, metavar="FILE")
    s.add_argument("--by", required=True)
    s.add_argument("--note", required=True)
    s.set_defaults(func=cmd_reject)
    s = sub.add_parser("resubmit", help="send a review/rejected order again (after a query)")
    s.add_argument("payout_cl_id")
    s.add_argument(
        "--force",
        action="store_true",
        help="resubmit although the order has a payout_id or reached accepted/succeeded/failed "
        "(needs --note; recorded)",
    )
    s.add_argument("--note", help="why (required with --force; recorded in the history)")
    s.add_argument("--by", default="cli", help="who is acting (recorded)")
    s.add_argument(
        "--approved-by",
        default=None,
        help="a second person (not --by) who approves sending an order whose final state was "
        "already published to the web app, e.g. a rejected one (with --force --note; recorded)",
    )
    s.set_defaults(func=cmd_resubmit)
    s = sub.add_parser("back-to-polling", help="put an order in review back to polling the gateway")
    s.add_argument("payout_cl_id")
    s.add_argument("--note", required=True, help="why (recorded in the history)")
    s.add_argument("--by", default="cli", help="who is acting (recorded)")
    s.set_defaults(func=cmd_back_to_polling)
    s = sub.add_parser(
        "reconcile", help="compare orders with the gateway, list orphans; exit 1 on any mismatch or orphan"
    )
    s.add_argument("ids", nargs="*")
    s.add_argument(
        "--orphans-hours",
        type=float,
        default=24.0,
        help="list gateway orders created in the last N hours that the store does not know (0: skip; "
        "not with ids)",
    )
    s.set_defaults(func=cmd_reconcile)
    s = sub.add_parser(
        "rekey", help="re-seal stored account numbers and names under the first PII_KEYS key (resumable)"
    )
    s.add_argument("--page", type=int, default=500, help="orders per SCAN page")
    s.add_argument("--pages", type=int, default=0, help="stop after N pages (0: to the end); resumable")
    s.add_argument("--pause-s", type=float, default=0.0, help="seconds to wait between pages")
    s.add_argument("--restart", action="store_true", help="start from the beginning, not the stored cursor")
    s.add_argument("--new-key", metavar="ID", help="print a new ID:key entry for PII_KEYS and exit")
    s.set_defaults(func=cmd_rekey)
    s = sub.add_parser("forget", help="erase a final order's account number and name (tombstone kept)")
    s.add_argument("payout_cl_id")
    s.add_argument("--reason", required=True, help="why (kept as erased_reason; no personal data)")
    s.add_argument("--by", default="cli", help="who is acting (recorded)")
    s.set_defaults(func=cmd_forget)
    for name, (_, helptext) in DELEGATED.items():
        sub.add_parser(name, help=helptext, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        try:
            return cmd_delegate(DELEGATED[argv[0]][0], argv[1:])
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except PayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
