"""Bounded cost against a real Redis: the claim's attempt counter, not-sent retries and
rate-limit deferrals as counters (no history or events), the history cap, and the dispatch
rule of the sweep."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from tests.helpers import TEST_RING
from worker import keys
from worker.celeryconf import SUBMIT_QUEUE
from worker.checks import CheckStatus, check_order
from worker.harness.invariants import check_invariants
from worker.payout import Payout
from worker.runtime import Runtime
from worker.states import State
from worker.store import OrderStore
from worker.submission import SubmitStatus, submit_order
from worker.sweep import sweep_due


def payout(i: str) -> Payout:
    return Payout(i, 5_000_000, "BCA", "Budi", "1234567890")


@pytest.fixture
def store(redis_client: redis.Redis) -> OrderStore:
    return OrderStore(
        redis_client, pii_keys=TEST_RING, retention_s=3600, history_max=6, submit_queue=SUBMIT_QUEUE
    )


def claim(store: OrderStore, i: str) -> int | None:
    """The submit path's claim (received -> submitting): the attempt number, or None."""
    now = time.time()
    return store.claim(i, reason="claimed", due=now + 30, fields={"sign_type": "HMAC-SHA256"}, now=now)


def history(store: OrderStore, i: str) -> list[tuple[str, str]]:
    return [(h["from"], h["to"]) for h in (json.loads(x) for x in store.redis.lrange(keys.history(i), 0, -1))]


def test_not_sent_retries_are_counters_not_history(store: OrderStore) -> None:
    """Fifty not-sent attempts write one claim entry, no flips in the history or the events
    stream; the attempt number still counts every claim, and the chain stays valid (D20)."""
    # given
    store.create(payout("NS"), due_at=time.time() + 60)
    # when: 50 claims, each answered "not sent" (quiet return to received)
    for n in range(1, 51):
        assert claim(store, "NS") == n
        assert store.state_of("NS") is State.SUBMITTING
        back = store.transition(
            "NS",
            State.RECEIVED,
            sources={State.SUBMITTING},
            reason="not sent: ConnectionError",
            due=time.time() + 60,
            fields={"not_sent": n},
            expect=("submit_attempts", str(n)),
            quiet=True,
        )
        assert back is State.SUBMITTING
    # then
    assert history(store, "NS") == [("", "received"), ("received", "submitting")]
    assert store.redis.xlen(keys.EVENTS) == 2
    assert store.counts()["received"] == 1 and store.counts()["submitting"] == 0
    assert store.redis.hget(keys.order("NS"), "not_sent") == "50"
    # when: the 51st attempt is answered
    attempt = claim(store, "NS")
    store.transition("NS", State.ACCEPTED, sources={State.SUBMITTING}, reason="0000", due=time.time() + 30)
    # then: one entry more, the chain valid and the events equal to the history
    assert attempt == 51
    assert history(store, "NS")[-1] == ("submitting", "accepted")
    check_invariants(store.redis)


def test_a_logged_move_after_a_quiet_return_catches_the_history_up(store: OrderStore) -> None:
    """received (after a quiet not-sent) -> review writes submitting -> received first, so
    the history is a chain of allowed edges ending at the state."""
    # given
    store.create(payout("CU"), due_at=time.time() + 60)
    claim(store, "CU")
    store.transition("CU", State.RECEIVED, sources={State.SUBMITTING}, reason="not sent", quiet=True)
    # when
    store.transition("CU", State.REVIEW, sources={State.RECEIVED}, reason="never sent within MAX_ORDER_AGE")
    # then
    assert history(store, "CU") == [
        ("", "received"),
        ("received", "submitting"),
        ("submitting", "received"),
        ("received", "review"),
    ]
    check_invariants(store.redis)


