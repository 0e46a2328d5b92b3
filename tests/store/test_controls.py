"""Operator controls against a real Redis: pause, the pre-send gate, approval, duplicates, results."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.helpers import RecordingDispatcher
from worker import keys
from worker.desk import approval, balance, gate, pausing
from worker.errors import ApprovalRefused, InvalidTransition, PayoutError
from worker.producer import store_payout
from worker.results import deliver, report_refused
from worker.runtime import Runtime, set_runtime
from worker.states import State
from worker.submission import SubmitStatus, submit_order
from worker.sweep import sweep_due

NUMBER = "4455667788"


def data(pid: str, amount: int = 5_000_000, number: str = NUMBER, **extra: Any) -> dict[str, Any]:
    return {
        "payout_cl_id": pid,
        "amount": amount,
        "bank_name": "BCA",
        "name": "Wati",
        "number": number,
        **extra,
    }


def test_pause_resume_scopes(runtime: Runtime) -> None:
    """A bank pause applies to that bank only; the every-bank pause to all; resume ends one scope."""
    # given
    pausing.pause(runtime, reason="BNI incident", by="ana", bank="BNI")
    # when / then
    assert pausing.paused_for(runtime, "BCA") is None
    bni = pausing.paused_for(runtime, "BNI")
    assert bni is not None and bni.reason == "BNI incident" and bni.by == "ana" and bni.source == "operator"
    pausing.pause(runtime, reason="gateway incident", by="ana")
    every = pausing.paused_for(runtime, "BCA")
    assert every is not None and every.scope == "*"
    assert [p.scope for p in pausing.pauses(runtime)] == ["*", "BNI"]
    ended = pausing.resume(runtime, by="ana")
    assert ended is not None and ended.reason == "gateway incident"
    assert pausing.paused_for(runtime, "BCA") is None and pausing.paused_for(runtime, "BNI") is not None
    assert pausing.resume(runtime, by="ana") is None  # nothing left to end at "*"


def test_pause_needs_reason_and_name(runtime: Runtime) -> None:
    """A pause without a reason or actor, or with a malformed bank, is refused and stores nothing."""
    # given / when / then
    with pytest.raises(PayoutError, match="reason"):
        pausing.pause(runtime, reason=" ", by="ana")
    with pytest.raises(PayoutError, match="by"):
        pausing.pause(runtime, reason="x", by="")
    with pytest.raises(PayoutError, match="bank"):
        pausing.pause(runtime, reason="x", by="ana", bank="B;C\n")
    assert pausing.pauses(runtime) == []


def test_automatic_pause_never_replaces_operator_pause(runtime: Runtime) -> None:
    """A balance hold does not overwrite an operator's pause, so the poller cannot end it."""
    # given
    pausing.pause(runtime, reason="incident", by="ana")
    # when
    got = pausing.pause(runtime, reason="gateway 0018", by="worker", source="balance", need=10)
    # then
    assert got.source == "operator"
    auto = pausing.Pause("*", "gateway 0018", "worker", 0.0, "balance", 10)
    assert pausing.resume(runtime, by="poller", only=auto) is None
    assert pausing.paused_for(runtime, None) is not None


def test_paused_order_is_held_without_churn(runtime: Runtime) -> None:
    """While paused, a submit leaves the order received: no claim, no history entry, no event."""
    # given
    store_payout(runtime, data("ct-1"))
    pausing.pause(runtime, reason="incident", by="ana")
    events_before = runtime.redis.xlen(keys.EVENTS)
    # when
    status = submit_order(runtime, "ct-1")
    # then
    order = runtime.store.require("ct-1")
    assert status is SubmitStatus.HELD and order.state is State.RECEIVED
    assert len(order.history) == 1 and "submit_attempts" not in order.fields
    assert order.fields["held"].startswith("held: paused (operator): incident")
    assert order.due_at is not None and order.due_at > time.time()
    assert runtime.redis.xlen(keys.EVENTS) == events_before
    # and resuming lets it through the gate
    pausing.resume(runtime, by="ana")
    assert gate.pre_send(runtime, order) is None


