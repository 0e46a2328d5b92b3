"""Submitting an order: claim, sign, send once, classify, record.

The claim ``received -> submitting`` is the only way to the create request, so
exactly one worker ever sends it; a duplicate or redelivered message finds the
order claimed and does nothing.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from worker import keys
from worker.backoff import retry_delay_s
from worker.checks import apply_query
from worker.crashpoints import crash_point
from worker.desk import approval, balance, gate
from worker.errors import LossEpochPending, NotDurable, OrderNotFound, PersonalDataUnreadable
from worker.gateway import STALE_CLAIM, CreateResult, Outcome, QueryKind
from worker.logs import get_logger
from worker.moves import move, moved
from worker.payout import Payout
from worker.runtime import Runtime
from worker.settings import Settings
from worker.states import State
from worker.store import INCR, NOW, REMOVE, Order, stamp

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
    #: not sent: its sealed personal data does not open (wrong key, moved, altered, erased):
    #: moved to review with that reason (D72)
    UNREADABLE = "unreadable"


def defer_s(rt: Runtime) -> float:
    """How long a submit that got no rate token waits: no sooner than the sweep's lease,
    and no sooner than the submit messages queued ahead need at the rate (D17)."""
    s, limiter = rt.settings, rt.limiter
    backlog = (rt.submit_backlog() or 0) if limiter.enabled else 0  # the broker's queue (D49)
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
    """Claim ``payout_cl_id`` and send its create request at most once: claim, send, record."""
    claim = _claim(rt, payout_cl_id, epoch_checked=_epoch_checked)
    if isinstance(claim, SubmitStatus):
        return claim
    answer = _send(rt, claim)
    if isinstance(answer, SubmitStatus):
        return answer
    return _record(rt, claim, answer)


@dataclass(frozen=True, slots=True)
class _Claim:
    """An order this worker claimed (``received -> submitting``): it alone may send its create."""

    order: Order
    payout: Payout
    #: the attempt number the claim incremented; every write after it expects it
    attempts: int
    #: the algorithm written with the claim: the create is signed with it
    sign_type: str
    #: the claim-budget fence, asked immediately before the POST (D7)
    fresh: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the gateway said to the create, once a refusal was followed up."""

    result: CreateResult
    #: a merchant-level refusal (HOLD_CODES, D21): nothing created, the order is held
    merchant_code: bool
    #: any other refusal's code, kept when the outcome turned unknown (D41)
    refusal: str | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """The one write that records an answer: where the order goes and with what."""

    target: State
    status: SubmitStatus
    due: float
    fields: dict[str, object]
    reason: str
    #: a counter, no history entry, no event (D20)
    quiet: bool


def _claim(rt: Runtime, payout_cl_id: str, *, epoch_checked: bool) -> _Claim | SubmitStatus:
    """Step 1: the checks, a rate token, then the claim ``received -> submitting``.

    The claim is the only way to the create request; the attempt number is incremented
    inside the same compare-and-set (two racing claims can never share one). Anything
    other than a won claim returns the status, and nothing is sent.
    """
    store, settings = rt.store, rt.settings
    ready = _ready(rt, payout_cl_id)
    if isinstance(ready, SubmitStatus):
        return ready
    order, payout = ready
    cfg = rt.gateway.cfg
    if not rt.limiter.acquire(max_wait_s=settings.submit_token_wait_s):
        return _defer(rt, payout_cl_id)
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
        if epoch_checked:  # checked, then another loss epoch came: check again later
            _reschedule_received(rt, payout_cl_id, 1.0, "loss epoch changed during the check")
            return SubmitStatus.EPOCH_WAIT
        return after_loss_epoch(rt, order, pending)
    except NotDurable as exc:
        return _undo_unacknowledged(rt, payout_cl_id, exc)
    if claimed is None:
        log.info("payout.submit.claim_lost")
        return SubmitStatus.CLAIM_LOST
    moved(rt, payout_cl_id, State.RECEIVED, State.SUBMITTING, "claimed", attempt=claimed)
    return _Claim(order, payout, claimed, cfg.sign_type, fresh)


