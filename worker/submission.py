"""Submitting an order: claim, sign, send once, classify, record.

The claim ``received -> submitting`` is the only way to the create request, so
exactly one worker ever sends it; a duplicate or redelivered message finds the
order claimed and does nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import StrEnum

from worker import controls
from worker.backoff import retry_delay_s
from worker.checks import apply_query
from worker.crashpoints import crash_point
from worker.errors import LossEpochPending, NotDurable
from worker.gateway import STALE_CLAIM, CreateResult, Outcome, QueryKind
from worker.logs import get_logger
from worker.moves import move, moved
from worker.runtime import Runtime
from worker.states import State
from worker.store import INCR, NO_QUEUE, NOW, Order, stamp

log = get_logger("payouts.submit")


class SubmitStatus(StrEnum):
    MISSING = "missing"
    NOT_RECEIVED = "not_received"
    CLAIM_LOST = "claim_lost"
    RATE_LIMITED = "rate_limited"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNCONFIRMED = "unconfirmed"
    NOT_SENT = "not_sent"
    #: not sent: paused, balance too low, or merchant-level refusal (order stays received)
    HELD = "held"
    #: not sent: needs an approval first (moved to awaiting_approval or review)
    AWAITING_APPROVAL = "awaiting_approval"
    #: the claim was not acknowledged by the replicas in time: undone, nothing sent
    NOT_DURABLE = "not_durable"
    #: the order predates a loss epoch and the gateway does not know it yet: waiting out
    #: UNCONFIRMED_GRACE before a create may be sent
    EPOCH_WAIT = "epoch_wait"
    #: the order predates a loss epoch and the gateway has it: its lost claim was sent;
    #: the gateway's report is applied, no create is sent
    EPOCH_FOUND = "epoch_found"
    #: the order predates a loss epoch and the query failed: rescheduled
    EPOCH_QUERY_FAILED = "epoch_query_failed"


def defer_s(rt: Runtime) -> float:
    """How long a submit that got no rate token waits: no sooner than the sweep's lease,
    and no sooner than the submit messages queued ahead need at the rate (D17)."""
    s, limiter = rt.settings, rt.limiter
    backlog = 0
    if limiter.enabled and rt.store.submit_queue != NO_QUEUE:
        backlog = int(rt.redis.llen(rt.store.submit_queue))
    return max(s.lease_s, backlog / limiter.rate if limiter.enabled else 0.0)


def _clock() -> tuple[float, float]:
    """(wall, boot) seconds: the boot clock also runs while the host is suspended."""
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    return time.time(), time.clock_gettime(boot) if boot is not None else time.monotonic()


def claim_fresh(budget_s: float) -> Callable[[], bool]:
    """A check, asked immediately before the POST, that the claim made now is younger
    than ``budget_s`` by the wall clock and the boot clock (a stalled or suspended
    process must not send: the sweep may already have moved the order on)."""
    wall0, boot0 = _clock()

    def fresh() -> bool:
        wall, boot = _clock()
        return max(wall - wall0, boot - boot0) <= budget_s

    return fresh


def submit_order(rt: Runtime, payout_cl_id: str, *, _epoch_checked: bool = False) -> SubmitStatus:
    """Claim ``payout_cl_id`` and send its create request at most once."""
    store, settings = rt.store, rt.settings
    order = store.get(payout_cl_id, with_history=False)
    if order is None:
        log.warning("payout.submit.missing")
        return SubmitStatus.MISSING
    if order.state is not State.RECEIVED:
        log.info("payout.submit.skipped", state=order.state.value)
        return SubmitStatus.NOT_RECEIVED
    held = controls.pre_send(rt, order)
    if held is not None:
        return _hold(rt, order, held)
    gateway = rt.gateway
    if not rt.limiter.acquire(max_wait_s=settings.submit_token_wait_s):
        # deferred: a counter, no state change, no history, no event (D20); due again
        # after max(lease, backlog / rate), so no second message while one waits (D17)
        store.transition(
            payout_cl_id,
            None,
            sources={State.RECEIVED},
            reason="rate limited",
            due=time.time() + defer_s(rt),
            fields={"deferrals": INCR},
        )
        log.info("payout.submit.deferred")
        return SubmitStatus.RATE_LIMITED

    # claim: the only way to the create request; the attempt number is incremented
    # inside the same compare-and-set (two racing claims can never share one)
    cfg = gateway.cfg
    now = time.time()  # deadlines below are relative: the store anchors them on its clock
    crash_point("before_claim")
    fresh = claim_fresh(settings.submit_claim_budget_s)
    try:
        claimed = store.claim(
            payout_cl_id,
            reason="claimed",
            due=now
            + cfg.connect_timeout_s
            + cfg.read_timeout_s
            + settings.submitting_margin_s
            + store.replica_ack_timeout_s,
            fields={
                # the server's time: the sweep compares it with the server's time (D35)
                "submitted_at": NOW,
                "sign_type": cfg.sign_type,
                "late_reject_code": None,
                **({"held": None} if "held" in order.fields else {}),
            },
        )
    except LossEpochPending as pending:
        if _epoch_checked:  # checked, then another loss epoch came: check again later
            _reschedule_received(rt, payout_cl_id, 1.0, "loss epoch changed during the check")
            return SubmitStatus.EPOCH_WAIT
        return after_loss_epoch(rt, order, pending)
    except NotDurable as exc:
        # applied on the master but not on enough replicas: undo, send nothing
        attempt = str(exc.result[2]) if exc.result and len(exc.result) > 2 else ""
        store.transition(
            payout_cl_id,
            State.RECEIVED,
            sources={State.SUBMITTING},
            reason="claim not acknowledged by the Redis replicas in time: undone, not sent",
            due=time.time() + retry_delay_s(int(attempt or 1), cap_s=settings.submit_retry_max_s),
            expect=("submit_attempts", attempt),
        )
        log.warning("payout.submit.not_durable", acks=exc.acks, needed=exc.needed)
        return SubmitStatus.NOT_DURABLE
    if claimed is None:
        log.info("payout.submit.claim_lost")
        return SubmitStatus.CLAIM_LOST
    attempts = claimed
    moved(rt, payout_cl_id, State.RECEIVED, State.SUBMITTING, "claimed", attempt=attempts)

    notify_url = order.notify_url or settings.notify_url
    crash_point("after_claim")
    # asked again right before the POST: a pause set since the first check is obeyed
    late_hold = controls.pre_send(rt, order, balance=False)
    if late_hold is not None:
        move(
            rt,
            payout_cl_id,
            State.RECEIVED,
            sources={State.SUBMITTING},
            reason=f"not sent: {late_hold.reason}"[:200],
            due=time.time() + settings.pause_recheck_s,
            fields={"held": late_hold.reason},
            expect=("submit_attempts", str(attempts)),
        )
        return SubmitStatus.HELD
    result = gateway.create_payout(
        order.as_payout(), sign_type=cfg.sign_type, notify_url=notify_url, may_send=fresh
    )
    if result.outcome is Outcome.REJECTED and result.code == "0017":
        result = _query_ambiguous(rt, payout_cl_id, result)
    now = time.time()
    merchant_code = result.outcome is Outcome.REJECTED and result.code in settings.hold_codes
    fields: dict[str, object] = {"last_gateway": result.reason, "answered_at": NOW}
    quiet = False
    if result.outcome is Outcome.ACCEPTED:
        target, status = State.ACCEPTED, SubmitStatus.ACCEPTED
        fields["payout_id"] = result.payout_id
        due: float = now + settings.check_interval_min_s
    elif merchant_code:
        # a merchant-level refusal (D21): nothing was created; the order waits, all sending pauses
        target, status = State.RECEIVED, SubmitStatus.HELD
        due = now + settings.pause_recheck_s
        fields["held"] = f"held: {result.code} {result.reason}"
    elif result.outcome is Outcome.REJECTED:
        target, status, due = State.REJECTED, SubmitStatus.REJECTED, 0.0
        fields["reject_code"] = result.code
    elif result.outcome is Outcome.UNKNOWN:
        target, status = State.UNCONFIRMED, SubmitStatus.UNCONFIRMED
        due = now + settings.unconfirmed_first_check_s
    else:  # NOT_SENT or RATE_LIMITED: provably never processed -> may be sent again
        # a counter on the order, not a logged move: a day-long outage must not flood
        # the history and the events stream (D20)
        # the first one of an order is logged (its reason in the history); the next ones
        # are counters only; a stale claim that sent nothing is rare: always logged
        target, status = State.RECEIVED, SubmitStatus.NOT_SENT
        repeated = order.field_int("not_sent") + order.field_int("rate_limited") > 0
        quiet = repeated and result.reason != STALE_CLAIM
        if result.outcome is Outcome.RATE_LIMITED:
            rt.limiter.pause(retry_delay_s(1))
            status = SubmitStatus.RATE_LIMITED
            fields["rate_limited"] = INCR
        else:
            fields["not_sent"] = INCR
        due = now + max(settings.lease_s, retry_delay_s(attempts, cap_s=settings.submit_retry_max_s))
    reason = f"{result.code} {result.reason}".strip() if result.code else result.reason
    if merchant_code:
        reason = f"held: {reason}"
    crash_point("after_response")
    applied = store.transition(
        payout_cl_id,
        target,
        sources={State.SUBMITTING},
        reason=reason,
        due=due if target is not State.REJECTED else None,
        fields=fields,
        expect=("submit_attempts", str(attempts)),
        quiet=quiet,
    )
    crash_point("after_state_write")
    if applied is None:
        # Only the sweep moves a submitting order (to unconfirmed, after the deadline);
        # record the answer so the next query has it, without changing the state.
        log.warning("payout.submit.answer_late", outcome=result.outcome.value, reason=reason)
        late: dict[str, object] = {}
        if result.payout_id:
            late = {"payout_id": result.payout_id, "last_gateway": reason}
        elif result.outcome is Outcome.REJECTED:
            # a definitive refusal after the sweep marked it unconfirmed: kept, and used
            # when the query then says not found (D30)
            late = {"late_reject_code": result.code, "last_gateway": reason}
        if late:
            store.transition(
                payout_cl_id,
                None,
                sources={State.UNCONFIRMED},
                reason="late answer",
                fields=late,
                expect=("submit_attempts", str(attempts)),
            )
        return status
    if not quiet:
        moved(
            rt,
            payout_cl_id,
            applied,
            target,
            reason,
            outcome=result.outcome.value,
            payout_id=result.payout_id,
            attempt=attempts,
        )
    if merchant_code:
        log.error("payout.held", code=result.code, reason=result.reason)
        controls.merchant_hold(rt, order, result.code, result.reason)
    return status


def _hold(rt: Runtime, order: Order, held: controls.Hold) -> SubmitStatus:
    """The pre-send gate said no before the claim: nothing is claimed or sent."""
    if held.kind == "approval":
        to = controls.route_unapproved(rt, order)
        log.info("payout.submit.needs_approval", to=to)
        return SubmitStatus.AWAITING_APPROVAL
    controls.hold(rt, order, held)
    log.info("payout.submit.held", kind=held.kind, reason=held.reason)
    return SubmitStatus.HELD


def _query_ambiguous(rt: Runtime, payout_cl_id: str, result: CreateResult) -> CreateResult:
    """0017 "failed to create payout record" is ambiguous: query once before rejecting (D21).

    Found -> treat as accepted; not found -> the refusal stands; a failed query ->
    an unknown outcome (unconfirmed: the checks settle it, never a second create).
    """
    q = rt.gateway.query_order(payout_cl_id)
    if q.kind is QueryKind.NOT_FOUND:
        return result
    if q.kind is QueryKind.FOUND and q.payout_id:
        return CreateResult(Outcome.ACCEPTED, "0017, then found by query", "0000", q.payout_id)
    return CreateResult(Outcome.UNKNOWN, f"0017, then query: {q.reason}"[:120], result.code)


def _reschedule_received(
    rt: Runtime, payout_cl_id: str, delay_s: float, reason: str, **fields: object
) -> None:
    rt.store.transition(
        payout_cl_id, None, sources={State.RECEIVED}, reason=reason, due=time.time() + delay_s, fields=fields
    )


def after_loss_epoch(rt: Runtime, order: Order, pending: LossEpochPending) -> SubmitStatus:
    """The claim was refused: ``order`` existed before a loss epoch, so a claim of it may
    have been lost with the server's last writes after its create was sent. Ask the
    gateway first: found -> apply what it says, never create; not found -> trusted only
    once UNCONFIRMED_GRACE has passed since the epoch (then mark it checked and claim)."""
    s, store, i = rt.settings, rt.store, order.payout_cl_id
    if not rt.limiter.acquire(max_wait_s=2.0):
        _reschedule_received(rt, i, 1.0 + random.random(), "loss epoch: query rate limited")
        return SubmitStatus.EPOCH_QUERY_FAILED
    result = rt.gateway.query_order(i)
    # the epoch's time is the Redis server's: so is the clock it is compared with (D35)
    now = store.server_time()
    if result.kind is QueryKind.FOUND:
        # the lost claim was sent: the order is at the gateway. Never create: record it as
        # unconfirmed (what a sent create with no recorded answer is) and apply the report
        prev = move(
            rt,
            i,
            State.UNCONFIRMED,
            sources={State.RECEIVED},
            reason=f"found at the gateway after loss epoch {pending.epoch_no} (a lost claim was sent)",
            due=now + s.unconfirmed_first_check_s,
            now=now,
            fields={"epoch_checked": pending.epoch_no, "submitted_at": stamp(pending.epoch_at)},
        )
        if prev is None:
            return SubmitStatus.NOT_RECEIVED
        fresh = store.get(i, with_history=False)
        if fresh is not None:
            apply_query(rt, fresh, result)
        return SubmitStatus.EPOCH_FOUND
    if result.kind is QueryKind.NOT_FOUND:
        trusted_at = pending.epoch_at + s.unconfirmed_grace_s
        if now < trusted_at:
            _reschedule_received(
                rt,
                i,
                min(trusted_at - now, max(1.0, s.unconfirmed_grace_s / 4)) + random.uniform(0, 0.5),
                f"loss epoch {pending.epoch_no}: not at the gateway yet, waiting out UNCONFIRMED_GRACE",
            )
            log.info("payout.submit.epoch_wait", epoch=pending.epoch_no, wait_s=round(trusted_at - now, 1))
            return SubmitStatus.EPOCH_WAIT
        store.transition(
            i,
            None,
            sources={State.RECEIVED},
            reason=f"loss epoch {pending.epoch_no}: not at the gateway after UNCONFIRMED_GRACE",
            fields={"epoch_checked": pending.epoch_no},
        )
        return submit_order(rt, i, _epoch_checked=True)
    if result.rate_limited:
        rt.limiter.pause(1.0)
    _reschedule_received(rt, i, retry_delay_s(2, cap_s=s.submit_retry_max_s), "loss epoch: query failed")
    return SubmitStatus.EPOCH_QUERY_FAILED
