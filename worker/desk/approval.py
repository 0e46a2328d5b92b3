"""Approval (maker-checker) of the operator desk.

With ``APPROVAL_ABOVE`` set, or for a suspected duplicate, an order waits in
``awaiting_approval`` (open, due at its deadline) until :func:`approve` (by someone other
than ``requested_by``; two people at or above ``APPROVAL_TWO_ABOVE``) or :func:`reject`;
the sweep rejects it at ``APPROVAL_TTL`` (:func:`expire_approval`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from worker.errors import ApprovalRefused, InvalidTransition, OrderNotFound, PayoutError
from worker.logs import get_logger
from worker.moves import move
from worker.runtime import Runtime
from worker.settings import Settings
from worker.states import State
from worker.store import Order, now_plus, stamp

log = get_logger("payouts.controls")


def needs_approval(s: Settings, order: Order) -> bool:
    """Does this order need an approval before it is sent (and has none yet)?"""
    if order.fields.get("approved") == "1":
        return False
    if order.fields.get("dup_of"):
        return True
    return bool(s.approval_above) and order.amount >= s.approval_above


def approvals_needed(s: Settings, amount: int) -> int:
    return 2 if s.approval_two_above and amount >= s.approval_two_above else 1


def request_approval(rt: Runtime, order: Order, reason: str) -> bool:
    """Move a ``received`` order to ``awaiting_approval`` (due at its deadline)."""
    s, now = rt.settings, time.time()
    if not s.approval_above:
        return False  # approval is off: the caller sends a suspected duplicate to review
    until = now + s.approval_ttl_s
    prev = move(
        rt,
        order.payout_cl_id,
        State.AWAITING_APPROVAL,
        sources={State.RECEIVED},
        reason=reason[:200],
        due=until,
        fields={
            # on the Redis server's clock: the sweep and the approve step compare it there
            "approval_until": now_plus(s.approval_ttl_s),
            "approvals_needed": approvals_needed(s, order.amount),
            "approved_by": "",
        },
    )
    return prev is not None


def route_unapproved(rt: Runtime, order: Order) -> str:
    """An order that needs approval reached the send path: hold it, never send it.

    With approval off (only the duplicate guard asked), it goes to review instead.
    Returns the state it went to ("" if it had moved meanwhile).
    """
    why = (
        "suspected duplicate of " + order.fields["dup_of"]
        if order.fields.get("dup_of")
        else "above APPROVAL_ABOVE"
    )
    if request_approval(rt, order, f"awaiting approval: {why}"):
        return State.AWAITING_APPROVAL.value
    prev = move(rt, order.payout_cl_id, State.REVIEW, sources={State.RECEIVED}, reason=f"review: {why}"[:200])
    if prev is not None:
        return State.REVIEW.value
    return ""


def _awaiting(rt: Runtime, payout_cl_id: str, target: str, expect_state: State | None) -> Order:
    order = rt.store.get(payout_cl_id, with_history=False)
    if order is None:
        raise OrderNotFound(payout_cl_id)
    wanted = expect_state or State.AWAITING_APPROVAL
    if order.state is not wanted or order.state is not State.AWAITING_APPROVAL:
        raise InvalidTransition(payout_cl_id, order.state.value, target)
    return order


def approve(rt: Runtime, payout_cl_id: str, *, by: str, expect_state: State | None = None) -> State:
    """Approve an order awaiting approval; returns its state after (received when sent on).

    Raises ApprovalRefused when ``by`` is empty, is the order's requester, or already
    gave the first of two approvals; InvalidTransition when the order is not awaiting
    approval (or not in ``expect_state``), also when another approval won a race.
    """
    by = by.strip()[:64]
    if not by:
        raise ApprovalRefused("approve needs --by NAME")
    order = _awaiting(rt, payout_cl_id, "received (approve)", expect_state)
    if order.fields.get("requested_by", "") == by:
        raise ApprovalRefused(f"{by} requested order {payout_cl_id!r} and cannot approve it")
    first = order.fields.get("approved_by", "")
    if first == by:
        raise ApprovalRefused(
            f"{by} already approved {payout_cl_id!r}: a second, different approver is needed"
        )
    now = time.time()
    if order.field_int("approvals_needed", 1) >= 2 and not first:
        prev = rt.store.transition(
            payout_cl_id,
            None,
            sources={State.AWAITING_APPROVAL},
            reason="first approval",
            expect=("approved_by", ""),
            fields={"approved_by": by, "approved_at": stamp(now)},
        )
        if prev is None:
            raise InvalidTransition(payout_cl_id, order.state.value, "first approval (raced)")
        log.info("payout.approved", payout_cl_id=payout_cl_id, by=by, step="1 of 2")
        return State.AWAITING_APPROVAL
    who = f"{first} and {by}" if first else by
    fields: dict[str, object] = {"approved": "1", "held": None}
    fields["second_approved_by" if first else "approved_by"] = by
    prev = move(
        rt,
        payout_cl_id,
        State.RECEIVED,
        sources={State.AWAITING_APPROVAL},
        reason=f"approved by {who}"[:200],
        expect=("approved_by", first),
        due=now + rt.settings.submit_redrive_s,
        fields=fields,
        log_fields={"by": by},
    )
    if prev is None:
        raise InvalidTransition(payout_cl_id, order.state.value, "received (approve, raced)")
    # the sweep re-drives it at its due time if this message is lost
    rt.dispatch.submit(payout_cl_id)
    return State.RECEIVED


def reject(rt: Runtime, payout_cl_id: str, *, by: str, note: str, expect_state: State | None = None) -> State:
    """Refuse an order awaiting approval: it becomes ``rejected`` (final, never sent)."""
    by, note = by.strip()[:64], note.strip()
    if not by:
        raise ApprovalRefused("reject needs --by NAME")
    if not note:
        raise PayoutError("reject needs --note saying why")
    _awaiting(rt, payout_cl_id, "rejected (reject)", expect_state)
    prev = move(
        rt,
        payout_cl_id,
        State.REJECTED,
        sources={State.AWAITING_APPROVAL},
        reason=f"rejected by {by}: {note}"[:200],
        fields={"rejected_by": by, "rejection_note": note[:500]},
        log_fields={"by": by},
    )
    if prev is None:
        raise InvalidTransition(payout_cl_id, "changed meanwhile", "rejected (reject)")
    return State.REJECTED


def expire_approval(rt: Runtime, order: Order, now: float) -> bool:
    """The sweep found an order awaiting approval due: reject it past its deadline."""
    until = order.field_float("approval_until", 0.0)
    if until > now:
        rt.store.transition(
            order.payout_cl_id, None, sources={State.AWAITING_APPROVAL}, reason="x", due=until, now=now
        )
        return False
    ttl = int(rt.settings.approval_ttl_s)
    prev = move(
        rt,
        order.payout_cl_id,
        State.REJECTED,
        sources={State.AWAITING_APPROVAL},
        reason=f"approval expired: not approved within APPROVAL_TTL ({ttl}s)",
        fields={"rejected_by": "expiry"},
    )
    return prev is not None


@dataclass(frozen=True)
class BulkRow:
    payout_cl_id: str
    outcome: str  # the state after, or "error: ..."


def approve_many(rt: Runtime, ids: Iterable[str], *, by: str) -> list[BulkRow]:
    """Approve each id in turn; one refusal does not stop the others."""
    rows = []
    for i in dict.fromkeys(x.strip() for x in ids if x.strip()):
        try:
            rows.append(BulkRow(i, approve(rt, i, by=by).value))
        except PayoutError as exc:
            rows.append(BulkRow(i, f"error: {exc}"))
    return rows
