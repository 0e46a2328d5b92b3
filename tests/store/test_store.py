"""The order store's Lua scripts against a real Redis."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import redis

from tests.helpers import TEST_RING
from worker import keys
from worker.errors import OrderNotFound
from worker.payout import Payout
from worker.states import FINAL, OPEN, State, is_allowed
from worker.store import REMOVE, OrderStore


def payout(i: str = "ORD-1", amount: int = 5_000_000) -> Payout:
    return Payout(i, amount, "BCA", "Budi", "1234567890")


@pytest.fixture
def store(redis_client: redis.Redis) -> OrderStore:
    return OrderStore(redis_client, pii_keys=TEST_RING, retention_s=3600)


def put_in_state(store: OrderStore, i: str, state: State) -> None:
    store.create(payout(i), due_at=time.time() + 60)
    if state is not State.RECEIVED:
        # force the state directly: this helper only sets up the "from" side of a test
        store.redis.hset(keys.order(i), "state", state.value)
        store.redis.hincrby(keys.COUNTS, "received", -1)
        store.redis.hincrby(keys.COUNTS, state.value, 1)


def test_create_is_idempotent_and_reports_existing(store: OrderStore) -> None:
    # given
    """Creating an existing id stores nothing and reports the stored fingerprint."""
    first = store.create(payout(), due_at=100.0, now=50.0)
    # when
    again = store.create(payout(), due_at=100.0)
    other = store.create(payout(amount=1), due_at=100.0)
    # then
    assert first.created and not again.created and not other.created
    assert store.same_data(again.fingerprint, payout())
    assert again.fingerprint == other.fingerprint and not store.same_data(other.fingerprint, payout(amount=1))
    order = store.require("ORD-1")
    assert order.state is State.RECEIVED and order.amount == 5_000_000
    assert order.due_at == 100.0
    assert store.counts()["received"] == 1
    assert [h["to"] for h in order.history] == ["received"]
    assert store.redis.xlen(keys.EVENTS) == 1


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(State, State)))
def test_every_transition_pair(store: OrderStore, src: State, dst: State) -> None:
    """The CAS applies exactly the table's edges and keeps index, counts, history, events."""
    # given
    put_in_state(store, "O", src)
    events_before = store.redis.xlen(keys.EVENTS)
    # when
    # (leaving a published final state takes a second person's override: test_money_gate.py)
    override = {"override_by": "ana", "override_approved_by": "budi"} if src in FINAL else None
    prev = store.transition(
        "O", dst, reason="test", due=time.time() + 5 if dst in OPEN else None, fields=override
    )
    # then
    order = store.require("O")
    counts = store.counts()
    if is_allowed(src, dst):
        assert prev is src
        assert order.state is dst
        assert order.history[-1]["from"] == src.value and order.history[-1]["to"] == dst.value
        assert store.redis.xlen(keys.EVENTS) == events_before + 1
        assert counts[dst.value] == 1 and (src == dst or counts[src.value] == 0)
        assert (order.due_at is not None) == (dst in OPEN)
        assert (store.redis.zscore(keys.REVIEW, "O") is not None) == (dst is State.REVIEW)
        assert (store.redis.zscore(keys.APPROVALS, "O") is not None) == (dst is State.AWAITING_APPROVAL)
        ttl = store.redis.ttl(keys.order("O"))
        assert (ttl > 0) == (dst in FINAL)
    else:
        assert prev is None
        assert order.state is src
        assert store.redis.xlen(keys.EVENTS) == events_before


def test_unknown_order_raises(store: OrderStore) -> None:
    """A transition of an unknown order raises OrderNotFound."""
    with pytest.raises(OrderNotFound):
        store.transition("nope", State.SUBMITTING, reason="x")


def test_field_update_without_state_change(store: OrderStore) -> None:
    """A transition without a target state updates fields and due time and writes no history."""
    store.create(payout(), due_at=1.0)
    prev = store.transition(
        "ORD-1", None, sources={State.RECEIVED}, reason="r", due=42.0, fields={"checks": 3, "gone": None}
    )
    assert prev is State.RECEIVED
    order = store.require("ORD-1")
    # a due time is stored relative to the Redis server's clock (D35): the same host here
    assert order.fields["checks"] == "3" and order.due_at == pytest.approx(42.0, abs=0.5)
    assert len(order.history) == 1  # no state change, no history entry
    assert store.transition("ORD-1", None, sources={State.ACCEPTED}, reason="r") is None


