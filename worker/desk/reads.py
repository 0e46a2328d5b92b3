"""Read models of the operator desk: stats, the order list, reconcile, orphans.

Shared by its two front ends, the ``payouts`` CLI (``worker.ops``) and the console (``worker.console``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from worker import keys
from worker.desk.balance import known_balance
from worker.desk.pausing import pauses
from worker.errors import PayoutError
from worker.gateway import QueryKind
from worker.reports import FINAL_STATUS, OPEN_STATUS, amount_matches
from worker.runtime import Runtime
from worker.states import State


def stats(rt: Runtime) -> dict[str, Any]:
    """Counts per state, the oldest open order's age, the due backlog, the last sweep."""
    store, now = rt.store, time.time()
    oldest = store.oldest_due()
    last = rt.redis.get(keys.SWEEP_LAST)
    return {
        "counts": store.counts(),
        "open": int(rt.redis.zcard(keys.DUE)),
        "due_backlog": store.due_backlog(now),
        "oldest_due": oldest[0] if oldest else None,
        "oldest_due_late_s": round(max(0.0, now - oldest[1]), 3) if oldest else 0.0,
        "review": int(rt.redis.zcard(keys.REVIEW)),
        "last_sweep_age_s": round(now - float(last), 3) if last else None,
        "paused": [p.public() for p in pauses(rt)],
        "held_attempts": {k: int(v) for k, v in rt.redis.hgetall(keys.HELD).items()},
        # create answers for orders the store had lost (D40): settle each with the gateway
        "lost_answers": int(rt.redis.hlen(keys.LOST)),
        "balance": _balance(rt),
    }


def _balance(rt: Runtime) -> dict[str, Any] | None:
    bal = known_balance(rt)
    if bal is None:
        return None
    return {
        "available": bal.available,
        "total": bal.total,
        "frozen": bal.frozen,
        "age_s": round(time.time() - bal.at, 1),
    }


#: ids read from an index per round trip by the operator reads (D28: never the whole index)
PAGE = 500
#: ``payouts list`` reads at most this many pages of the due-index looking for matches
LIST_MAX_PAGES = 200


def index_pages(
    rt: Runtime, key: str, *, page: int = PAGE, max_pages: int | None = None
) -> Iterator[list[str]]:
    """The ids of a sorted-set index in pages (by rank, oldest score first)."""
    start, n = 0, 0
    while max_pages is None or n < max_pages:
        ids = [str(i) for i in rt.redis.zrange(key, start, start + page - 1)]
        if not ids:
            return
        yield ids
        n += 1
        if len(ids) < page:
            return
        start += page


def list_orders(rt: Runtime, state: State | None, limit: int = 100) -> list[dict[str, Any]]:
    """Open or review orders by state (finished orders are read with ``show``).

    Pages through the index (at most ``LIST_MAX_PAGES`` pages of ``PAGE``), reading
    the records of one page at a time, and stops at ``limit`` rows."""
    queues = {State.REVIEW: keys.REVIEW, State.AWAITING_APPROVAL: keys.APPROVALS}
    key = queues.get(state, keys.DUE) if state is not None else keys.DUE
    if state is State.AWAITING_APPROVAL:
        rt.store.backfill_approvals()
    rows: list[dict[str, Any]] = []
    page = min(PAGE, max(1, limit)) if state is None or state in queues else PAGE
    for ids in index_pages(rt, key, page=page, max_pages=LIST_MAX_PAGES):
        orders = rt.store.get_many(ids)
        now = time.time()
        for i in ids:
            o = orders.get(i)
            if o is None or (state is not None and o.state is not state):
                continue
            rows.append(
                {
                    "payout_cl_id": i,
                    "state": o.state.value,
                    "amount": o.amount,
                    "payout_id": o.payout_id,
                    "reason": o.reason,
                    "age_s": round(now - o.created_at, 1),
                }
            )
            if len(rows) >= limit:
                return rows
    return rows


@dataclass(frozen=True)
class ReconcileRow:
    payout_cl_id: str
    ours: str
    gateway: str
    verdict: str  # match | mismatch | missing | pending


