"""An order's life cycle rules against a real Redis (and, where a query is part of the rule, the
session's sandbox over HTTP): tombstones (D1), the claim's attempt number (D33), resubmit
evidence (D3), not-found policy evidence, late refusals (D30), MAX_ORDER_AGE from the last
submission with a final query (D10), back to polling, and enqueue_payout after the store (D5)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from worker import keys
from worker.checks import CheckStatus, check_order, handle_not_found
from worker.desk.order_actions import back_to_polling, resubmit
from worker.errors import DuplicatePayout, InvalidTransition, PayoutError
from worker.payout import Payout
from worker.producer import enqueue_payout, store_payout
from worker.runtime import Runtime
from worker.sandbox.process import SandboxProcess
from worker.states import OPEN, State
from worker.store import EXPIRED
from worker.submission import SubmitStatus, submit_order

AMOUNT = 5_000_000


def payout(pid: str) -> Payout:
    return Payout(pid, AMOUNT, "BCA", "Dewi", "1234567890")


def data(pid: str) -> dict[str, Any]:
    return {"payout_cl_id": pid, "amount": AMOUNT, "bank_name": "BCA", "name": "Dewi", "number": "1234567890"}


def expire(client: redis.Redis, pid: str) -> None:
    """What ORDER_RETENTION_DAYS does to a final order: its record and history vanish."""
    client.delete(keys.order(pid), keys.history(pid))


def walk(rt: Runtime, pid: str, *states: State, **fields: Any) -> None:
    for target in states:
        due = time.time() + 600 if target in OPEN else None
        rt.store.transition_or_raise(pid, target, reason="setup", fields=fields, due=due)


# -- D1: tombstones -------------------------------------------------------------------


def test_an_expired_id_is_refused_by_every_entry(runtime: Runtime, redis_client: redis.Redis) -> None:
    """Once stored, an id can never be stored again: after its order expired, the store
    reports it, enqueue_payout and the by-name path raise DuplicatePayout, nothing is stored."""
    # given: an order that became final and then expired
    store = runtime.store
    assert store.create(payout("t-1"), due_at=time.time() + 60).created
    walk(runtime, "t-1", State.SUBMITTING, State.REJECTED)
    expire(redis_client, "t-1")
    # when
    again = store.create(payout("t-1"), due_at=time.time() + 60)
    # then
    assert again.expired and again.state == EXPIRED and not again.needs_submit
    with pytest.raises(DuplicatePayout) as err:
        enqueue_payout(**data("t-1"), runtime=runtime)
    assert err.value.expired and "never reused" in str(err.value)
    with pytest.raises(DuplicatePayout):
        store_payout(runtime, data("t-1"))
    assert not redis_client.exists(keys.order("t-1"))
    assert redis_client.zscore(keys.DUE, "t-1") is None


def test_tombstone_holds_no_personal_data_and_survives_retention(
    make_runtime: Any, redis_client: redis.Redis
) -> None:
    """The tombstone is id -> first-stored unix seconds, with no TTL, nothing personal."""
    # given
    rt = make_runtime(ORDER_RETENTION_DAYS="1")
    rt.store.create(payout("t-2"), due_at=time.time() + 60)
    # when
    walk(rt, "t-2", State.SUBMITTING, State.ACCEPTED, State.SUCCEEDED)
    # then
    assert redis_client.ttl(keys.order("t-2")) > 0
    assert redis_client.ttl(keys.IDS) == -1
    value = redis_client.hget(keys.IDS, "t-2")
    assert value is not None and value.isdigit() and abs(int(value) - time.time()) < 60
    assert "Dewi" not in value and "1234567890" not in value


def test_final_transition_writes_a_missing_tombstone(runtime: Runtime, redis_client: redis.Redis) -> None:
    """An order stored before tombstones existed gets one when it becomes final (before it
    can expire)."""
    # given: an order without a tombstone
    runtime.store.create(payout("t-3"), due_at=time.time() + 60)
    redis_client.hdel(keys.IDS, "t-3")
    # when
    walk(runtime, "t-3", State.SUBMITTING, State.REJECTED)
    expire(redis_client, "t-3")
    # then
    assert runtime.store.create(payout("t-3"), due_at=time.time() + 60).expired


def test_tombstone_is_at_most_128_bytes(runtime: Runtime, redis_client: redis.Redis) -> None:
    """Measured: 20,000 tombstones of 32-character ids cost at most 128 bytes each."""
    # given
    n = 20_000
    before = int(redis_client.memory_usage(keys.IDS) or 0)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(keys.IDS, f"tomb-{i:027d}", str(int(time.time())))
    pipe.execute()
    # when
    per_id = (int(redis_client.memory_usage(keys.IDS, samples=0) or 0) - before) / n
    # then
    assert 16 < per_id <= 128, per_id


# -- D33: the attempt number is the script's ------------------------------------------


def test_claim_increments_the_attempt_inside_the_script(runtime: Runtime) -> None:
    """The claim returns the attempt it wrote; a second claim is refused; a re-claim after a
    provable not-sent gets the next number."""
    # given
    store, now = runtime.store, time.time()
    store.create(payout("c-1"), due_at=now + 60)
    # when
    first = store.claim("c-1", reason="claimed", due=now + 30, fields={}, now=now)
    second = store.claim("c-1", reason="claimed", due=now + 30, fields={}, now=now)
    store.transition_or_raise("c-1", State.RECEIVED, reason="not sent", expect=("submit_attempts", "1"))
    third = store.claim("c-1", reason="claimed", due=now + 30, fields={}, now=now)
    # then
    assert (first, second, third) == (1, None, 2)
    assert store.require("c-1").fields["submit_attempts"] == "2"


def test_expect_absent_field(runtime: Runtime) -> None:
    """``expect=(field, None)`` applies only while the field is absent."""
    # given
    runtime.store.create(payout("e-1"), due_at=time.time() + 60)
    walk(runtime, "e-1", State.SUBMITTING, State.UNCONFIRMED)
    # when
    ok = runtime.store.transition(
        "e-1", None, sources={State.UNCONFIRMED}, reason="x", expect=("payout_id", None)
    )
    walk(runtime, "e-1", State.ACCEPTED, payout_id="POT-1")
    refused = runtime.store.transition(
        "e-1", State.REVIEW, sources={State.ACCEPTED}, reason="x", expect=("payout_id", None)
    )
    # then
    assert ok is State.UNCONFIRMED and refused is None


# -- D7: no POST from a stale claim ----------------------------------------------------


def test_a_stale_claim_sends_nothing_and_goes_back_to_received(
    make_runtime: Any, sandbox: SandboxProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process stalled between the claim and the POST (past SUBMIT_CLAIM_BUDGET): the
    create is not sent (the sandbox saw no request) and the order is received again."""
    # given: a clock that jumps 60 s between the claim and the POST
    rt: Runtime = make_runtime(sandbox.url)
    rt.store.create(payout("stale-1"), due_at=time.time() + 60)
    ticks = iter([(1000.0, 500.0), (1060.0, 560.0)])
    monkeypatch.setattr("worker.submission._clock", lambda: next(ticks))
    # when
    status = submit_order(rt, "stale-1")
    # then
    order = rt.store.require("stale-1")
    assert status is SubmitStatus.NOT_SENT and order.state is State.RECEIVED
    assert "SUBMIT_CLAIM_BUDGET" in order.history[-1]["reason"]
    assert sandbox.admin.create_requests("stale-1") == 0  # type: ignore[union-attr]