def _ready(rt: Runtime, payout_cl_id: str) -> tuple[Order, Payout] | SubmitStatus:
    """The order as read before the claim, and its payout opened, when it may be claimed:
    it exists, is ``received``, its personal data opens and the pre-send gate lets it go."""
    store = rt.store
    order = store.get(payout_cl_id, with_history=False)
    if order is None:
        log.warning("payout.submit.missing")
        return SubmitStatus.MISSING
    if order.state is not State.RECEIVED:
        log.info("payout.submit.skipped", state=order.state.value)
        return SubmitStatus.NOT_RECEIVED
    try:
        # opened before anything else: a value that does not open is never a payout
        payout = store.payout_of(order)
    except PersonalDataUnreadable as exc:
        return _unreadable(rt, order, exc)
    held = gate.pre_send(rt, order)
    if held is not None:
        return _hold(rt, order, held)
    return order, payout


def _defer(rt: Runtime, payout_cl_id: str) -> SubmitStatus:
    """No rate token: deferred. A counter, no state change, no history, no event (D20);
    due again after max(lease, backlog / rate), so no second message while one waits (D17)."""
    rt.store.transition(
        payout_cl_id,
        None,
        sources={State.RECEIVED},
        reason="rate limited",
        due=time.time() + defer_s(rt),
        fields={"deferrals": INCR},
    )
    log.info("payout.submit.deferred")
    return SubmitStatus.RATE_LIMITED


def _undo_unacknowledged(rt: Runtime, payout_cl_id: str, exc: NotDurable) -> SubmitStatus:
    """The claim was applied on the master but not on enough replicas: undone, nothing sent.

    Quiet, a counter on the order (D48): a replica lagging for an hour must not flood the
    history and the events stream with claim/undo pairs (the claims after the first log
    nothing either: the history still says submitting).
    """
    attempt = str(exc.result[2]) if exc.result and len(exc.result) > 2 else ""
    rt.store.transition(
        payout_cl_id,
        State.RECEIVED,
        sources={State.SUBMITTING},
        reason="claim not acknowledged by the Redis replicas in time: undone, not sent",
        due=time.time() + retry_delay_s(int(attempt or 1), cap_s=rt.settings.submit_retry_max_s),
        expect=("submit_attempts", attempt),
        fields={"not_durable": INCR},
        quiet=True,
    )
    log.warning("payout.submit.not_durable", acks=exc.acks, needed=exc.needed)
    return SubmitStatus.NOT_DURABLE


def _send(rt: Runtime, claim: _Claim) -> _Answer | SubmitStatus:
    """Step 2: the signed create, sent once, and only while the claim is within its budget.

    The gate is asked again right before the POST: a pause set since the first check is
    obeyed (the order goes back to ``received``, nothing sent). The gateway client asks
    ``claim.fresh`` immediately before the request leaves (D7). A refusal that is not a
    merchant-level hold is followed up before anything is concluded (D21, D41).
    """
    settings, order = rt.settings, claim.order
    notify_url = order.notify_url or settings.notify_url
    crash_point("after_claim")
    late_hold = gate.pre_send(rt, order, balance=False)
    if late_hold is not None:
        move(
            rt,
            order.payout_cl_id,
            State.RECEIVED,
            sources={State.SUBMITTING},
            reason=f"not sent: {late_hold.reason}"[:200],
            due=time.time() + settings.pause_recheck_s,
            fields={"held": late_hold.reason},
            expect=("submit_attempts", str(claim.attempts)),
        )
        return SubmitStatus.HELD
    result = rt.gateway.create_payout(
        claim.payout, sign_type=claim.sign_type, notify_url=notify_url, may_send=claim.fresh
    )
    merchant_code = result.outcome is Outcome.REJECTED and result.code in settings.hold_codes
    refusal = result.code if result.outcome is Outcome.REJECTED and not merchant_code else None
    if refusal:
        result = _after_refusal(rt, order.payout_cl_id, result, claim.sign_type)
    return _Answer(result, merchant_code, refusal)


def _record(rt: Runtime, claim: _Claim, answer: _Answer) -> SubmitStatus:
    """Step 3: the answer applied through the seam, guarded by the claim's attempt number.

    Never lost: an order the store no longer holds keeps the evidence (D40); an answer
    that comes after the order left ``submitting`` is recorded as late (D30, D55).
    """
    order, result, i = claim.order, answer.result, claim.order.payout_cl_id
    now = time.time()
    if result.outcome is Outcome.RATE_LIMITED:  # a 429: every process waits before its next request
        rt.limiter.pause(retry_delay_s(1))
    out = _outcome(rt.settings, claim, answer, now)
    crash_point("after_response")
    try:
        applied = rt.store.transition(
            i,
            out.target,
            sources={State.SUBMITTING},
            reason=out.reason,
            due=out.due if out.target is not State.REJECTED else None,
            fields=out.fields,
            expect=("submit_attempts", str(claim.attempts)),
            quiet=out.quiet,
        )
    except OrderNotFound:
        keep_lost_answer(rt, i, result, out.reason)
        return out.status
    crash_point("after_state_write")
    if applied is None:
        answer_late(rt, order, claim.attempts, result, out.reason, refusal=answer.refusal)
        return out.status
    if not out.quiet:
        moved(
            rt,
            i,
            applied,
            out.target,
            out.reason,
            outcome=result.outcome.value,
            payout_id=result.payout_id,
            attempt=claim.attempts,
        )
    if answer.merchant_code:
        log.error("payout.held", code=result.code, reason=result.reason)
        balance.merchant_hold(rt, order, result.code, result.reason)
    return out.status


