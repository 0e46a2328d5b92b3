"""Personal data at rest in the real store (D72, D73): sealed fields, a failure to open is
never a payout, rotation by compare-and-set, erasure that keeps the tombstone."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from tests.helpers import TEST_PII_KEYS, TEST_RING
from worker import keys
from worker.desk.order_actions import resubmit
from worker.errors import DuplicatePayout, InvalidTransition, PayoutError, PersonalDataUnreadable
from worker.payout import Payout
from worker.pii import KeyRing, key_id_of
from worker.privacy import erase_due, forget, key_usage, rekey_cursor, rekey_order, rekey_page
from worker.producer import enqueue_payout
from worker.runtime import Runtime
from worker.sandbox.process import SandboxProcess
from worker.states import OPEN, State
from worker.store import OrderStore
from worker.submission import SubmitStatus, submit_order

NAME = "Wahyuningsih"
NUMBER = "7712340098"


def payout(pid: str, *, number: str = NUMBER, name: str = NAME, amount: int = 5_000_000) -> Payout:
    return Payout(pid, amount, "BCA", name, number)


def walk(rt: Runtime, pid: str, *states: State, **fields: Any) -> None:
    for target in states:
        due = time.time() + 600 if target in OPEN else None
        rt.store.transition_or_raise(pid, target, reason="setup", fields=fields, due=due)


def test_create_stores_no_plain_text_and_showing_never_opens(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    """The order hash holds the number and name sealed (key id k-prefixed), their masks beside
    them; a store without any key reads and shows the order (nothing is opened to show it)."""
    # when
    runtime.store.create(payout("pii-1"), due_at=time.time() + 60)
    # then
    raw = redis_client.hgetall(keys.order("pii-1"))
    text = repr(raw)
    assert NUMBER not in text and NAME not in text
    assert key_id_of(raw["number"]) == key_id_of(raw["name"]) == key_id_of(raw["fp"]) == "t1"
    assert raw["number_mask"] == "******0098" and raw["name_mask"] == "W…"
    assert runtime.store.payout_of(runtime.store.require("pii-1")) == payout("pii-1")
    keyless = OrderStore(redis_client)
    view = keyless.require("pii-1").public()
    assert view["number"] == "******0098" and view["name"] == "***"
    assert NUMBER not in repr(view) and NAME not in repr(view)
    with pytest.raises(Exception, match="PII_KEYS"):
        keyless.payout_of(keyless.require("pii-1"))


def _unreadable_ends_in_review(rt: Runtime, sandbox: SandboxProcess, pid: str, why: str) -> None:
    status = submit_order(rt, pid)
    order = rt.store.require(pid)
    assert status is SubmitStatus.UNREADABLE and order.state is State.REVIEW
    assert "personal data unreadable" in order.reason and why in order.reason
    assert NUMBER not in order.reason and NAME not in order.reason
    assert sandbox.admin.create_requests(pid) == 0  # type: ignore[union-attr]
    assert submit_order(rt, pid) is SubmitStatus.NOT_RECEIVED  # a repeat message changes nothing


def test_a_moved_ciphertext_is_never_a_payout(
    make_runtime: Any, sandbox: SandboxProcess, redis_client: redis.Redis
) -> None:
    """A sealed number copied from another order (the order id is the associated data) does not
    open: the order goes to review with that reason and 0 create requests; the donor still pays."""
    # given: mv-2 carries mv-1's sealed account number
    rt: Runtime = make_runtime(sandbox.url)
    rt.store.create(payout("mv-1"), due_at=time.time() + 60)
    rt.store.create(payout("mv-2", number="5500001111"), due_at=time.time() + 60)
    redis_client.hset(keys.order("mv-2"), "number", redis_client.hget(keys.order("mv-1"), "number"))
    # when / then
    _unreadable_ends_in_review(rt, sandbox, "mv-2", "moved or altered")
    assert submit_order(rt, "mv-1") is SubmitStatus.ACCEPTED


def test_a_tampered_ciphertext_is_never_a_payout(
    make_runtime: Any, sandbox: SandboxProcess, redis_client: redis.Redis
) -> None:
    """One changed character of a sealed name: review, 0 creates."""
    # given
    rt: Runtime = make_runtime(sandbox.url)
    rt.store.create(payout("tp-1"), due_at=time.time() + 60)
    sealed = redis_client.hget(keys.order("tp-1"), "name")
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    redis_client.hset(keys.order("tp-1"), "name", flipped)
    # when / then
    _unreadable_ends_in_review(rt, sandbox, "tp-1", "moved or altered")


def test_a_value_under_a_key_not_configured_is_never_a_payout(
    make_runtime: Any, sandbox: SandboxProcess
) -> None:
    """Sealed under t1, sent by a worker whose PII_KEYS lacks t1 (a key retired too early, or
    the wrong key file): review naming the key id, 0 creates."""
    # given
    rt: Runtime = make_runtime(sandbox.url)
    rt.store.create(payout("wk-1"), due_at=time.time() + 60)
    other: Runtime = make_runtime(sandbox.url, PII_KEYS=KeyRing.generate("t9"))
    # when / then
    _unreadable_ends_in_review(other, sandbox, "wk-1", "'t1', which is not in PII_KEYS")


def test_a_repeated_enqueue_after_rotation_is_still_the_same_order(make_runtime: Any) -> None:
    """The fingerprint is compared under the key that made it: after a new key is put first, the
    same data is the same order (no DuplicatePayout), other data under the id is refused."""
    # given
    old: Runtime = make_runtime()
    first = enqueue_payout("rot-1", 5_000_000, "BCA", NAME, NUMBER, runtime=old)
    rotated: Runtime = make_runtime(PII_KEYS=f"{KeyRing.generate('t2')},{TEST_PII_KEYS}")
    # when
    again = enqueue_payout("rot-1", 5_000_000, "BCA", NAME, NUMBER, runtime=rotated)
    # then
    assert again.payout_cl_id == first.payout_cl_id and again.state is State.RECEIVED
    with pytest.raises(DuplicatePayout):
        enqueue_payout("rot-1", 5_000_000, "BCA", NAME, "7712340099", runtime=rotated)


def test_rekey_reseals_every_order_page_by_page_and_resumes(
    make_runtime: Any, redis_client: redis.Redis
) -> None:
    """``rekey_page`` from the stored cursor re-seals every readable order under the new first
    key (plain text of an older version too), counts erased ones, reports a tampered one and
    leaves it; afterwards the old key protects nothing and every order opens without it."""
    # given: 40 orders under t1, one erased, one stored in plain text, one tampered
    old: Runtime = make_runtime()
    for i in range(40):
        old.store.create(payout(f"rk-{i:02d}", number=f"77{i:08d}"), due_at=time.time() + 60)
    walk(old, "rk-00", State.SUBMITTING, State.REJECTED)
    forget(redis_client, "rk-00", reason="test")
    redis_client.hset(keys.order("rk-01"), mapping={"number": "7700000001", "name": NAME})
    redis_client.hdel(keys.order("rk-01"), "number_mask", "name_mask")
    redis_client.hset(keys.order("rk-02"), "name", redis_client.hget(keys.order("rk-03"), "name"))
    new_entry = KeyRing.generate("t2")
    new_ring = KeyRing.parse(f"{new_entry},{TEST_PII_KEYS}")
    assert key_usage(redis_client) == {"t1": 38 * 3 + 1, "plain text": 2}
    # when: three pages, then a "new process" resumes from the stored cursor to the end
    cursor = 0
    for _ in range(3):
        cursor = rekey_page(redis_client, new_ring, cursor=cursor, count=5).cursor
    assert cursor != 0 and rekey_cursor(redis_client) == cursor
    resealed = 0
    while cursor:
        rep = rekey_page(redis_client, new_ring, cursor=rekey_cursor(redis_client), count=5)
        cursor, resealed = rep.cursor, resealed + rep.resealed
    assert resealed > 0 and rekey_cursor(redis_client) == 0
    # then: a second full walk finds everything current (SCAN may repeat keys, never skip them)
    final = rekey_page(redis_client, new_ring, cursor=0, count=1000)
    assert final.cursor == 0 and final.unreadable == ["rk-02"] and final.erased == 1
    assert final.current == 40 - 2 and final.resealed == 0
    usage = key_usage(redis_client)
    assert usage == {"t2": 38 * 3, "t1": 3}  # rk-02 untouched: its two sealed values and fp
    only_new = OrderStore(redis_client, pii_keys=KeyRing.parse(new_entry))
    for i in range(3, 40):
        order = only_new.require(f"rk-{i:02d}")
        assert only_new.payout_of(order).number == f"77{i:08d}"
    legacy = only_new.require("rk-01")
    assert only_new.payout_of(legacy).number == "7700000001" and legacy.number_mask == "******0001"


def test_rekey_loses_to_a_concurrent_write(runtime: Runtime, redis_client: redis.Redis) -> None:
    """The compare-and-set: a field changed between the read and the write is never overwritten;
    the order is read again and re-sealed from its new value."""
    # given
    runtime.store.create(payout("cas-1"), due_at=time.time() + 60)
    ring = KeyRing.parse(f"{KeyRing.generate('t2')},{TEST_PII_KEYS}")
    real_hmget = redis_client.hmget
    calls = {"n": 0}

    def racing_hmget(name: Any, fields: Any, *args: Any) -> Any:
        out = real_hmget(name, fields, *args)
        calls["n"] += 1
        if calls["n"] == 1:  # a writer re-seals the number right after our first read
            redis_client.hset(name, "number", TEST_RING.seal("cas-1", "number", "7712340000"))
        return out

    redis_client.hmget = racing_hmget  # type: ignore[method-assign]
    # when
    outcome, retries = rekey_order(redis_client, ring, "cas-1")
    # then
    del redis_client.hmget
    assert (outcome, retries) == ("resealed", 1)
    store = OrderStore(redis_client, pii_keys=ring)
    assert store.payout_of(store.require("cas-1")).number == "7712340000"


def test_forget_keeps_the_tombstone_amounts_states_and_gateway_ids(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    """``forget`` refuses an open order; on a final one it removes the sealed values, masks and
    fingerprint and keeps state, amount, payout_id, history and the tombstone; the id stays used."""
    # given
    runtime.store.create(payout("fg-1"), due_at=time.time() + 60)
    with pytest.raises(InvalidTransition):
        forget(redis_client, "fg-1", reason="customer request")
    walk(runtime, "fg-1", State.SUBMITTING, State.ACCEPTED, payout_id="POT-fg-1")
    walk(runtime, "fg-1", State.SUCCEEDED)
    # when
    assert forget(redis_client, "fg-1", reason="cli: customer request") == "succeeded"
    # then
    raw = redis_client.hgetall(keys.order("fg-1"))
    assert not {"name", "number", "name_mask", "number_mask", "fp"} & set(raw)
    assert raw["state"] == "succeeded" and raw["amount"] == "5000000" and raw["payout_id"] == "POT-fg-1"
    assert raw["erased_reason"] == "cli: customer request" and float(raw["erased_at"]) > 0
    assert redis_client.hexists(keys.IDS, "fg-1") and redis_client.llen(keys.history("fg-1")) == 4
    order = runtime.store.require("fg-1")
    assert order.erased and order.public()["number"] == "(erased)"
    with pytest.raises(PersonalDataUnreadable, match="erased"):
        runtime.store.payout_of(order)
    with pytest.raises(DuplicatePayout):
        enqueue_payout("fg-1", 5_000_000, "BCA", NAME, NUMBER, runtime=runtime)
    assert forget(redis_client, "fg-1", reason="again") == "succeeded"  # idempotent
    assert redis_client.hget(keys.order("fg-1"), "erased_reason") == "cli: customer request"


def test_final_orders_are_erased_after_the_retention_window(
    make_runtime: Any, redis_client: redis.Redis
) -> None:
    """A move to a final state queues the order for erasure PII_RETENTION_DAYS later; the
    sweep's batch erases it then, not before, and skips one that left its final state."""
    # given: a 1-day window; two rejected orders, one of which went on to review
    rt: Runtime = make_runtime(PII_RETENTION_DAYS="1")
    for pid in ("rt-1", "rt-2", "rt-3"):
        rt.store.create(payout(pid), due_at=time.time() + 60)
    walk(rt, "rt-1", State.SUBMITTING, State.REJECTED)
    walk(rt, "rt-2", State.SUBMITTING, State.ACCEPTED, State.SUCCEEDED, State.REVIEW)
    now = time.time()
    # when / then: not before the window
    assert erase_due(redis_client, now=now + 3600) == 0
    assert erase_due(redis_client, now=now + 86400 + 5) == 1
    assert rt.store.require("rt-1").erased
    assert not rt.store.require("rt-2").erased and not rt.store.require("rt-3").erased
    assert redis_client.zcard(keys.PII_ERASE) == 0