def reconcile_ids(rt: Runtime) -> Iterator[list[str]]:
    """Open, review and recently finished orders, a page of ids at a time (D28)."""
    yield from index_pages(rt, keys.DUE)
    yield from index_pages(rt, keys.REVIEW)
    # recently finished orders: read from the events stream (last 24h), a page at a time
    start = f"{int((time.time() - 86400) * 1000)}-0"
    while True:
        entries: Any = rt.redis.xrange(keys.EVENTS, min=start, count=PAGE)
        if not entries:
            return
        ids = [
            str(e["payout_cl_id"]) for _, e in entries if e.get("to") in ("succeeded", "failed", "rejected")
        ]
        if ids:
            yield list(dict.fromkeys(ids))
        if len(entries) < PAGE:
            return
        start = "(" + str(entries[-1][0])


def reconcile(rt: Runtime, ids: list[str] | None = None) -> Iterator[ReconcileRow]:
    """Compare open, review and recently finished orders with the gateway, one query each.

    Rows come as they are compared; the ids are read a page at a time, so memory and
    each Redis call stay O(page) however many orders are open (an id both open and
    recently final is compared twice at most).
    """
    pages: Iterable[list[str]] = [ids] if ids is not None else reconcile_ids(rt)
    for page in pages:
        yield from _reconcile_page(rt, page)


def _reconcile_page(rt: Runtime, ids: list[str]) -> Iterator[ReconcileRow]:
    orders = rt.store.get_many(ids)
    for i in ids:
        order = orders.get(i)
        if order is None:
            continue
        rt.limiter.acquire(max_wait_s=10.0)
        q = rt.gateway.query_order(i, sign_type=order.sign_type)
        ours = order.state.value
        if q.kind is QueryKind.ERROR:
            yield ReconcileRow(i, ours, f"error: {q.reason}", "mismatch")
            continue
        if q.kind is QueryKind.NOT_FOUND:
            ok = order.state in (State.REJECTED, State.RECEIVED, State.AWAITING_APPROVAL)
            yield ReconcileRow(i, ours, "not found", "match" if ok else "missing")
            continue
        status = q.status or ""
        gw = f"status {status}"
        if not amount_matches(q.amount, order.amount):
            yield ReconcileRow(i, ours, f"{gw}, amount {q.amount}", "mismatch")
        elif status in FINAL_STATUS:
            verdict = "match" if FINAL_STATUS[status] is order.state else "mismatch"
            if order.state in (State.ACCEPTED, State.UNCONFIRMED):
                verdict = "pending"  # final at the gateway, the next check will apply it
            yield ReconcileRow(i, ours, gw, verdict)
        elif status in OPEN_STATUS:
            ok = order.state in (State.ACCEPTED, State.UNCONFIRMED, State.SUBMITTING)
            yield ReconcileRow(i, ours, gw, "match" if ok else "mismatch")
        else:
            yield ReconcileRow(i, ours, gw, "mismatch")


@dataclass(frozen=True)
class Orphan:
    """An order the gateway has that the store does not know (a lost enqueue that was sent)."""

    payout_cl_id: str
    payout_id: str
    status: str
    amount: str


def find_orphans(rt: Runtime, *, since: float, until: float | None = None) -> list[Orphan]:
    """Orders the gateway created in ``[since, until]`` (list query, time window, every page)
    whose ``payout_cl_id`` the store does not hold: what a Redis that lost an acknowledged
    enqueue (relaxed mode, or both nodes lost) leaves behind after its create was sent.
    Orders older than ORDER_RETENTION_DAYS were deleted here on purpose: keep ``since``
    within it. Raises PayoutError when the gateway does not answer a page."""
    until = time.time() if until is None else until
    out: list[Orphan] = []
    seen: set[str] = set()
    offset = 0
    while True:
        rt.limiter.acquire(max_wait_s=10.0)
        page = rt.gateway.query_window(created_gte=int(since), created_lte=int(until) + 1, offset=offset)
        if page is None:
            raise PayoutError("the gateway's list query failed: orphans not checked")
        results, total = page
        records = [r.record for r in results]
        ids = [str(r.get("payout_cl_id", "")) for r in records]
        pipe = rt.redis.pipeline(transaction=False)
        for i in ids:
            pipe.exists(keys.order(i))
        for i, rec, known in zip(ids, records, pipe.execute(), strict=True):
            if i and not known and i not in seen:
                seen.add(i)
                pid, status, amount = (str(rec.get(k, "")) for k in ("payout_id", "status", "amount"))
                out.append(Orphan(i, pid, status, amount))
        offset += len(results)
        if not results or offset >= total or offset >= 1_000_000:
            return out