def _outcome(settings: Settings, claim: _Claim, answer: _Answer, now: float) -> _Outcome:
    """Where an answer sends the claimed order (a decision; nothing is written here)."""
    result = answer.result
    fields: dict[str, object] = {"last_gateway": result.reason, "answered_at": NOW}
    quiet = False
    if result.outcome is Outcome.ACCEPTED:
        target, status = State.ACCEPTED, SubmitStatus.ACCEPTED
        fields["payout_id"] = result.payout_id
        due: float = now + settings.check_interval_min_s
    elif answer.merchant_code:
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
        if answer.refusal:
            # the refusal is kept, and honoured only when the gateway still does not know
            # the order after UNCONFIRMED_GRACE (D41)
            fields["late_reject_code"] = answer.refusal
    else:  # NOT_SENT or RATE_LIMITED: provably never processed -> may be sent again
        target = State.RECEIVED
        status, counter, quiet = _not_sent(claim.order, result)
        fields[counter] = INCR
        due = now + max(settings.lease_s, retry_delay_s(claim.attempts, cap_s=settings.submit_retry_max_s))
    reason = f"{result.code} {result.reason}".strip() if result.code else result.reason
    if answer.merchant_code:
        reason = f"held: {reason}"
    return _Outcome(target, status, due, fields, reason, quiet)


def _not_sent(order: Order, result: CreateResult) -> tuple[SubmitStatus, str, bool]:
    """A create that provably never reached the gateway: its status, the counter it adds to,
    and whether the move is quiet.

    A counter on the order, not a logged move: a day-long outage must not flood the history
    and the events stream (D20). The first one of an order is logged (its reason in the
    history); the next ones are counters only; a stale claim that sent nothing is rare:
    always logged.
    """
    repeated = order.field_int("not_sent") + order.field_int("rate_limited") > 0
    quiet = repeated and result.reason != STALE_CLAIM
    if result.outcome is Outcome.RATE_LIMITED:
        return SubmitStatus.RATE_LIMITED, "rate_limited", quiet
    return SubmitStatus.NOT_SENT, "not_sent", quiet


def _unreadable(rt: Runtime, order: Order, exc: PersonalDataUnreadable) -> SubmitStatus:
    """The order's personal data does not open: nothing is claimed or sent; review says why
    (the reason names the field and the key id, never a value)."""
    prev = rt.store.transition(
        order.payout_cl_id,
        State.REVIEW,
        sources={State.RECEIVED},
        reason=f"not sent: personal data unreadable: {exc.reason}"[:200],
        due=REMOVE,
    )
    log.error("payout.submit.unreadable", reason=exc.reason, moved=prev is not None)
    return SubmitStatus.UNREADABLE if prev is not None else SubmitStatus.NOT_RECEIVED


def _hold(rt: Runtime, order: Order, held: gate.Hold) -> SubmitStatus:
    """The pre-send gate said no before the claim: nothing is claimed or sent."""
    if held.kind == "approval":
        to = approval.route_unapproved(rt, order)
        log.info("payout.submit.needs_approval", to=to)
        return SubmitStatus.AWAITING_APPROVAL
    gate.hold(rt, order, held)
    log.info("payout.submit.held", kind=held.kind, reason=held.reason)
    return SubmitStatus.HELD


#: refusal codes that do not say "not created" (docs/gateway.md §7: 0017 "failed to create payout
#: record"): an unknown outcome, kept as late_reject_code and honoured only after
#: UNCONFIRMED_GRACE without the gateway listing the order (D41)
AMBIGUOUS_CODES: frozenset[str] = frozenset({"0017"})


