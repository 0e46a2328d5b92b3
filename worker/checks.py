"""Checks: query the gateway about open orders and apply what it says.

A check is one order (:func:`check_order`) or a time window of the list query
(:func:`check_window`); "not found" waits out the grace period and then follows
``NOT_FOUND_POLICY`` (:func:`handle_not_found`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from enum import StrEnum

from worker import keys
from worker.gateway import QueryKind, QueryResult
from worker.logs import get_logger
from worker.moves import move
from worker.reports import FINAL_STATUS, ReportResult, apply_report, next_check_delay_s, send_to_review
from worker.runtime import Runtime
from worker.states import KNOWN_AT_GATEWAY, State
from worker.store import NOW, Order

log = get_logger("payouts.checks")


class CheckStatus(StrEnum):
    """What one check did."""

    #: the order record does not exist (expired or never stored)
    MISSING = "missing"
    #: the order is not in a state that is checked
    SKIPPED = "skipped"
    #: the order is no longer due (another check ran and rescheduled it): no gateway call
    NOT_DUE = "not_due"
    #: no rate token within SUBMIT_TOKEN_WAIT: due again after the lease (a counter)
    DEFERRED = "deferred"
    #: the query failed (error, rate limit): rescheduled
    QUERY_FAILED = "query_failed"
    #: the gateway does not know it yet: rescheduled within the grace period
    NOT_FOUND = "not_found"
    #: not found after the grace, NOT_FOUND_POLICY=resubmit: back to received
    RESUBMIT = "resubmit"
    #: sent to review
    REVIEW = "review"
    #: the gateway's report was applied
    APPLIED = "applied"


def gateway_evidence(rt: Runtime, order: Order) -> str | None:
    """Why we hold proof that the gateway had this order, or None (D3).

    Proof is a ``payout_id`` ever recorded, or an entry in the order's history reaching
    ``accepted``, ``succeeded`` or ``failed``. ``unconfirmed`` alone is no proof (it
    says "may"): it is what NOT_FOUND_POLICY=resubmit exists for.
    """
    if order.payout_id:
        return "it has a payout_id"
    history = order.history or (rt.store.require(order.payout_cl_id).history)
    for entry in history:
        if entry.get("to") in KNOWN_AT_GATEWAY:
            return f"its history reached {entry['to']}"
    return None


def age_since(order: Order, *, sent: bool = True) -> float:
    """When MAX_ORDER_AGE's clock started: the last (re)submission or back-to-polling.

    ``sent=False`` (an order still waiting to be sent) ignores claims that were
    provably not sent, so an order retrying through an outage still ages.
    """
    return max(
        order.created_at,
        (order.submitted_at or 0.0) if sent else 0.0,
        order.field_float("resubmitted_at"),
        order.field_float("repolled_at"),
    )


def _reschedule(rt: Runtime, order: Order, delay_s: float, **fields: object) -> None:
    rt.store.transition(
        order.payout_cl_id,
        None,
        sources={order.state},
        reason="reschedule",
        due=time.time() + delay_s,
        fields={"checks": order.field_int("checks") + 1, **fields},
    )


def _defer(rt: Runtime, order: Order) -> None:
    """No rate token: due again after the lease; counted as a deferral, not a check (D29)."""
    rt.store.transition(
        order.payout_cl_id,
        None,
        sources={order.state},
        reason="deferred",
        due=time.time() + rt.settings.lease_s,
        fields={"deferrals": order.field_int("deferrals") + 1},
    )


def is_due_for_check(order: Order, now: float) -> bool:
    """A check message still stands for ``order``: it is due, or still held by the lease
    the dispatching sweep (or batch) recorded. Rescheduled since (another check ran),
    or unscheduled: the message is stale and the check does nothing (D17)."""
    if order.due_at is None:
        return False
    if order.due_at <= now:
        return True
    lease = order.fields.get("lease")
    return lease is not None and lease != "" and abs(float(lease) - order.due_at) < 1e-3


def handle_not_found(rt: Runtime, order: Order, reason: str) -> CheckStatus:
    """The gateway does not know the order: wait out the grace, then apply the policy."""
    s = rt.settings
    sent_at = order.submitted_at or order.created_at
    now = rt.store.server_time()  # sent_at is on the Redis server's clock (D35)
    if now - sent_at < s.unconfirmed_grace_s:
        # a fresh order may not be listed yet: "not found" counts only after the grace,
        # also for a create that was refused (late, or 0017), D41
        _reschedule(
            rt,
            order,
            min(next_check_delay_s(rt, order.field_int("checks")), s.unconfirmed_grace_s / 4),
            last_query=reason,
        )
        return CheckStatus.NOT_FOUND
    late = order.fields.get("late_reject_code")
    if late and order.state is State.UNCONFIRMED and not order.payout_id:
        return _honour_refusal(rt, order, late, reason)
    evidence = gateway_evidence(rt, order) if s.not_found_policy == "resubmit" else None
    published = bool(order.fields.get("fin"))  # back to polling after a published final (D38)
    if (
        order.state is State.UNCONFIRMED
        and s.not_found_policy == "resubmit"
        and evidence is None
        and not published
    ):
        prev = move(
            rt,
            order.payout_cl_id,
            State.RECEIVED,
            sources={State.UNCONFIRMED},
            reason="not found at the gateway after the grace period: resubmit",
            due=now + s.submit_redrive_s,
            fields={"resubmitted": 1, "resubmitted_at": NOW},
            expect=("payout_id", None),  # a late 0000 recorded meanwhile is proof
        )
        if prev is not None:
            return CheckStatus.RESUBMIT
        return CheckStatus.SKIPPED
    why = f"not found at the gateway {int(now - sent_at)}s after sending"
    if evidence:
        why += f", but {evidence}: not resubmitted"
    send_to_review(rt, order, why)
    return CheckStatus.REVIEW


def _honour_refusal(rt: Runtime, order: Order, code: str, reason: str) -> CheckStatus:
    """The create was refused (its answer came late, or was 0017) and the gateway still does
    not know the order after the grace (D30, D41). A merchant-level code (HOLD_CODES) means
    "not created, and not now": the order waits in received, held, and sending pauses (D55);
    any other code: rejected, as the answer said."""
    s, i = rt.settings, order.payout_cl_id
    if order.fields.get("fin"):
        # its final state was published before (back to polling): a person decides (D38)
        send_to_review(rt, order, f"late refusal {code} and {reason}, after a published final state")
        return CheckStatus.REVIEW
    if code in s.hold_codes:
        prev = move(
            rt,
            i,
            State.RECEIVED,
            sources={State.UNCONFIRMED},
            reason=f"held: late refusal {code} and {reason}"[:200],
            due=time.time() + s.pause_recheck_s,
            fields={"held": f"held: {code}", "late_reject_code": None},
            expect=("payout_id", None),
        )
        # (sending was paused when the late answer came: submission.answer_late)
        return CheckStatus.RESUBMIT if prev is not None else CheckStatus.SKIPPED
    prev = move(
        rt,
        i,
        State.REJECTED,
        sources={State.UNCONFIRMED},
        reason=f"late refusal {code} and {reason}",
        fields={"reject_code": code},
        expect=("payout_id", None),
    )
    return CheckStatus.APPLIED if prev is not None else CheckStatus.SKIPPED


def check_order(rt: Runtime, payout_cl_id: str, *, force: bool = False) -> CheckStatus:
    """Query the gateway for one open order and apply what it says.

    A message for an order that is no longer due (see :func:`is_due_for_check`) does
    nothing, without a gateway call; ``force`` (the operator's ``payouts check``) always
    queries.
    """
    order = rt.store.get(payout_cl_id, with_history=False)
    if order is None:
        return CheckStatus.MISSING
    if order.state not in (State.ACCEPTED, State.UNCONFIRMED):
        return CheckStatus.SKIPPED
    now = rt.store.server_time()  # due, lease and age are on the Redis server's clock (D35)
    if not force and not is_due_for_check(order, now):
        return CheckStatus.NOT_DUE
    if not rt.limiter.acquire(max_wait_s=rt.settings.submit_token_wait_s):
        _defer(rt, order)
        return CheckStatus.DEFERRED
    result = rt.gateway.query_order(payout_cl_id, sign_type=order.sign_type)
    return apply_query(rt, order, result, now=now)


def too_old(rt: Runtime, order: Order, now: float) -> bool:
    """An open order polled longer than MAX_ORDER_AGE since its last (re)submission."""
    in_polling = order.state in (State.ACCEPTED, State.UNCONFIRMED)
    return in_polling and now - age_since(order) > rt.settings.max_order_age_s


def apply_query(
    rt: Runtime, order: Order, result: QueryResult, *, source: str = "query", now: float | None = None
) -> CheckStatus:
    """The one report path (D43): what a single query, a list query's record or a verified
    callback says about ``order`` goes through the same rules, in this order:

    * age: an order open longer than MAX_ORDER_AGE goes to review, unless this very answer
      settles it (found, one payout, a final status): the "one final query" of D10;
    * a failed query is rescheduled; "not found" waits out the grace (:func:`handle_not_found`);
    * two payouts for one id (counted by the gateway, or a payout_id other than ours) -> review;
    * otherwise :func:`worker.reports.apply_report` (conflicting finals -> review).
    """
    now = rt.store.server_time() if now is None else now
    settled = result.kind is QueryKind.FOUND and result.payouts == 1 and result.status in FINAL_STATUS
    if too_old(rt, order, now) and not settled:
        send_to_review(rt, order, f"open longer than MAX_ORDER_AGE (last {source}: {result.reason})"[:200])
        return CheckStatus.REVIEW
    if result.kind is QueryKind.ERROR:
        if result.rate_limited:
            rt.limiter.pause(1.0)
        log.info("payout.check.failed", reason=result.reason)
        _reschedule(rt, order, next_check_delay_s(rt, order.field_int("checks")), last_query=result.reason)
        return CheckStatus.QUERY_FAILED
    if result.kind is QueryKind.NOT_FOUND:
        return handle_not_found(rt, order, result.reason)
    applied = apply_found(rt, order, result, source=source)
    if applied is ReportResult.CONFLICT:
        return CheckStatus.REVIEW
    if applied is ReportResult.STILL_OPEN:
        fresh = rt.store.get(order.payout_cl_id, with_history=False)
        if fresh is not None and fresh.state is State.ACCEPTED and order.state is State.ACCEPTED:
            _reschedule(rt, fresh, next_check_delay_s(rt, fresh.field_int("checks")))
    return CheckStatus.APPLIED


def apply_found(rt: Runtime, order: Order, result: QueryResult, *, source: str) -> ReportResult:
    """A record of ``order`` at the gateway: two payouts for one id go to review, else the
    report is applied."""
    if order.state is not State.REVIEW:
        if result.payouts > 1:
            return send_to_review(rt, order, f"the gateway holds {result.payouts} payouts for this id")
        if order.payout_id and result.payout_id and result.payout_id != order.payout_id:
            return send_to_review(
                rt,
                order,
                f"{source} names payout {result.payout_id}, ours is {order.payout_id}: two payouts?"[:200],
                other_payout_id=result.payout_id,
            )
    return apply_report(
        rt, order, status=result.status, payout_id=result.payout_id, amount=result.amount, source=source
    )


def apply_callback(
    rt: Runtime, order: Order, *, status: str | None, payout_id: str | None, amount: str | None
) -> ReportResult:
    """A verified callback, through the same rules as a query (D43): age, two payouts, finals."""
    now = rt.store.server_time()
    result = QueryResult(QueryKind.FOUND, "callback", status=status, payout_id=payout_id, amount=amount)
    if too_old(rt, order, now) and status not in FINAL_STATUS:
        return send_to_review(
            rt, order, "open longer than MAX_ORDER_AGE (last callback: status " + f"{status})"
        )
    return apply_found(rt, order, result, source="callback")


def windows(orders: Iterable[Order], width_s: float) -> list[list[Order]]:
    """Group orders into creation-time windows at most ``width_s`` wide, oldest first."""
    ordered = sorted(orders, key=lambda o: o.submitted_at or o.created_at)
    out: list[list[Order]] = []
    start = 0.0
    for o in ordered:
        t = o.submitted_at or o.created_at
        if not out or t - start > width_s:
            out.append([])
            start = t
        out[-1].append(o)
    return out


def check_window(rt: Runtime, ids: Iterable[str]) -> list[str]:
    """Check many orders with the list query, in bounded work (D18), by the same rules as a
    single check (D43).

    The ids are grouped into narrow creation-time windows (``CHECK_WINDOW``); the task
    reads at most ``CHECK_BATCH_PAGES`` pages in all and stops at its deadline; the
    lease of every id it holds is extended first, so no sweep dispatches them again
    meanwhile; only records that match a held id are signature-checked. A window's records
    are counted per id over all its pages and applied only once the window was read to its
    end (two records for one id: review). Returns the ids to check one by one: orders past
    MAX_ORDER_AGE (a single check asks once more, then reviews), ids a fully read window did
    not find, ids of windows not read to the end within the page budget (a gateway that
    ignores the time filter, a busy window) and ids whose record did not verify. Their lease
    stands, so each single check is due.
    """
    s, store = rt.settings, rt.store
    orders = {i: o for i, o in store.get_many(ids).items() if o.state in (State.ACCEPTED, State.UNCONFIRMED)}
    if not orders:
        return []
    now = store.server_time()
    one_call = s.submit_token_wait_s + s.call_s
    budget_s = s.check_batch_pages * one_call
    deadline = time.monotonic() + budget_s
    held_until = repr(now + budget_s + s.lease_s)
    pipe = store.redis.pipeline(transaction=False)
    pipe.zadd(keys.DUE, dict.fromkeys(orders, held_until), xx=True)
    for i in orders:
        pipe.hset(keys.order(i), "lease", held_until)
    pipe.execute()
    # the age rule first: an old order gets its single check (one final query, then review)
    rest: list[str] = [i for i, o in orders.items() if too_old(rt, o, now)]
    batched = [o for i, o in orders.items() if i not in set(rest)]
    gateway = rt.gateway
    pages = 0
    for group in windows(batched, s.check_window_s):
        wanted = {o.payout_cl_id: o for o in group}
        if pages >= s.check_batch_pages or time.monotonic() + one_call > deadline:
            rest.extend(wanted)  # not reached within the page budget: checked singly
            continue
        times = [int(o.submitted_at or o.created_at) for o in group]
        margin = int(s.check_window_margin_s) + 1
        lo, hi = min(times) - margin, max(times) + margin
        found: dict[str, list[QueryResult]] = {}
        offset, complete = 0, False
        while pages < s.check_batch_pages and time.monotonic() + one_call <= deadline:
            if not rt.limiter.acquire(max_wait_s=s.submit_token_wait_s):
                break
            pages += 1
            # only the records of this window's ids are verified (the others: "not ours")
            page = gateway.query_window(
                created_gte=lo,
                created_lte=hi,
                offset=offset,
                sign_types={i: o.sign_type for i, o in wanted.items()},
            )
            if page is None:
                break
            results, total = page
            for res in results:
                pid = str(res.record.get("payout_cl_id", ""))
                if pid in wanted:
                    found.setdefault(pid, []).append(res)
            offset += len(results)
            if not results or offset >= total:
                complete = True
                break
        for i, order in wanted.items():
            records = found.get(i, [])
            if not complete or not records or any(r.kind is not QueryKind.FOUND for r in records):
                rest.append(i)  # not read to the end, not found, or unverified: checked singly
                continue
            distinct = {r.payout_id or f"#{n}" for n, r in enumerate(records)}
            first = records[0]
            result = first if len(distinct) == 1 else replace(first, payouts=len(distinct))
            apply_query(rt, order, result, source="list query", now=now)
    return rest