def test_sweep_does_not_dispatch_paused_orders(make_runtime: Any) -> None:
    """The sweep leaves a paused bank's received orders alone and still dispatches others."""
    # given
    rt = make_runtime(SUBMIT_REDRIVE_AFTER="0.01", BALANCE_POLL_INTERVAL="0")
    store_payout(rt, data("ct-bca"))
    store_payout(rt, {**data("ct-bni", number="1112223334"), "bank_name": "BNI"})
    pausing.pause(rt, reason="BCA down", by="ana", bank="BCA")
    # when
    out = sweep_due(rt, now=time.time() + 1)
    # then
    assert out.submit == ["ct-bni"] and out.held == 1


def test_amount_above_known_balance_is_not_sent(make_runtime: Any) -> None:
    """After a 0018, an order larger than the polled available balance is held, a smaller
    one is not; without a recent 0018 the polled balance alone gates nothing."""
    # given: a polled balance of 6,000,000 and no 0018 yet
    rt = make_runtime()
    rt.redis.hset(keys.BALANCE, mapping={"available": 6_000_000, "total": 6_000_000, "frozen": 0, "at": 1})
    store_payout(rt, data("ct-big", amount=7_000_000))
    store_payout(rt, data("ct-small", amount=5_000_000, number="9998887776"))
    big, small = rt.store.require("ct-big"), rt.store.require("ct-small")
    assert gate.pre_send(rt, big) is None
    # when: a 0018 marked the balance low and the poller wrote the limit
    balance.merchant_hold(rt, small, "0018", "insufficient merchant balance")
    pausing.resume(rt, by="test")
    rt.redis.hset(keys.BALANCE, "limit", 6_000_000)
    # then
    held = gate.pre_send(rt, big)
    assert held is not None and held.kind == "balance"
    assert gate.pre_send(rt, small) is None
    assert 0 < rt.redis.ttl(keys.BALANCE_LOW) <= 3600


