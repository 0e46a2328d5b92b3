"""Driving open orders to a final status: gateway reports, checks and the sweep.

Every report about an order, from a query or a callback, goes through
:func:`apply_report`, which maps the gateway's status (SPEC §6) onto one atomic
transition. Final states are never overwritten: a different later report sends
the order to ``review`` with the conflict recorded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from worker import keys
from worker.gateway import QueryKind, QueryResult
from worker.logs import get_logger
from worker.runtime import Runtime
from worker.states import FINAL, State
from worker.store import REMOVE, Order
from worker.submission import notify_final

log = get_logger("payouts.reconcile")

#: gateway payout status -> our final state (SPEC §6). 0/1/2 are open; others unknown.
FINAL_STATUS: dict[str, State] = {"3": State.SUCCEEDED, "4": State.FAILED, "5": State.FAILED}
OPEN_STATUS: frozenset[str] = frozenset({"0", "1", "2"})


class Applied(StrEnum):
    CHANGED = "changed"
    DUPLICATE = "duplicate"
    STILL_OPEN = "still_open"
    CONFLICT = "conflict"
    NOT_READY = "not_ready"
    UNKNOWN_STATUS = "unknown_status"
    IGNORED = "ignored"


def amount_matches(reported: str | None, stored: int) -> bool:
    """The gateway's amount text equals our integer minor units ("1000.0000" == 1000)."""
    if reported is None or reported == "":
        return True  # the field is optional on some forms
    try:
        return Decimal(str(reported)) == Decimal(stored)
    except InvalidOperation:
        return False


def next_check_delay_s(rt: Runtime, checks: int) -> float:
    s = rt.settings
    raw: float = min(s.check_interval_max_s, s.check_interval_min_s * 2 ** max(0, checks))
    return raw * random.uniform(0.9, 1.1)


def _review(rt: Runtime, order: Order, reason: str, **fields: object) -> Applied:
    prev = rt.store.transition(
        order.payout_cl_id, State.REVIEW, sources={order.state}, reason=reason, fields=fields
    )
    if prev is None:
        return Applied.IGNORED
    log.warning("payout.transition", **{"from": prev.value, "to": "review"}, reason=reason)
    return Applied.CONFLICT


def apply_report(
    rt: Runtime,
    order: Order,
    *,
    status: str | None,
    payout_id: str | None,
    amount: str | None,
    source: str,
) -> Applied:
    """Apply one gateway report (query record or verified callback) to ``order``."""
    store = rt.store
    now = time.time()
    if order.state in (State.RECEIVED, State.SUBMITTING):
        return Applied.NOT_READY  # the create's answer is not recorded yet; report again later
    if not amount_matches(amount, order.amount):
        if order.state is State.REVIEW:
            return Applied.IGNORED
        return _review(rt, order, f"amount mismatch from {source}", reported_amount=amount)
    target = FINAL_STATUS.get(status or "")
    if order.state in FINAL or order.state is State.REVIEW:
        if order.state is State.REVIEW:
            store.transition(order.payout_cl_id, None, sources={State.REVIEW},
                             reason="report", fields={"last_report": f"{source}:{status}"})  # fmt: skip
            return Applied.IGNORED
        if target is not None and target is order.state:
            return Applied.DUPLICATE
        if status in OPEN_STATUS and order.state is not State.REJECTED:
            return Applied.DUPLICATE  # a stale, earlier report arriving late
        return _review(
            rt, order, f"conflict: {order.state.value} but {source} says status {status}",
            conflict_status=status,
        )  # fmt: skip
    fields: dict[str, object] = {"gateway_status": status, "last_report": source}
    if payout_id:
        fields["payout_id"] = payout_id
    if target is not None:
        prev = store.transition(
            order.payout_cl_id, target, sources={State.ACCEPTED, State.UNCONFIRMED},
            reason=f"{source}: status {status}", fields=fields, now=now,
        )  # fmt: skip
        if prev is None:
            fresh = store.get(order.payout_cl_id, with_history=False)
            if fresh is None or fresh.state is order.state:
                return Applied.IGNORED
            return apply_report(rt, fresh, status=status, payout_id=payout_id,
                                amount=amount, source=source)  # fmt: skip
        log.info("payout.transition", **{"from": prev.value, "to": target.value},
                 reason=f"{source}: status {status}", payout_id=payout_id)  # fmt: skip
        notify_final(rt, order.payout_cl_id)
        return Applied.CHANGED
    checks = order.field_int("checks")
    if status in OPEN_STATUS:
        fields["unknown_status_count"] = 0
        if order.state is State.UNCONFIRMED:
            prev = store.transition(
                order.payout_cl_id, State.ACCEPTED, sources={State.UNCONFIRMED},
                reason=f"{source}: found, status {status}", fields=fields,
                due=now + next_check_delay_s(rt, checks),
            )  # fmt: skip
            if prev is not None:
                log.info("payout.transition", **{"from": "unconfirmed", "to": "accepted"},
                         reason=f"{source}: found", payout_id=payout_id)  # fmt: skip
                return Applied.CHANGED
        else:
            store.transition(order.payout_cl_id, None, sources={order.state},
                             reason="still open", fields=fields)  # fmt: skip
        return Applied.STILL_OPEN
    # an undocumented status: stay open, alert, and send to review if it persists
    unknown = order.field_int("unknown_status_count") + 1
    log.error("payout.unknown_status", status=str(status)[:16], count=unknown, source=source)
    if unknown >= rt.settings.unknown_status_review_after:
        return _review(rt, order, f"unknown gateway status {str(status)[:16]!r} persists")
    store.transition(order.payout_cl_id, None, sources={order.state}, reason="unknown status",
                     fields={**fields, "unknown_status_count": unknown})  # fmt: skip
    return Applied.UNKNOWN_STATUS


