"""Retention: final orders expire after ORDER_RETENTION_DAYS; open ones never; events are capped."""

from __future__ import annotations

import time
from typing import Any

import redis

from worker import keys
from worker.payout import Payout
from worker.states import State


def payout(pid: str) -> Payout:
    return Payout(pid, 5_000_000, "BCA", "Dewi", "1234567890")


def test_final_orders_expire_open_and_review_orders_do_not(
    make_runtime: Any,
    redis_client: redis.Redis,
) -> None:
    """A final order's record and history get a TTL of the retention; open and review ones none."""
    # given
    rt = make_runtime(ORDER_RETENTION_DAYS="2")
    store, now = rt.store, time.time()
    for pid in ("r-final", "r-open", "r-review"):
        store.create(payout(pid), due_at=now + 60)
        store.transition(pid, State.SUBMITTING, reason="test")
        store.transition(pid, State.ACCEPTED, reason="test", due=now + 60)
    # when
    store.transition("r-final", State.SUCCEEDED, reason="test")
    store.transition("r-review", State.REVIEW, reason="test")
    # then
    retention_s = 2 * 86400
    for key in (keys.order("r-final"), keys.history("r-final")):
        assert retention_s - 60 <= redis_client.ttl(key) <= retention_s
    for pid in ("r-open", "r-review"):
        assert redis_client.ttl(keys.order(pid)) == -1
        assert redis_client.ttl(keys.history(pid)) == -1
    # an operator resolving the review order makes it final: then it expires too
    store.transition("r-review", State.FAILED, reason="operator")
    assert redis_client.ttl(keys.order("r-review")) > retention_s - 60


def test_events_stream_stays_capped(make_runtime: Any, redis_client: redis.Redis) -> None:
    """With EVENTS_MAXLEN=100 the stream is trimmed as it grows (approximately: whole nodes)."""
    # given
    rt = make_runtime(EVENTS_MAXLEN="100")
    now = time.time()
    # when: 4 events per order, 800 events in all
    for i in range(200):
        pid = f"e-{i}"
        rt.store.create(payout(pid), due_at=now + 60)
        rt.store.transition(pid, State.SUBMITTING, reason="t")
        rt.store.transition(pid, State.ACCEPTED, reason="t", due=now + 60)
        rt.store.transition(pid, State.SUCCEEDED, reason="t")
    # then
    length = redis_client.xlen(keys.EVENTS)
    assert 100 <= length <= 200, length  # MAXLEN ~ trims whole macro nodes (100 entries each)
    last = redis_client.xrevrange(keys.EVENTS, count=1)[0][1]
    assert last["payout_cl_id"] == "e-199"