def test_approval_at_enqueue_and_maker_checker(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """At/above APPROVAL_ABOVE an order waits; its requester cannot approve; another person can."""
    # given
    sent: list[str] = []
    monkeypatch.setattr("worker.celery_app.app.send_task", lambda name, args=None, **kw: sent.append(args[0]))
    rt = make_runtime(APPROVAL_ABOVE="5000000")
    _, needs_submit = store_payout(rt, data("ct-a1", requested_by="maker"))
    _, small_submit = store_payout(rt, data("ct-a0", amount=4_999_999, number="1231231231"))
    # then
    assert not needs_submit and small_submit
    order = rt.store.require("ct-a1")
    assert order.state is State.AWAITING_APPROVAL and order.due_at == pytest.approx(
        time.time() + 86400, abs=60
    )
    assert rt.store.state_of("ct-a0") is State.RECEIVED
    # an unapproved order reaching the submit path is never sent
    assert submit_order(rt, "ct-a1") is SubmitStatus.NOT_RECEIVED
    with pytest.raises(ApprovalRefused, match="cannot approve"):
        approval.approve(rt, "ct-a1", by="maker")
    with pytest.raises(InvalidTransition):
        approval.approve(rt, "ct-a1", by="checker", expect_state=State.RECEIVED)
    # when
    assert approval.approve(rt, "ct-a1", by="checker") is State.RECEIVED
    # then
    order = rt.store.require("ct-a1")
    assert order.state is State.RECEIVED and order.fields["approved"] == "1"
    assert order.history[-1]["reason"] == "approved by checker" and sent == ["ct-a1"]
    assert gate.pre_send(rt, order) is None
    with pytest.raises(InvalidTransition):
        approval.approve(rt, "ct-a1", by="checker")


def test_two_approvers_above_second_threshold(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """At/above APPROVAL_TWO_ABOVE two different people must approve; the same one twice is refused."""
    # given
    monkeypatch.setattr("worker.celery_app.app.send_task", lambda *a, **kw: None)
    rt = make_runtime(APPROVAL_ABOVE="1000000", APPROVAL_TWO_ABOVE="5000000")
    store_payout(rt, data("ct-b1", requested_by="maker"))
    # when / then
    assert approval.approve(rt, "ct-b1", by="first") is State.AWAITING_APPROVAL
    with pytest.raises(ApprovalRefused, match="second, different"):
        approval.approve(rt, "ct-b1", by="first")
    assert approval.approve(rt, "ct-b1", by="second") is State.RECEIVED
    order = rt.store.require("ct-b1")
    assert order.fields["approved_by"] == "first" and order.fields["second_approved_by"] == "second"
    assert order.history[-1]["reason"] == "approved by first and second"


def test_unapproved_order_stored_as_received_is_caught_by_the_gate(make_runtime: Any) -> None:
    """If the move to awaiting_approval was lost (a crash after create), the gate still holds it."""
    # given: an order that needs approval sits in received (stored before APPROVAL_ABOVE was set)
    store_payout(make_runtime(), data("ct-g1"))
    rt = make_runtime(APPROVAL_ABOVE="1000000")
    # when
    status = submit_order(rt, "ct-g1")
    # then
    order = rt.store.require("ct-g1")
    assert status is SubmitStatus.AWAITING_APPROVAL and order.state is State.AWAITING_APPROVAL
    assert "submit_attempts" not in order.fields


def test_reject_and_expiry(make_runtime: Any) -> None:
    """A rejected or expired approval request ends rejected with the reason; reject needs a note."""
    # given
    rt = make_runtime(APPROVAL_ABOVE="1000000", APPROVAL_TTL="60")
    store_payout(rt, data("ct-r1"))
    store_payout(rt, data("ct-r2", number="5556667778"))
    # when / then
    with pytest.raises(PayoutError, match="note"):
        approval.reject(rt, "ct-r1", by="checker", note="")
    assert approval.reject(rt, "ct-r1", by="checker", note="unknown beneficiary") is State.REJECTED
    assert rt.store.require("ct-r1").reason == "rejected by checker: unknown beneficiary"
    # not yet due: a sweep before the deadline changes nothing
    assert sweep_due(rt, now=time.time() + 30).expired == 0
    out = sweep_due(rt, now=time.time() + 61)
    order = rt.store.require("ct-r2")
    assert out.expired == 1 and order.state is State.REJECTED
    assert order.reason.startswith("approval expired") and rt.redis.zscore(keys.DUE, "ct-r2") is None


def test_duplicate_guard(make_runtime: Any) -> None:
    """Same bank+account+amount under another id within the window goes to review (approval off),
    unless allow_duplicate; the key holds a keyed hash, never the account number."""
    # given
    rt = make_runtime(DUPLICATE_KEY="dup-secret", DUPLICATE_WINDOW="600")
    store_payout(rt, data("ct-d1"))
    # when
    store_payout(rt, data("ct-d2"))
    store_payout(rt, data("ct-d3", allow_duplicate=True))
    store_payout(rt, data("ct-d4", amount=5_000_001))
    store_payout(rt, data("ct-d1"))  # the same order again is not a duplicate of itself
    # then
    d2 = rt.store.require("ct-d2")
    assert d2.state is State.REVIEW and d2.fields["dup_of"] == "ct-d1" and "duplicate" in d2.reason
    assert rt.store.state_of("ct-d3") is State.RECEIVED and rt.store.state_of("ct-d4") is State.RECEIVED
    assert rt.store.state_of("ct-d1") is State.RECEIVED
    dup_keys = list(rt.redis.scan_iter("payouts:dup:*"))
    assert len(dup_keys) == 2 and all(NUMBER not in k for k in dup_keys)
    assert all(0 < rt.redis.pttl(k) <= 600_000 for k in dup_keys)
    assert NUMBER not in json.dumps({k: rt.redis.get(k) for k in dup_keys})


def test_duplicate_goes_to_approval_when_approval_is_on(make_runtime: Any) -> None:
    """With approval on, a suspected duplicate below APPROVAL_ABOVE waits for approval too."""
    # given
    rt = make_runtime(DUPLICATE_KEY="dup-secret", APPROVAL_ABOVE="900000000")
    store_payout(rt, data("ct-e1"))
    # when
    store_payout(rt, data("ct-e2"))
    # then
    assert rt.store.state_of("ct-e1") is State.RECEIVED
    assert rt.store.state_of("ct-e2") is State.AWAITING_APPROVAL


def test_result_pending_until_published(make_runtime: Any) -> None:
    """A final order keeps result_pending (and a due time) until a publish succeeds; the sweep re-sends."""
    # given: a broker that refuses, then accepts
    rt = make_runtime(RESULT_TASK="webapp.payout_result", APPROVAL_ABOVE="1000000")
    rt.dispatch = broker = RecordingDispatcher(broken=True)
    store_payout(rt, data("ct-p1"))
    # when: the order becomes final while the broker is down
    approval.reject(rt, "ct-p1", by="checker", note="no")
    # then
    order = rt.store.require("ct-p1")
    assert order.state is State.REJECTED and order.fields["result_pending"] == "1"
    assert rt.redis.zscore(keys.DUE, "ct-p1") is not None and broker.results == []
    # when: the broker is back and the sweep runs
    broker.broken = False
    out = sweep_due(rt, now=time.time() + 60)
    # then
    order = rt.store.require("ct-p1")
    sent = [payload for _, payload in broker.results]
    assert out.results == 1 and sent[0]["state"] == "rejected" and sent[0]["payout_cl_id"] == "ct-p1"
    assert "result_pending" not in order.fields and rt.redis.zscore(keys.DUE, "ct-p1") is None
    assert deliver(rt, "ct-p1") is True and len(broker.results) == 2  # at least once: repeats allowed


def test_duplicate_request_for_an_expired_id_reports_expired(make_runtime: Any) -> None:
    """D39: a by-name create for an id whose order expired (only its tombstone is left) is a
    ``duplicate_request`` reporting ``expired``, with no event (no state to name) and never
    ``refused``; the id stays unused."""
    # given: an id whose order has expired
    from worker.tasks.payouts import create

    rt = make_runtime(RESULT_TASK="webapp.payout_result")
    rt.dispatch = broker = RecordingDispatcher()
    rt.redis.hset(keys.IDS, "ct-exp1", str(int(time.time()) - 86_400 * 40))
    set_runtime(rt)
    try:
        # when
        outcome = create.run(
            payout_cl_id="ct-exp1", amount=5_000_000, bank_name="BCA", name="Wati", number="44556677"
        )
    finally:
        set_runtime(None)
    # then
    assert outcome == "duplicate_request"
    assert [payload for _, payload in broker.results] == [
        {
            "kind": "duplicate_request",
            "payout_cl_id": "ct-exp1",
            "state": "expired",
            "payout_id": None,
            "amount": None,
            "reason": "duplicate request: this payout_cl_id was used before and its order has expired",
        }
    ]
    assert rt.redis.xlen(keys.EVENTS) == 0 and rt.store.state_of("ct-exp1") is None


def test_refused_create_is_reported_without_personal_data(make_runtime: Any) -> None:
    """A refused by-name create yields a 'refused' event and result with field errors only."""
    # given
    from worker.errors import FieldError

    rt = make_runtime(RESULT_TASK="webapp.payout_result")
    rt.dispatch = broker = RecordingDispatcher()
    # when
    report_refused(rt, "ct-x1", [FieldError("number", "must be 1-32 digits")])
    # then
    sent = [payload for _, payload in broker.results]
    ((_, event),) = rt.redis.xrange(keys.EVENTS)
    assert event["to"] == "refused" and event["payout_cl_id"] == "ct-x1"
    assert sent == [
        {
            "payout_cl_id": "ct-x1",
            "state": "refused",
            "payout_id": None,
            "amount": None,
            "reason": "number: must be 1-32 digits",
            "errors": [{"field": "number", "rule": "must be 1-32 digits"}],
        }
    ]


class StubGateway:
    """Answers the create with a fixed result and queries with a fixed one (the store is real)."""

    def __init__(self, rt: Runtime, create: Any, query: Any) -> None:
        self.cfg = rt.settings.require_gateway()
        self.create, self.query = create, query
        self.creates = self.queries = 0

    def create_payout(self, *_: Any, **__: Any) -> Any:
        self.creates += 1
        return self.create

    def query_order(self, _: str, **__: Any) -> Any:
        self.queries += 1
        return self.query

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("code", "source"), [("0018", "balance"), ("0027", "merchant_code"), ("0004", "merchant_code")]
)
def test_merchant_level_refusal_holds_and_pauses(runtime: Runtime, code: str, source: str) -> None:
    """A HOLD_CODES refusal is not final: the order goes back to received ("held") and every
    bank is paused with that source (D21)."""
    # given
    from worker.gateway import NOT_CREATED, CreateResult, Outcome, QueryResult

    store_payout(runtime, data("ct-h1"))
    stub = StubGateway(runtime, CreateResult(Outcome.REJECTED, NOT_CREATED[code], code), QueryResult("error"))  # type: ignore[arg-type]
    runtime._gateway = stub  # type: ignore[assignment]
    # when
    status = submit_order(runtime, "ct-h1")
    # then
    order = runtime.store.require("ct-h1")
    assert status is SubmitStatus.HELD and order.state is State.RECEIVED
    assert order.fields["held"] == f"held: {code} {NOT_CREATED[code]}" and "reject_code" not in order.fields
    p = pausing.paused_for(runtime, "BCA")
    assert p is not None and p.source == source and code in p.reason
    assert (p.need == 5_000_000) == (source == "balance")
    # the next attempt is held by the pause: no second create
    assert submit_order(runtime, "ct-h1") is SubmitStatus.HELD and stub.creates == 1


@pytest.mark.parametrize(
    ("query", "state"),
    [("not_found", State.REJECTED), ("found", State.ACCEPTED), ("error", State.UNCONFIRMED)],
)
def test_other_refusals_are_queried_once(runtime: Runtime, query: str, state: State) -> None:
    """A refusal outside HOLD_CODES (0012 unsupported bank) is queried once before it is final
    (docs/gateway.md §1, D21): not found -> rejected; found -> accepted; a failed query ->
    unconfirmed with the code kept; it pauses nothing."""
    # given
    from worker.gateway import CreateResult, Outcome, QueryKind, QueryResult

    store_payout(runtime, data("ct-h2"))
    q = QueryResult(QueryKind(query), query, status="1", payout_id="PO-12" if query == "found" else None)
    stub = StubGateway(runtime, CreateResult(Outcome.REJECTED, "unsupported bank", "0012"), q)
    runtime._gateway = stub  # type: ignore[assignment]
    # when
    submit_order(runtime, "ct-h2")
    # then
    order = runtime.store.require("ct-h2")
    assert order.state is state and stub.queries == 1 and pausing.pauses(runtime) == []
    assert (order.fields.get("late_reject_code") == "0012") == (query == "error")


def test_ambiguous_0017_waits_out_the_grace(make_runtime: Any) -> None:
    """D41: 0017 "failed to create payout record" is an unknown outcome: unconfirmed with the
    code kept, never queried-and-rejected at once; "not found" within UNCONFIRMED_GRACE keeps
    it open (a lagging list), only after the grace is it rejected; found -> accepted."""
    # given
    from worker.checks import CheckStatus, handle_not_found
    from worker.gateway import CreateResult, Outcome, QueryKind, QueryResult

    rt = make_runtime(UNCONFIRMED_GRACE="60")
    store_payout(rt, data("ct-17"))
    q = QueryResult(QueryKind.NOT_FOUND, "empty list")
    stub = StubGateway(rt, CreateResult(Outcome.REJECTED, "failed to create payout record", "0017"), q)
    rt._gateway = stub  # type: ignore[assignment]
    # when
    status = submit_order(rt, "ct-17")
    # then: unknown, no query yet
    order = rt.store.require("ct-17")
    assert status is SubmitStatus.UNCONFIRMED and order.state is State.UNCONFIRMED
    assert order.fields["late_reject_code"] == "0017" and stub.queries == 0
    # when: the list lags ("not found") within the grace
    assert handle_not_found(rt, order, "empty list") is CheckStatus.NOT_FOUND
    assert rt.store.state_of("ct-17") is State.UNCONFIRMED
    # when: the grace has passed
    rt.redis.hset(keys.order("ct-17"), "submitted_at", f"{rt.store.server_time() - 61:.3f}")
    # then
    assert handle_not_found(rt, rt.store.require("ct-17"), "empty list") is CheckStatus.APPLIED
    assert rt.store.require("ct-17").fields["reject_code"] == "0017"


def test_late_merchant_refusal_holds_not_rejects(make_runtime: Any) -> None:
    """D55: a merchant-level refusal (0018) that arrives after the sweep's deadline pauses
    sending at once and, once the grace has passed without the gateway listing the order,
    puts the order back to received (held), never final rejected."""
    # given: the sweep moves the order to unconfirmed while its create is out
    from worker.checks import CheckStatus, handle_not_found
    from worker.gateway import NOT_CREATED, CreateResult, Outcome, QueryKind, QueryResult

    rt = make_runtime(UNCONFIRMED_GRACE="60")
    store_payout(rt, data("ct-55"))
    stub = StubGateway(
        rt, CreateResult(Outcome.REJECTED, NOT_CREATED["0018"], "0018"), QueryResult(QueryKind.NOT_FOUND, "x")
    )
    real = stub.create_payout

    def late(*a: Any, **kw: Any) -> Any:
        rt.store.transition_or_raise("ct-55", State.UNCONFIRMED, reason="sweep: deadline passed")
        return real(*a, **kw)

    stub.create_payout = late  # type: ignore[method-assign]
    rt._gateway = stub  # type: ignore[assignment]
    # when
    submit_order(rt, "ct-55")
    # then: paused now, the code kept, still unconfirmed
    order = rt.store.require("ct-55")
    assert order.state is State.UNCONFIRMED and order.fields["late_reject_code"] == "0018"
    p = pausing.paused_for(rt, "BCA")
    assert p is not None and p.source == "balance"
    # when: not found after the grace
    rt.redis.hset(keys.order("ct-55"), "submitted_at", f"{rt.store.server_time() - 61:.3f}")
    status = handle_not_found(rt, rt.store.require("ct-55"), "empty list")
    # then
    order = rt.store.require("ct-55")
    assert status is CheckStatus.RESUBMIT and order.state is State.RECEIVED
    assert order.fields["held"] == "held: 0018" and "reject_code" not in order.fields


def test_resubmitted_duplicate_is_sent(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's resubmit of a suspected duplicate (review, approval off) clears the mark,
    so the gate sends it instead of putting it back to review."""
    # given
    from worker.desk.order_actions import resubmit
    from worker.gateway import QueryKind, QueryResult

    monkeypatch.setattr("worker.celery_app.app.send_task", lambda *a, **kw: None)
    rt = make_runtime(DUPLICATE_KEY="k")
    store_payout(rt, data("ct-s1"))
    store_payout(rt, data("ct-s2"))
    assert rt.store.state_of("ct-s2") is State.REVIEW
    rt._gateway = StubGateway(rt, None, QueryResult(QueryKind.NOT_FOUND, "0050"))  # type: ignore[assignment]
    # when
    resubmit(rt, "ct-s2")
    # then
    order = rt.store.require("ct-s2")
    assert order.state is State.RECEIVED and "dup_of" not in order.fields
    assert gate.pre_send(rt, order) is None


def test_balance_poller_resumes_only_when_covered(runtime: Runtime) -> None:
    """The poller stores available = total - frozen; it ends a balance pause only once that
    covers the held order, writes the gate's limit only after a 0018, and never ends an
    operator's pause."""

    # given
    class BalanceGateway:
        def __init__(self) -> None:
            self.answer: tuple[int, int] | None = (9_000_000, 5_000_000)

        def query_balance(self) -> tuple[int, int] | None:
            return self.answer

        def close(self) -> None:
            pass

    gw = BalanceGateway()
    runtime._gateway = gw  # type: ignore[assignment]
    store_payout(runtime, data("ct-pb"))
    bal = balance.poll_balance(runtime, force=True)
    assert bal is not None and bal.available == 4_000_000
    assert "limit" not in runtime.redis.hgetall(keys.BALANCE)  # no 0018: no gate
    balance.merchant_hold(runtime, runtime.store.require("ct-pb"), "0018", "insufficient merchant balance")
    # when: still short
    balance.poll_balance(runtime, force=True)
    # then
    assert pausing.paused_for(runtime, "BCA") is not None
    assert runtime.redis.hget(keys.BALANCE, "limit") == "4000000"
    # when: topped up
    gw.answer = (20_000_000, 5_000_000)
    balance.poll_balance(runtime, force=True)
    # then
    assert pausing.paused_for(runtime, "BCA") is None
    # an operator pause is never ended by the poller
    pausing.pause(runtime, reason="drill", by="ana")
    balance.poll_balance(runtime, force=True)
    assert pausing.paused_for(runtime, "BCA") is not None
    gw.answer = None  # the endpoint fails: nothing changes
    assert balance.poll_balance(runtime, force=True) is None