class CheckStatus(StrEnum):
    MISSING = "missing"
    SKIPPED = "skipped"
    QUERY_FAILED = "query_failed"
    NOT_FOUND = "not_found"
    RESUBMIT = "resubmit"
    REVIEW = "review"
    APPLIED = "applied"


def _reschedule(rt: Runtime, order: Order, delay_s: float, **fields: object) -> None:
    rt.store.transition(
        order.payout_cl_id, None, sources={order.state}, reason="reschedule",
        due=time.time() + delay_s, fields={"checks": order.field_int("checks") + 1, **fields},
    )  # fmt: skip


def handle_not_found(rt: Runtime, order: Order, reason: str) -> CheckStatus:
    """The gateway does not know the order: wait out the grace, then apply the policy."""
    s = rt.settings
    sent_at = order.submitted_at or order.created_at
    if time.time() - sent_at < s.unconfirmed_grace_s:
        _reschedule(rt, order, min(next_check_delay_s(rt, order.field_int("checks")),
                                   s.unconfirmed_grace_s / 4), last_query=reason)  # fmt: skip
        return CheckStatus.NOT_FOUND
    if order.state is State.UNCONFIRMED and s.not_found_policy == "resubmit":
        prev = rt.store.transition(
            order.payout_cl_id, State.RECEIVED, sources={State.UNCONFIRMED},
            reason="not found at the gateway after the grace period: resubmit",
            due=time.time() + s.submit_redrive_s, fields={"resubmitted": 1},
        )  # fmt: skip
        if prev is not None:
            log.warning("payout.transition", **{"from": "unconfirmed", "to": "received"},
                        reason="not found after grace: resubmit")  # fmt: skip
            return CheckStatus.RESUBMIT
        return CheckStatus.SKIPPED
    _review(rt, order, f"not found at the gateway {int(time.time() - sent_at)}s after sending")
    return CheckStatus.REVIEW


def check_order(rt: Runtime, payout_cl_id: str) -> CheckStatus:
    """Query the gateway for one open order and apply what it says."""
    order = rt.store.get(payout_cl_id, with_history=False)
    if order is None:
        return CheckStatus.MISSING
    if order.state not in (State.ACCEPTED, State.UNCONFIRMED):
        return CheckStatus.SKIPPED
    if time.time() - order.created_at > rt.settings.max_order_age_s:
        _review(rt, order, "open longer than MAX_ORDER_AGE")
        return CheckStatus.REVIEW
    gateway = rt.gateway
    if not rt.limiter.acquire(max_wait_s=2.0):
        _reschedule(rt, order, 1.0 + random.random())
        return CheckStatus.QUERY_FAILED
    result = gateway.query_order(payout_cl_id)
    return apply_query(rt, order, result)


def apply_query(rt: Runtime, order: Order, result: QueryResult) -> CheckStatus:
    if result.kind is QueryKind.ERROR:
        if result.rate_limited:
            rt.limiter.pause(1.0)
        log.info("payout.check.failed", reason=result.reason)
        _reschedule(rt, order, next_check_delay_s(rt, order.field_int("checks")),
                    last_query=result.reason)  # fmt: skip
        return CheckStatus.QUERY_FAILED
    if result.kind is QueryKind.NOT_FOUND:
        return handle_not_found(rt, order, result.reason)
    applied = apply_report(rt, order, status=result.status, payout_id=result.payout_id,
                           amount=result.amount, source="query")  # fmt: skip
    if applied is Applied.STILL_OPEN:
        fresh = rt.store.get(order.payout_cl_id, with_history=False)
        if fresh is not None and fresh.state is State.ACCEPTED and order.state is State.ACCEPTED:
            _reschedule(rt, fresh, next_check_delay_s(rt, fresh.field_int("checks")))
    return CheckStatus.APPLIED


