"""One gateway report -> one transition.

Every report about an order, from a query or a verified callback, goes through
:func:`apply_report`, which maps the gateway's status (docs/gateway.md §6) onto one atomic
transition. Final states are never overwritten: a different later report sends
the order to ``review`` with the conflict recorded.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from worker.backoff import backoff_s
from worker.logs import get_logger
from worker.moves import move
from worker.runtime import Runtime
from worker.states import FINAL, State
from worker.store import Order

log = get_logger("payouts.reports")

#: gateway payout status -> our final state (docs/gateway.md §6). 0/1/2 are open; others unknown.
FINAL_STATUS: dict[str, State] = {"3": State.SUCCEEDED, "4": State.FAILED, "5": State.FAILED}
OPEN_STATUS: frozenset[str] = frozenset({"0", "1", "2"})


class ReportResult(StrEnum):
    """What applying one report did to the order."""

    #: the order moved (to a final state, or unconfirmed -> accepted)
    CHANGED = "changed"
    #: the order already says what the report says (or the report is a stale open one)
    DUPLICATE = "duplicate"
    #: the gateway still processes it; the order stays open
    STILL_OPEN = "still_open"
    #: the report contradicts the order (final conflict, amount): sent to review
    CONFLICT = "conflict"
    #: the create's own answer is not recorded yet; report again later
    NOT_READY = "not_ready"
    #: an undocumented status: the order stays open and the count goes up
    UNKNOWN_STATUS = "unknown_status"
    #: nothing to do (the order moved meanwhile, or is in review)
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
    """min(CHECK_INTERVAL_MAX, CHECK_INTERVAL_MIN * 2 ** checks), +-10%; the exponent is
    capped, so no count of checks overflows a float (D29)."""
    s = rt.settings
    return backoff_s(s.check_interval_min_s, s.check_interval_max_s, checks) * random.uniform(0.9, 1.1)


def send_to_review(rt: Runtime, order: Order, reason: str, **fields: object) -> ReportResult:
    """Move ``order`` to review (conditional on its state) with the reason recorded."""
    prev = move(rt, order.payout_cl_id, State.REVIEW, sources={order.state}, reason=reason, fields=fields)
    if prev is None:
        return ReportResult.IGNORED
    return ReportResult.CONFLICT


def apply_report(  # noqa: C901 — one branch per (state, gateway status) case of docs/gateway.md §6
    rt: Runtime,
    order: Order,
    *,
    status: str | None,
    payout_id: str | None,
    amount: str | None,
    source: str,
) -> ReportResult:
    """Apply one gateway report (query record or verified callback) to ``order``."""
    store = rt.store
    now = time.time()
    if order.state in (State.RECEIVED, State.SUBMITTING):
        return ReportResult.NOT_READY  # the create's answer is not recorded yet; report again later
    if not amount_matches(amount, order.amount):
        if order.state is State.REVIEW:
            return ReportResult.IGNORED
        return send_to_review(rt, order, f"amount mismatch from {source}", reported_amount=amount)
    target = FINAL_STATUS.get(status or "")
    if order.state in FINAL or order.state is State.REVIEW:
        if order.state is State.REVIEW:
            store.transition(
                order.payout_cl_id,
                None,
                sources={State.REVIEW},
                reason="report",
                fields={"last_report": f"{source}:{status}"},
            )
            return ReportResult.IGNORED
        if target is not None and target is order.state:
            return ReportResult.DUPLICATE
        if status in OPEN_STATUS and order.state is not State.REJECTED:
            return ReportResult.DUPLICATE  # a stale, earlier report arriving late
        return send_to_review(
            rt,
            order,
            f"conflict: {order.state.value} but {source} says status {status}",
            conflict_status=status,
        )
    fields: dict[str, object] = {"gateway_status": status, "last_report": source}
    if payout_id:
        fields["payout_id"] = payout_id
    if target is not None:
        prev = move(
            rt,
            order.payout_cl_id,
            target,
            sources={State.ACCEPTED, State.UNCONFIRMED},
            reason=f"{source}: status {status}",
            fields=fields,
            log_fields={"payout_id": payout_id},
        )
        if prev is None:
            fresh = store.get(order.payout_cl_id, with_history=False)
            if fresh is None or fresh.state is order.state:
                return ReportResult.IGNORED
            return apply_report(rt, fresh, status=status, payout_id=payout_id, amount=amount, source=source)
        return ReportResult.CHANGED
    checks = order.field_int("checks")
    if status in OPEN_STATUS:
        fields["unknown_status_count"] = 0
        if order.state is State.UNCONFIRMED:
            prev = move(
                rt,
                order.payout_cl_id,
                State.ACCEPTED,
                sources={State.UNCONFIRMED},
                reason=f"{source}: found, status {status}",
                fields=fields,
                due=now + next_check_delay_s(rt, checks),
                log_fields={"payout_id": payout_id},
            )
            if prev is not None:
                return ReportResult.CHANGED
        else:
            store.transition(
                order.payout_cl_id, None, sources={order.state}, reason="still open", fields=fields
            )
        return ReportResult.STILL_OPEN
    # an undocumented status: stay open, alert, and send to review if it persists
    unknown = order.field_int("unknown_status_count") + 1
    log.error("payout.unknown_status", status=str(status)[:16], count=unknown, source=source)
    if unknown >= rt.settings.unknown_status_review_after:
        return send_to_review(rt, order, f"unknown gateway status {str(status)[:16]!r} persists")
    store.transition(
        order.payout_cl_id,
        None,
        sources={order.state},
        reason="unknown status",
        fields={**fields, "unknown_status_count": unknown},
    )
    return ReportResult.UNKNOWN_STATUS