# -- D3: resubmit needs evidence ------------------------------------------------------


def review_order(rt: Runtime, pid: str, *, accepted: bool) -> None:
    rt.store.create(payout(pid), due_at=time.time() + 60)
    if accepted:
        walk(rt, pid, State.SUBMITTING, State.ACCEPTED, payout_id=f"POT-{pid}")
        walk(rt, pid, State.REVIEW)
    else:
        walk(rt, pid, State.SUBMITTING, State.UNCONFIRMED, State.REVIEW)


def test_resubmit_refuses_an_order_the_gateway_had(make_runtime: Any, sandbox: SandboxProcess) -> None:
    """An order with a payout_id (or an accepted entry) is not resubmitted on a NOT_FOUND
    query; --force needs a note, and the note and actor are recorded."""
    # given: the gateway says it does not know the order (it is only in our Redis)
    rt: Runtime = make_runtime(sandbox.url)
    review_order(rt, "rs-1", accepted=True)
    # when / then
    with pytest.raises(PayoutError, match="payout_id"):
        resubmit(rt, "rs-1")
    with pytest.raises(PayoutError, match="--note"):
        resubmit(rt, "rs-1", force=True)
    assert rt.store.state_of("rs-1") is State.REVIEW
    resubmit(rt, "rs-1", force=True, note="gateway ticket 42 confirms no payout", by="ana")
    order = rt.store.require("rs-1")
    assert order.state is State.RECEIVED
    assert "FORCED" in order.history[-1]["reason"] and "ana" in order.history[-1]["reason"]
    assert "ticket 42" in order.history[-1]["reason"] and order.fields["forced_by"] == "ana"