def test_expect_field_condition(store: OrderStore) -> None:
    """A transition with an `expect` field applies only when the field has that value (the claim fence)."""
    store.create(payout(), due_at=1.0)
    store.transition("ORD-1", State.SUBMITTING, reason="claim", fields={"submit_attempts": 1})
    assert store.transition("ORD-1", State.ACCEPTED, reason="x", expect=("submit_attempts", "2")) is None
    assert store.transition("ORD-1", State.ACCEPTED, reason="x", expect=("submit_attempts", "1"))


def test_many_threads_race_to_claim_one_order(store: OrderStore) -> None:
    """Exactly one of many concurrent claimers wins."""
    store.create(payout(), due_at=1.0)
    barrier = threading.Barrier(32)
    wins: list[int] = []

    def claim(n: int) -> None:
        barrier.wait()
        if store.transition("ORD-1", State.SUBMITTING, sources={State.RECEIVED}, reason="c"):
            wins.append(n)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.counts()["submitting"] == 1 and store.counts()["received"] == 0


def test_lease_due_is_bounded_and_exclusive(store: OrderStore) -> None:
    """Two sweeps never take the same due order; only due ones are taken."""
    now = 1000.0
    for n in range(10):
        store.create(payout(f"due-{n}"), due_at=now - 10 + n)  # due-0..due-9 at 990..999
    store.create(payout("LATER"), due_at=now + 100)
    first = store.lease_due(now=now, batch=4, lease_s=30)
    second = store.lease_due(now=now, batch=100, lease_s=30)
    assert first == ["due-0", "due-1", "due-2", "due-3"]
    assert sorted(second) == [f"due-{n}" for n in range(4, 10)]
    assert store.lease_due(now=now, batch=100, lease_s=30) == []
    assert store.redis.zscore(keys.DUE, "due-0") == now + 30


def test_final_state_leaves_due_index_and_expires(store: OrderStore) -> None:
    """A final order leaves the due-index and expires; reopening it removes the expiry."""
    store.create(payout(), due_at=1.0)
    store.transition("ORD-1", State.SUBMITTING, reason="c", due=5.0)
    store.transition("ORD-1", State.REJECTED, reason="0018")
    assert store.redis.zscore(keys.DUE, "ORD-1") is None
    assert 0 < store.redis.ttl(keys.order("ORD-1")) <= 3600
    assert 0 < store.redis.ttl(keys.history("ORD-1")) <= 3600
    # an operator resubmit reopens it and the keys no longer expire
    override = {"override_by": "ana", "override_approved_by": "budi"}
    store.transition("ORD-1", State.RECEIVED, reason="resubmit", due=9.0, fields=override)
    assert store.redis.ttl(keys.order("ORD-1")) == -1


def test_remove_due(store: OrderStore) -> None:
    """REMOVE takes an order out of the due-index."""
    store.create(payout(), due_at=1.0)
    store.transition("ORD-1", None, sources={State.RECEIVED}, reason="x", due=REMOVE)
    assert store.redis.zscore(keys.DUE, "ORD-1") is None


def test_the_approvals_index_follows_the_state_and_is_backfilled_once(store: OrderStore) -> None:
    """keys.APPROVALS holds exactly the orders awaiting approval, oldest first, kept by
    transition.lua; orders that waited before it existed are added once by the backfill."""
    # given two orders sent to approval, one approved, one rejected, one still waiting
    for i in ("A1", "A2", "A3"):
        store.create(payout(i), due_at=time.time() + 60)
        store.transition(i, State.AWAITING_APPROVAL, reason="t", due=time.time() + 60)
    store.transition("A1", State.RECEIVED, reason="approved", due=time.time())
    store.transition("A2", State.REJECTED, reason="rejected")
    # then only the waiting one is indexed
    assert [i for i, _ in store.queue_page(keys.APPROVALS, 0, 10)] == ["A3"]
    # given an order that waited before the index existed (its entry absent)
    store.create(payout("OLD"), due_at=time.time() + 60)
    store.transition("OLD", State.AWAITING_APPROVAL, reason="t", due=time.time() + 60)
    store.redis.zrem(keys.APPROVALS, "OLD")
    # when the backfill runs, twice
    first, second = store.backfill_approvals(page=2), store.backfill_approvals(page=2)
    # then it read the due-index once and indexed the old order
    assert first == int(store.redis.zcard(keys.DUE)) and second == 0
    assert {i for i, _ in store.queue_page(keys.APPROVALS, 0, 10)} == {"A3", "OLD"}