def test_no_token_defers_the_submit_without_history(make_runtime: Any) -> None:
    """No rate token within SUBMIT_TOKEN_WAIT: the submit path sends nothing and defers the
    order by max(lease, backlog / rate), counting it (``deferrals``), with no state change,
    history entry or event (D17, D20)."""
    # given: every token spent (a 429 back-off for a minute), 400 submit messages queued
    rt = make_runtime(GATEWAY_MAX_RPS="10", SUBMIT_TOKEN_WAIT="0.05")
    rt.store.create(payout("RL"), due_at=time.time() + 60)
    rt.limiter.pause(60)
    rt.redis.lpush(SUBMIT_QUEUE, *[f"m{k}" for k in range(400)])
    events = rt.redis.xlen(keys.EVENTS)
    # when
    first = submit_order(rt, "RL")
    second = submit_order(rt, "RL")
    # then
    assert first is SubmitStatus.RATE_LIMITED and second is SubmitStatus.RATE_LIMITED
    order = rt.store.get("RL")
    assert order is not None and order.state is State.RECEIVED
    assert order.fields.get("deferrals") == "2" and "submit_attempts" not in order.fields
    assert order.due_at == pytest.approx(time.time() + max(rt.settings.lease_s, 400 / 10.0), abs=2)
    assert rt.redis.xlen(keys.EVENTS) == events
    assert history(rt.store, "RL") == [("", "received")]


def test_claim_of_an_order_not_received_does_nothing(store: OrderStore) -> None:
    """A duplicate message finds the order claimed: the second claim is refused and the
    attempt number is not counted again."""
    # given
    store.create(payout("DUP"), due_at=time.time() + 60)
    assert claim(store, "DUP") == 1
    # when
    again = claim(store, "DUP")
    # then
    assert again is None
    assert store.state_of("DUP") is State.SUBMITTING
    assert store.redis.hget(keys.order("DUP"), "submit_attempts") == "1"
    assert history(store, "DUP") == [("", "received"), ("received", "submitting")]


def test_history_is_capped_keeping_the_first_entry(store: OrderStore) -> None:
    """Operator loops (review <-> received) cannot grow one order's history without bound."""
    # given
    store.create(payout("H"), due_at=time.time() + 60)
    # when
    for _ in range(10):
        store.transition("H", State.REVIEW, sources={State.RECEIVED}, reason="r")
        store.transition("H", State.RECEIVED, sources={State.REVIEW}, reason="resubmit", due=time.time())
    # then
    entries = history(store, "H")
    assert len(entries) == 6
    assert entries[0] == ("", "received")
    assert entries[-1] == ("review", "received")


def test_create_pushes_the_redrive_back_by_the_queue_ahead(redis_client: redis.Redis) -> None:
    """A new order's re-drive time waits for the messages queued before its own (D17)."""
    # given: 1,000 submit messages queued, 50 rps
    store = OrderStore(redis_client, pii_keys=TEST_RING, submit_queue=SUBMIT_QUEUE, submit_rate=50.0)
    redis_client.lpush(SUBMIT_QUEUE, *[f"m{k}" for k in range(1000)])
    now = time.time()
    # when
    created = store.create(payout("Q"), due_at=now + 60, now=now)
    # then
    assert created.order is not None
    assert created.order.due_at == pytest.approx(now + 60 + 1000 / 50)
    assert redis_client.zscore(keys.DUE, "Q") == created.order.due_at


def test_sweep_redrives_no_order_whose_message_is_queued(make_runtime: Any) -> None:
    """Due received orders while the submit queue holds more than two ticks of work: none is
    re-driven, each is leased until the queue ahead is consumed; a short queue gets at
    most its budget (rate x interval x 2 - queued) per tick."""
    # given: 20 rps, 1 s ticks -> cap 40; 300 due received orders, 300 messages queued
    rt: Runtime = make_runtime(GATEWAY_MAX_RPS="20", SWEEP_INTERVAL="1")
    past = time.time() - 5
    for k in range(300):
        rt.store.create(payout(f"B{k:03d}"), due_at=past)
    rt.redis.lpush(SUBMIT_QUEUE, *[f"m{k}" for k in range(300)])
    # when
    long_queue = sweep_due(rt)
    leased = min(rt.redis.zscore(keys.DUE, f"B{k:03d}") for k in range(300))
    rt.redis.delete(SUBMIT_QUEUE)
    rt.redis.lpush(SUBMIT_QUEUE, *[f"m{k}" for k in range(10)])
    rt.redis.zadd(keys.DUE, {f"B{k:03d}": past for k in range(300)})
    short_queue = sweep_due(rt)
    # then
    assert long_queue.submit == [] and long_queue.held_back == 300
    assert leased >= past + 5 + 300 / 20
    assert len(short_queue.submit) == 40 - 10 and short_queue.held_back == 270