def test_resubmit_without_evidence_needs_the_gateways_not_found(
    make_runtime: Any, sandbox: SandboxProcess
) -> None:
    """No payout_id, never accepted: a NOT_FOUND query allows the resubmit; the age clock restarts."""
    # given
    rt: Runtime = make_runtime(sandbox.url)
    review_order(rt, "rs-2", accepted=False)
    # when
    resubmit(rt, "rs-2", by="budi")
    # then
    order = rt.store.require("rs-2")
    assert order.state is State.RECEIVED and abs(order.field_float("resubmitted_at") - time.time()) < 30
    assert "budi" in order.history[-1]["reason"]


def test_not_found_policy_resubmit_refuses_on_evidence(make_runtime: Any) -> None:
    """NOT_FOUND_POLICY=resubmit sends an unconfirmed order again only when nothing we hold
    says the gateway had it; a late payout_id sends it to review instead."""
    # given
    rt: Runtime = make_runtime(NOT_FOUND_POLICY="resubmit", UNCONFIRMED_GRACE="0")
    for pid in ("nf-1", "nf-2"):
        rt.store.create(payout(pid), due_at=time.time() + 60)
        walk(rt, pid, State.SUBMITTING, State.UNCONFIRMED, submitted_at=f"{time.time() - 10:.3f}")
    rt.store.transition(
        "nf-2", None, sources={State.UNCONFIRMED}, reason="late answer", fields={"payout_id": "P2"}
    )
    # when
    one = handle_not_found(rt, rt.store.require("nf-1"), "empty list")
    two = handle_not_found(rt, rt.store.require("nf-2"), "empty list")
    # then
    assert one is CheckStatus.RESUBMIT and rt.store.state_of("nf-1") is State.RECEIVED
    assert two is CheckStatus.REVIEW
    assert "payout_id" in rt.store.require("nf-2").reason


# -- D30: late refusals ---------------------------------------------------------------


def test_late_refusal_is_used_when_the_query_says_not_found(make_runtime: Any) -> None:
    """A refusal recorded after the sweep's deadline makes NOT_FOUND final ``rejected`` (not a
    review) -- once the grace has passed: a lagging list cannot make it final (D41)."""
    # given
    rt: Runtime = make_runtime()
    rt.store.create(payout("lr-1"), due_at=time.time() + 60)
    walk(rt, "lr-1", State.SUBMITTING, State.UNCONFIRMED)
    rt.store.transition(
        "lr-1", None, sources={State.UNCONFIRMED}, reason="late answer", fields={"late_reject_code": "0012"}
    )
    assert handle_not_found(rt, rt.store.require("lr-1"), "empty list") is CheckStatus.NOT_FOUND
    rt.store.transition(
        "lr-1", None, sources={State.UNCONFIRMED}, reason="t", fields={"submitted_at": time.time() - 3600}
    )
    # when
    status = handle_not_found(rt, rt.store.require("lr-1"), "empty list")
    # then
    order = rt.store.require("lr-1")
    assert status is CheckStatus.APPLIED and order.state is State.REJECTED
    assert order.fields["reject_code"] == "0012"