@dataclass
class SweepResult:
    leased: int = 0
    submit: list[str] = field(default_factory=list)
    check: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    dropped: int = 0


def sweep_due(rt: Runtime, *, now: float | None = None, max_batches: int = 20) -> SweepResult:
    """Lease due orders in bounded batches and say what to dispatch for each.

    ``received`` orders past their re-drive time get a new submit message (their
    first one was lost or is stuck); ``submitting`` orders past the call deadline
    become ``unconfirmed`` (the worker died mid-call); ``accepted`` and
    ``unconfirmed`` orders get a check.
    """
    s, store = rt.settings, rt.store
    now = time.time() if now is None else now
    gw = s.gateway
    call_s = (gw.connect_timeout_s + gw.read_timeout_s) if gw else 20.0
    # a leased order comes back after this long if its task never reschedules it
    lease_s = max(2 * s.sweep_interval_s, call_s + 5.0)
    out = SweepResult()
    for _ in range(max_batches):
        ids = store.lease_due(now=now, batch=s.sweep_batch, lease_s=lease_s)
        if not ids:
            break
        out.leased += len(ids)
        orders = store.get_many(ids)
        for i in ids:
            order = orders.get(i)
            if order is None:
                store.redis.zrem(keys.DUE, i)  # expired record: nothing left to do
                out.dropped += 1
                continue
            _route(rt, order, now, call_s, out)
        if len(ids) < s.sweep_batch:
            break
    store.redis.set(keys.SWEEP_LAST, repr(time.time()))
    return out


def _route(rt: Runtime, order: Order, now: float, call_s: float, out: SweepResult) -> None:
    s = rt.settings
    if order.state is State.RECEIVED:
        if now - order.created_at > s.max_order_age_s:
            _review(rt, order, "never sent within MAX_ORDER_AGE")
            return
        out.submit.append(order.payout_cl_id)
    elif order.state is State.SUBMITTING:
        started = order.submitted_at or order.updated_at
        if now - started > call_s + s.submitting_margin_s:
            prev = rt.store.transition(
                order.payout_cl_id, State.UNCONFIRMED, sources={State.SUBMITTING},
                reason="no answer recorded by the call deadline (worker lost mid-call)",
                due=now + s.unconfirmed_first_check_s,
                expect=("submit_attempts", order.fields.get("submit_attempts", "")),
            )  # fmt: skip
            if prev is not None:
                log.warning("payout.transition", payout_cl_id=order.payout_cl_id,
                            **{"from": "submitting", "to": "unconfirmed"},
                            reason="worker lost mid-call")  # fmt: skip
                out.unconfirmed.append(order.payout_cl_id)
    elif order.state in (State.ACCEPTED, State.UNCONFIRMED):
        out.check.append(order.payout_cl_id)
    else:
        # final or review: not scheduled. Conditional on the state, so an operator's
        # concurrent resubmit (which schedules it again) is never undone.
        rt.store.transition(order.payout_cl_id, None, sources={order.state},
                            reason="unschedule", due=REMOVE)  # fmt: skip
        out.dropped += 1


def reconcile_window(rt: Runtime, ids: Iterable[str]) -> list[str]:
    """Check many orders with the list query's time window (limit 500 per page).

    Returns the ids the window did not settle (not found there, or the query
    failed), which the caller checks one by one.
    """
    orders = {i: o for i, o in rt.store.get_many(ids).items()
              if o.state in (State.ACCEPTED, State.UNCONFIRMED)}  # fmt: skip
    if not orders:
        return []
    times = [int(o.submitted_at or o.created_at) for o in orders.values()]
    lo, hi = min(times) - 120, max(times) + 120
    seen: set[str] = set()
    offset = 0
    gateway = rt.gateway
    while offset < 100_000:
        if not rt.limiter.acquire(max_wait_s=5.0):
            break
        page = gateway.query_window(created_gte=lo, created_lte=hi, offset=offset)
        if page is None:
            break
        results, total = page
        for res in results:
            pid = str(res.record.get("payout_cl_id", ""))
            order = orders.get(pid)
            if order is None or pid in seen:
                continue
            seen.add(pid)
            apply_query(rt, order, res)
        offset += len(results)
        if not results or offset >= total:
            break
    return [i for i in orders if i not in seen]