def test_a_check_for_an_order_checked_meanwhile_makes_no_gateway_call(make_runtime: Any) -> None:
    """Two check messages for one order: the second finds it rescheduled and does nothing
    (the gateway here is unreachable: a call would show as query_failed)."""
    # given: an accepted order the sweep leased (and recorded the lease on)
    rt: Runtime = make_runtime()
    rt.store.create(payout("C1"), due_at=time.time() - 1)
    rt.store.transition("C1", State.SUBMITTING, reason="claim")
    rt.store.transition("C1", State.ACCEPTED, reason="0000", fields={"payout_id": "P1"}, due=time.time() - 1)
    swept = sweep_due(rt)
    assert swept.check == ["C1"]
    # when: another check rescheduled it (as a check that ran first would)
    rt.store.transition("C1", None, sources={State.ACCEPTED}, reason="reschedule", due=time.time() + 300)
    status = check_order(rt, "C1")
    # then
    assert status is CheckStatus.NOT_DUE
    assert rt.redis.hget(keys.order("C1"), "last_query") is None
    assert check_order(rt, "C1", force=True) is CheckStatus.QUERY_FAILED


def test_sweep_reads_a_separate_brokers_queue(redis_client: redis.Redis, redis_url: str) -> None:
    """D49: with the broker on another Redis (CELERY_BROKER_URL), the sweep reads the submit
    queue through the broker's own connection: 30 messages waiting there leave a 40-message
    budget 10 re-drives, not 40 (it saw 0 and re-drove every due order again)."""
    from tests.helpers import base_env
    from worker.celery_app import app
    from worker.celeryconf import SUBMIT_TASK
    from worker.harness.processes import RedisServer
    from worker.runtime import build_runtime
    from worker.settings import load_settings
    from worker.store import NO_QUEUE

    # given: the store on its own Redis, the broker (this process's app) on the session's
    server = RedisServer().start()
    env = base_env(server.url, CELERY_BROKER_URL=redis_url, GATEWAY_MAX_RPS="20", SWEEP_INTERVAL="1")
    rt = build_runtime(load_settings(env))
    try:
        assert rt.store.submit_queue == NO_QUEUE  # the store's Redis holds no broker list
        past = time.time() - 5
        for k in range(50):
            rt.store.create(payout(f"SB{k:02d}"), due_at=past)
        for k in range(30):
            app.send_task(SUBMIT_TASK, args=[f"queued-{k}"])
        assert redis_client.llen(SUBMIT_QUEUE) == 30
        # when
        out = sweep_due(rt)
        # then
        assert out.submit_queue == 30
        assert len(out.submit) == 40 - 30 and out.held_back == 40
    finally:
        rt.close()
        server.cleanup()


def test_a_429_backoff_holds_without_a_rate_limit(redis_client: redis.Redis) -> None:
    """D51: with GATEWAY_MAX_RPS=0 (no bucket) a 429's back-off still holds every process:
    no token until it ends (it was ignored: the next request went out at once)."""
    from worker.ratelimit import RateLimiter

    # given: no bucket, no back-off
    limiter = RateLimiter(redis_client, 0.0)
    assert not limiter.enabled and limiter.try_take() == 0.0
    # when: a 429 pauses everyone for 5 s
    limiter.pause(5.0)
    # then
    assert 4.0 < limiter.try_take() <= 5.0
    assert limiter.acquire(max_wait_s=0.2) is False
    redis_client.delete(keys.BACKOFF)
    assert limiter.acquire(max_wait_s=0.2) is True