def test_late_refusal_from_a_real_submit_is_recorded(make_runtime: Any, sandbox: SandboxProcess) -> None:
    """The sweep marked the order unconfirmed while the create was out; the gateway's
    refusal (0012, unsupported bank) is then kept on the order."""
    # given: the create's answer will arrive after we moved the order on
    rt: Runtime = make_runtime(sandbox.url)
    rt.store.create(Payout("lr-2", AMOUNT, "NOBANK", "Dewi", "1234567890"), due_at=time.time() + 60)
    real = rt.gateway.create_payout

    def slow_create(*a: Any, **kw: Any) -> Any:
        result = real(*a, **kw)
        rt.store.transition_or_raise("lr-2", State.UNCONFIRMED, reason="sweep: deadline passed")
        return result

    rt.gateway.create_payout = slow_create  # type: ignore[method-assign]
    # when
    status = submit_order(rt, "lr-2")
    # then
    order = rt.store.require("lr-2")
    assert status is SubmitStatus.REJECTED and order.state is State.UNCONFIRMED
    assert order.fields["late_reject_code"] == "0012"


# -- D10: age from the last submission, a final query first, back to polling ---------


def test_age_review_is_preceded_by_a_final_query(make_runtime: Any, sandbox: SandboxProcess) -> None:
    """An order past MAX_ORDER_AGE that finished at the gateway is settled, not reviewed."""
    # given: a real create, finished at the sandbox, then the order is "too old"
    rt: Runtime = make_runtime(sandbox.url, MAX_ORDER_AGE="1")
    rt.store.create(payout("age-1"), due_at=time.time() + 60)
    assert submit_order(rt, "age-1") is SubmitStatus.ACCEPTED
    sandbox.admin.wait_order_status("age-1", [3], timeout_s=20)  # type: ignore[union-attr]
    rt.store.transition("age-1", None, sources={State.ACCEPTED}, reason="t", fields={"submitted_at": "1"})
    # when
    status = check_order(rt, "age-1", force=True)  # checked now, due or not
    # then
    assert status is CheckStatus.APPLIED and rt.store.state_of("age-1") is State.SUCCEEDED


def test_age_counts_from_the_last_submission(make_runtime: Any, sandbox: SandboxProcess) -> None:
    """An order created long ago but resubmitted just now is not too old."""
    # given
    rt: Runtime = make_runtime(sandbox.url, MAX_ORDER_AGE="60")
    rt.store.create(payout("age-2"), due_at=time.time() + 60, now=time.time() - 3600)
    assert submit_order(rt, "age-2") is SubmitStatus.ACCEPTED
    # when
    status = check_order(rt, "age-2", force=True)  # checked now, due or not
    # then
    assert status is CheckStatus.APPLIED and rt.store.state_of("age-2") is not State.REVIEW


def test_back_to_polling(runtime: Runtime) -> None:
    """Review -> accepted (payout_id known) or unconfirmed (none), due now, counters reset;
    anything else is refused; a note is required."""
    # given
    review_order(runtime, "bp-1", accepted=True)
    review_order(runtime, "bp-2", accepted=False)
    runtime.store.create(payout("bp-3"), due_at=time.time() + 60)
    # when
    one = back_to_polling(runtime, "bp-1", by="ana", note="status 6 at the gateway")
    two = back_to_polling(runtime, "bp-2", by="ana", note="bank holiday")
    # then
    assert (one, two) == (State.ACCEPTED, State.UNCONFIRMED)
    order = runtime.store.require("bp-1")
    assert order.due_at is not None and order.due_at <= time.time()
    assert "ana" in order.history[-1]["reason"] and order.fields["checks"] == "0"
    assert abs(order.field_float("repolled_at") - time.time()) < 30
    with pytest.raises(InvalidTransition):
        back_to_polling(runtime, "bp-3", note="not in review")
    with pytest.raises(PayoutError):
        back_to_polling(runtime, "bp-1", note="  ")


# -- D5: never raise after the store --------------------------------------------------


def test_enqueue_does_not_raise_when_publishing_fails(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> None:
    """A broker failure after the order is stored is logged; the stored order is returned
    and stays due for the sweep's re-drive."""
    # given
    from kombu.exceptions import OperationalError

    from worker.celery_app import app

    def broken(*a: Any, **kw: Any) -> None:
        raise OperationalError("broker down")

    monkeypatch.setattr(app, "send_task", broken)
    # when
    order = enqueue_payout(**data("pub-1"), runtime=runtime)
    # then
    assert order.state is State.RECEIVED
    assert redis_client.zscore(keys.DUE, "pub-1") is not None
