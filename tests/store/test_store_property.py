"""The Lua compare-and-set under random concurrent transitions, whatever the caller asks.

Threads fire random ``OrderStore.transition`` calls -- any target, any set of
"from" states the caller claims (even ones the table forbids), field-only updates --
at a few orders at once. The table must win every time: each applied move is an
allowed edge, and history, counts, due-index, review index and events stay in step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import TEST_RING
from worker.errors import OverrideRequired
from worker.harness.invariants import check_invariants
from worker.payout import Payout
from worker.states import OPEN, State, is_allowed
from worker.store import OrderStore

N_ORDERS = 3
CALL = st.tuples(
    st.integers(0, N_ORDERS - 1),
    st.one_of(st.none(), st.sampled_from(list(State))),
    st.one_of(st.none(), st.frozensets(st.sampled_from(list(State)), min_size=1)),
)


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[OrderStore]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield OrderStore(client, pii_keys=TEST_RING, retention_s=3600)
    finally:
        client.flushdb()
        client.close()


@settings(derandomize=True, max_examples=150, deadline=None, database=None)
@given(threads=st.lists(st.lists(CALL, min_size=1, max_size=12), min_size=2, max_size=4))
def test_concurrent_transitions_follow_the_table(
    store: OrderStore, threads: list[list[tuple[int, State | None, frozenset[State] | None]]]
) -> None:
    """Whatever sources a caller claims, only the table's edges apply, atomically (a published
    final is never made sendable again by one caller)."""
    # given
    store.redis.flushdb()
    ids = [f"s-{k}" for k in range(N_ORDERS)]
    for i in ids:
        store.create(Payout(i, 5_000_000, "BCA", "Budi", "1234567890"), due_at=time.time() + 60)
    applied: list[tuple[State, State]] = []
    barrier = threading.Barrier(len(threads))

    def run(calls: list[tuple[int, State | None, frozenset[State] | None]]) -> None:
        barrier.wait()
        for k, target, sources in calls:
            if target is None:  # keep the state: fields only (the callers' "reschedule")
                store.transition(
                    ids[k], None, sources=sources or set(State), reason="touch", fields={"touched": 1}
                )
                continue
            # callers always schedule an order they move into an open state
            due = time.time() + 60 if target in OPEN else None
            try:
                prev = store.transition(ids[k], target, sources=sources, reason="random", due=due)
            except OverrideRequired:
                # a published final back to received needs two people (D38): refused, not applied
                assert target is State.RECEIVED
                continue
            if prev is not None:
                applied.append((prev, target))

    # when
    workers = [threading.Thread(target=run, args=(calls,)) for calls in threads]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    # then
    assert all(is_allowed(src, dst) for src, dst in applied), applied
    check_invariants(store.redis)