def _after_refusal(rt: Runtime, payout_cl_id: str, result: CreateResult, sign_type: str) -> CreateResult:
    """A refusal that is not a merchant-level hold.

    ``0017`` is ambiguous: an unknown outcome at once (unconfirmed; the checks query it
    until the grace has passed, a lagging list cannot make it final, D41). Any other code
    most likely means "not created": query once before it is final (docs/gateway.md §1,
    D21): found -> accepted; not found -> the refusal stands; a failed query -> unknown.
    """
    if result.code in AMBIGUOUS_CODES:
        why = f"{result.reason}: outcome unknown, queried until UNCONFIRMED_GRACE"
        return CreateResult(Outcome.UNKNOWN, why[:120], result.code)
    q = rt.gateway.query_order(payout_cl_id, sign_type=sign_type)
    if q.kind is QueryKind.NOT_FOUND:
        return result
    if q.kind is QueryKind.FOUND and q.payout_id:
        return CreateResult(Outcome.ACCEPTED, f"{result.code}, then found by query", "0000", q.payout_id)
    return CreateResult(Outcome.UNKNOWN, f"{result.reason}, then query: {q.reason}"[:120], result.code)


def _sent(result: CreateResult) -> bool:
    """The create reached the gateway (it may hold the order): anything but not-sent/429."""
    return result.outcome in (Outcome.ACCEPTED, Outcome.UNKNOWN, Outcome.REJECTED)


def keep_lost_answer(rt: Runtime, payout_cl_id: str, result: CreateResult, reason: str) -> None:
    """The create was answered, but the store no longer holds the order (D40: a host crash
    or relaxed mode lost the create with its claim). The evidence is kept: the tombstone is
    written again (so a re-enqueue of the id is refused, never sent twice), the answer and
    its ``payout_id`` are parked under the id in :data:`worker.keys.LOST`, and an error is
    logged for an operator (``payouts reconcile --orphans`` finds it at the gateway)."""
    if not _sent(result):
        return
    now = rt.store.server_time()
    parked = {
        "payout_id": result.payout_id or "",
        "outcome": result.outcome.value,
        "code": result.code or "",
        "reason": reason[:200],
        "at": stamp(now),
    }
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hsetnx(keys.IDS, payout_cl_id, str(int(now)))
    pipe.hset(keys.LOST, payout_cl_id, json.dumps(parked, sort_keys=True))
    pipe.execute()
    log.error(
        "payout.answer_for_lost_order",
        payout_id=result.payout_id,
        outcome=result.outcome.value,
        code=result.code,
        detail="the store lost this order after its create was sent: id retired, answer parked",
    )


def answer_late(
    rt: Runtime, order: Order, attempts: int, result: CreateResult, reason: str, *, refusal: str | None = None
) -> None:
    """The create's answer came after the order left ``submitting``: recorded, never lost.

    * unconfirmed (the sweep's deadline passed): the ``payout_id``, or a refusal kept as
      ``late_reject_code`` for the checks (honoured only after the grace, D30/D41/D55);
    * received (the claim itself was lost, D40): the create was sent, so the order moves
      to unconfirmed with what the answer said; the checks settle it, never a second create;
    * a merchant-level code (HOLD_CODES) holds and pauses as a timely one does (D55).
    """
    s, i = rt.settings, order.payout_cl_id
    log.warning("payout.submit.answer_late", outcome=result.outcome.value, reason=reason)
    hold = result.outcome is Outcome.REJECTED and result.code in s.hold_codes
    if hold:
        log.error("payout.held", code=result.code, reason=result.reason)
        balance.merchant_hold(rt, order, result.code, result.reason)
    late: dict[str, object] = {"last_gateway": reason}
    if result.payout_id:
        late["payout_id"] = result.payout_id
    elif result.outcome is Outcome.REJECTED or refusal:
        late["late_reject_code"] = refusal or result.code
    current = rt.store.state_of(i)
    if current is State.UNCONFIRMED and len(late) > 1:
        rt.store.transition(
            i,
            None,
            sources={State.UNCONFIRMED},
            reason="late answer",
            fields=late,
            expect=("submit_attempts", str(attempts)),
        )
    elif current is State.RECEIVED and _sent(result) and not hold:
        move(
            rt,
            i,
            State.UNCONFIRMED,
            sources={State.RECEIVED},
            reason=f"create answered after its claim was lost ({reason}): recorded as sent"[:200],
            due=time.time() + s.unconfirmed_first_check_s,
            fields={**late, "submitted_at": NOW},
            log_fields={"payout_id": result.payout_id},
        )


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
    # verified with the algorithm the order was sent with, not today's setting (D54)
    result = rt.gateway.query_order(i, sign_type=order.sign_type)
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