def test_an_erased_order_is_not_resubmitted(make_runtime: Any, sandbox: SandboxProcess) -> None:
    """Resubmitting a rejected order whose personal data was erased is refused with the reason."""
    # given
    rt: Runtime = make_runtime(sandbox.url)
    rt.store.create(payout("er-1"), due_at=time.time() + 60)
    walk(rt, "er-1", State.SUBMITTING, State.REJECTED)
    forget(rt.redis, "er-1", reason="test")
    # when / then
    with pytest.raises(PayoutError, match="erased"):
        resubmit(rt, "er-1")
    assert rt.store.state_of("er-1") is State.REJECTED


def test_the_sweep_erases_final_orders_past_the_window(make_runtime: Any) -> None:
    """PII_RETENTION_DAYS=0: the sweep tick after an order became final erases its personal
    fields (and says so in its result); an open order keeps them."""
    from worker.sweep import sweep_due

    # given
    rt: Runtime = make_runtime(PII_RETENTION_DAYS="0")
    for pid in ("sw-1", "sw-2"):
        rt.store.create(payout(pid), due_at=time.time() + 600)
    walk(rt, "sw-1", State.SUBMITTING, State.REJECTED)
    # when
    result = sweep_due(rt, now=time.time() + 1)
    # then
    assert result.erased == 1
    assert rt.store.require("sw-1").erased and not rt.store.require("sw-2").erased
    assert rt.store.payout_of(rt.store.require("sw-2")) == payout("sw-2")
