"""The sweep: lease due orders in bounded batches and route each to its next step."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from worker import keys
from worker.checks import age_since
from worker.desk import approval, balance, pausing
from worker.logs import get_logger
from worker.moves import move
from worker.privacy import erase_due
from worker.reports import send_to_review
from worker.results import clear_owed, deliver, write_switch
from worker.runtime import Runtime
from worker.states import State
from worker.store import NO_QUEUE, REMOVE, Order

log = get_logger("payouts.sweep")


@dataclass
class SweepResult:
    """What one sweep leased and what it asks the caller to dispatch."""

    leased: int = 0
    submit: list[str] = field(default_factory=list)
    check: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    dropped: int = 0
    #: received orders not dispatched because their bank is paused
    held: int = 0
    #: approval requests that expired (-> rejected)
    expired: int = 0
    #: final results re-sent (their first publish never happened)
    results: int = 0
    #: due received orders not re-driven this tick (their message is likely still queued,
    #: or the tick's budget was spent): leased until the queue ahead should have drained
    held_back: int = 0
    #: the submit queue's length when the sweep began (-1: not readable at the broker)
    submit_queue: int = -1
    #: final orders whose personal fields were erased (PII_RETENTION_DAYS)
    erased: int = 0


@dataclass
class SubmitBudget:
    """The dispatch rule for re-driven submits (D17: at most one message in flight per order).

    The submit queue is kept at about two ticks of work at the gateway's rate
    (``cap = GATEWAY_MAX_RPS x SWEEP_INTERVAL x 2``): a tick re-drives at most
    ``cap - queued`` orders, and an order it does not re-drive is leased until the
    messages ahead of it should have been consumed (``queued / rate``), so an order
    whose first message is still waiting is not sent another. Without a rate limit
    there is no cap and the lease is the base lease.
    """

    rate: float
    queued: int
    cap: int
    left: int
    base_lease_s: float

    @classmethod
    def of(cls, rt: Runtime) -> SubmitBudget:
        s = rt.settings
        rate = rt.limiter.rate if rt.limiter.enabled else 0.0
        queued = rt.submit_backlog() or 0  # through the broker's connection if not the store (D49)
        if rate <= 0:
            return cls(0.0, queued, 1 << 30, 1 << 30, s.lease_s)
        cap = max(1, math.ceil(rate * s.sweep_interval_s * 2))
        return cls(rate, queued, cap, max(0, cap - queued), s.lease_s)

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def lease_s(self, extra: int = 0) -> float:
        """How long until ``extra`` more messages behind the queued ones are consumed."""
        if self.rate <= 0:
            return self.base_lease_s
        return self.base_lease_s + (self.queued + extra) / self.rate


def sweep_due(rt: Runtime, *, now: float | None = None, max_batches: int = 20) -> SweepResult:
    """Lease due orders in bounded batches and say what to dispatch for each.

    ``received`` orders past their re-drive time get a new submit message (their
    first one was lost or is stuck); ``submitting`` orders past the call deadline
    become ``unconfirmed`` (the worker died mid-call); ``accepted`` and
    ``unconfirmed`` orders get a check.
    """
    s, store = rt.settings, rt.store
    # every time the sweep compares (due, lease, claim age, approval deadline, order age) is
    # on the Redis server's clock, where the scripts wrote them (D35); ``now`` simulates time
    now = store.server_time() if now is None else now
    gw = s.gateway
    call_s = (gw.connect_timeout_s + gw.read_timeout_s) if gw else 20.0
    # a leased order comes back after this long if its task never reschedules it
    lease_s = s.lease_s
    # the workers' word on whether results are owed (D44): transition.lua reads it
    write_switch(store.redis, s)
    budget = SubmitBudget.of(rt)
    known = store.submit_queue != NO_QUEUE or rt.broker_queue_length is not None
    out = SweepResult(submit_queue=budget.queued if known else -1)
    try:
        balance.poll_balance(rt, now=now)
    except Exception as exc:  # the balance is advisory: never let it stop the sweep
        log.warning("payouts.balance.poll_failed", error=type(exc).__name__)
    # read once per tick: a paused bank's received orders are not dispatched (no churn)
    paused = {pausing.bank_scope(p.scope) for p in pausing.pauses(rt)}
    for _ in range(max_batches):
        ids = store.lease_due(now=now, batch=s.sweep_batch, lease_s=lease_s)
        lease_until = repr(now + lease_s)
        if not ids:
            break
        out.leased += len(ids)
        orders = store.get_many(ids)
        submits_before, checks_before = len(out.submit), len(out.check)
        held: list[str] = []
        for i in ids:
            order = orders.get(i)
            if order is None:
                # expired record: nothing left to do
                pipe = store.redis.pipeline(transaction=False)
                pipe.zrem(keys.DUE, i)
                pipe.zrem(keys.OPEN_SINCE, i)
                pipe.execute()
                out.dropped += 1
                continue
            _route(rt, order, now, call_s, out, paused, budget, held)
        pipe = store.redis.pipeline(transaction=False)
        # re-driven submits: leased until the queue ahead of their new message is consumed
        redriven = out.submit[submits_before:]
        if redriven:
            until = repr(now + budget.lease_s(len(out.submit)))
            pipe.zadd(keys.DUE, dict.fromkeys(redriven, until), xx=True)
        if held:
            pipe.zadd(keys.DUE, dict.fromkeys(held, repr(now + budget.lease_s())), xx=True)
        # a check message holds its order's lease: a check finding another lease (the
        # order was checked and rescheduled meanwhile) does nothing (checks.py)
        for i in out.check[checks_before:]:
            pipe.hset(keys.order(i), "lease", lease_until)
        pipe.execute()
        if len(ids) < s.sweep_batch:
            break
    # one bounded batch a tick: a backlog (after an outage) drains at 500 orders per tick
    out.erased = erase_due(store.redis, now=now)
    store.redis.set(keys.SWEEP_LAST, repr(time.time()))  # liveness: read on this host's clock
    return out


def _route(
    rt: Runtime,
    order: Order,
    now: float,
    call_s: float,
    out: SweepResult,
    paused: set[str],
    budget: SubmitBudget,
    held: list[str],
) -> None:
    s = rt.settings
    if order.result_pending:
        if not s.result_task:
            clear_owed(rt, order.payout_cl_id, order.state)  # results are off (D44)
            return
        # a final order whose result was never published: send it again (D9)
        out.results += bool(deliver(rt, order.payout_cl_id))
        return
    if order.state is State.RECEIVED:
        if now - age_since(order, sent=False) > s.max_order_age_s:
            send_to_review(rt, order, "never sent within MAX_ORDER_AGE")
            return
        if pausing.ALL in paused or pausing.bank_scope(order.bank_name) in paused:
            out.held += 1  # the lease already moved its due time on: nothing written
            return
        if budget.take():
            out.submit.append(order.payout_cl_id)
        else:
            held.append(order.payout_cl_id)
            out.held_back += 1
    elif order.state is State.AWAITING_APPROVAL:
        out.expired += approval.expire_approval(rt, order, now)
    elif order.state is State.SUBMITTING:
        started = order.submitted_at or order.updated_at
        if now - started > call_s + s.submitting_margin_s:
            prev = move(
                rt,
                order.payout_cl_id,
                State.UNCONFIRMED,
                sources={State.SUBMITTING},
                reason="no answer recorded by the call deadline (worker lost mid-call)",
                due=now + s.unconfirmed_first_check_s,
                now=now,
                expect=("submit_attempts", order.fields.get("submit_attempts", "")),
            )
            if prev is not None:
                out.unconfirmed.append(order.payout_cl_id)
    elif order.state in (State.ACCEPTED, State.UNCONFIRMED):
        out.check.append(order.payout_cl_id)
    else:
        # final or review: not scheduled. Conditional on the state, so an operator's
        # concurrent resubmit (which schedules it again) is never undone.
        rt.store.transition(order.payout_cl_id, None, sources={order.state}, reason="unschedule", due=REMOVE)
        out.dropped += 1
