"""worker.metrics against a real Redis: gauges from the store, counters from the Lua steps and the
per-process buffer, rendered by prometheus_client."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import TEST_RING
from worker import keys, metrics
from worker.payout import Payout
from worker.states import OPEN, State
from worker.store import OrderStore

LUA = Path(metrics.__file__).parent / "lua" / "transition.lua"


def payout(i: str) -> Payout:
    return Payout(i, 5_000_000, "BCA", "Budi", "1234567890")


@pytest.fixture
def store(redis_client: redis.Redis) -> OrderStore:
    return OrderStore(redis_client, pii_keys=TEST_RING, retention_s=3600)


def scrape(client: redis.Redis) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Render and parse back: (sample name, sorted labels) -> value."""
    text = metrics.render(client).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_lua_buckets_match_python() -> None:
    """transition.lua and worker.metrics agree on the time-to-final bucket bounds."""
    # given
    src = LUA.read_text()
    # when
    found = re.search(r"local TTF_BUCKETS = \{([^}]*)\}", src)
    # then
    assert found is not None
    assert tuple(int(x) for x in found.group(1).split(",")) == metrics.TIME_TO_FINAL_BUCKETS


def test_lua_open_states_match_python() -> None:
    """transition.lua's open-since index uses the same open states as worker.states.OPEN."""
    # given
    src = LUA.read_text()
    # when
    found = re.search(r"local OPEN_STATES = \{([^}]*)\}", src)
    # then
    assert found is not None
    assert set(re.findall(r"([a-z_]+) = true", found.group(1))) == {s.value for s in OPEN}


def test_state_gauges_cover_every_state_and_follow_transitions(store: OrderStore) -> None:
    """payouts_orders has one series per State member (0 included) and follows each change."""
    # given: three orders, one moved on to accepted
    now = time.time()
    for i in ("m-1", "m-2", "m-3"):
        store.create(payout(i), due_at=now + 60, now=now)
    store.transition("m-1", State.SUBMITTING, reason="claimed", due=now + 30)
    # when
    got = scrape(store.redis)
    # then
    for s in State:
        assert ("payouts_orders", (("state", s.value),)) in got
    assert got[("payouts_orders", (("state", "received"),))] == 2
    assert got[("payouts_orders", (("state", "submitting"),))] == 1
    assert got[("payouts_orders", (("state", "succeeded"),))] == 0
    assert got[("payouts_transitions_total", (("from", ""), ("to", "received")))] == 3
    assert got[("payouts_transitions_total", (("from", "received"), ("to", "submitting")))] == 1
    assert got[("payouts_open_orders", ())] == 3


def test_time_to_final_histogram_and_open_age(store: OrderStore) -> None:
    """A final order lands in the enqueue-to-final histogram and leaves the oldest-open index."""
    # given: one order stored 100 s ago and one 20 s ago
    t0 = time.time() - 100
    store.create(payout("old"), due_at=t0 + 1, now=t0)
    store.create(payout("new"), due_at=t0 + 200, now=t0 + 80)
    before = scrape(store.redis)
    # when: the old one goes to rejected (final)
    store.transition("old", State.SUBMITTING, reason="claimed", due=time.time() + 30)
    store.transition("old", State.REJECTED, reason="0012 unsupported bank")
    got = scrape(store.redis)
    # then
    assert 99 <= before[("payouts_oldest_open_order_age_seconds", ())] <= 110
    assert before[("payouts_oldest_due_overdue_seconds", ())] >= 98
    assert before[("payouts_due_backlog", ())] == 1
    assert 19 <= got[("payouts_oldest_open_order_age_seconds", ())] <= 30
    assert got[("payouts_time_to_final_seconds_count", (("state", "rejected"),))] == 1
    assert got[("payouts_time_to_final_seconds_bucket", (("le", "60.0"), ("state", "rejected")))] == 0
    assert got[("payouts_time_to_final_seconds_bucket", (("le", "120.0"), ("state", "rejected")))] == 1
    assert got[("payouts_time_to_final_seconds_bucket", (("le", "+Inf"), ("state", "rejected")))] == 1
    assert 99 <= got[("payouts_time_to_final_seconds_sum", (("state", "rejected"),))] <= 110
    assert store.redis.zscore(keys.OPEN_SINCE, "old") is None


def test_gateway_counts_are_flushed_to_redis(redis_client: redis.Redis) -> None:
    """count_gateway buffers in memory; flush() (or the process's flush thread) adds the counts
    and latencies to the Redis hashes /metrics reads."""
    # given: nothing of earlier tests left in the buffer; endpoints only this test uses
    metrics.flush()
    redis_client.delete(keys.METRIC_GATEWAY, keys.METRIC_GATEWAY_LATENCY)
    # when
    metrics.count_gateway(redis_client, "t_create", "rejected", "0018", 0.03)
    metrics.count_gateway(redis_client, "t_create", "rejected", "0018", 0.2)
    metrics.count_gateway(redis_client, "t_query", "error", "weird", 30.0)
    metrics.flush()
    got = scrape(redis_client)
    # then
    req = "payouts_gateway_requests_total"
    assert got[(req, (("code", "0018"), ("endpoint", "t_create"), ("outcome", "rejected")))] == 2
    assert got[(req, (("code", "other"), ("endpoint", "t_query"), ("outcome", "error")))] == 1
    b = "payouts_gateway_request_duration_seconds_bucket"
    assert got[(b, (("endpoint", "t_create"), ("le", "0.025")))] == 0
    assert got[(b, (("endpoint", "t_create"), ("le", "0.05")))] == 1
    assert got[(b, (("endpoint", "t_create"), ("le", "0.25")))] == 2
    assert got[(b, (("endpoint", "t_query"), ("le", "20.0")))] == 0
    assert got[(b, (("endpoint", "t_query"), ("le", "+Inf")))] == 1
    assert got[("payouts_gateway_request_duration_seconds_count", (("endpoint", "t_create"),))] == 2
    assert 0.22 < got[("payouts_gateway_request_duration_seconds_sum", (("endpoint", "t_create"),))] < 0.24


def test_discarded_counts_are_never_written(redis_client: redis.Redis) -> None:
    """discard() drops the unwritten counts and their store: a later flush writes nothing, so
    counts of a store that went away cannot land in the next one (the suite relies on it)."""
    # given: counts buffered for this store
    metrics.flush()
    redis_client.delete(keys.METRIC_GATEWAY, keys.METRIC_GATEWAY_LATENCY)
    metrics.count_gateway(redis_client, "t_discard", "accepted", "0000", 0.01)
    # when
    metrics.discard()
    written = metrics.flush()
    # then
    assert written == 0
    assert not redis_client.exists(keys.METRIC_GATEWAY, keys.METRIC_GATEWAY_LATENCY)
    # and counting goes on afterwards
    metrics.count_gateway(redis_client, "t_discard", "accepted", "0000", 0.01)
    assert metrics.flush() > 0
    assert redis_client.hget(keys.METRIC_GATEWAY, "t_discard|accepted|0000") == "1"


def test_pause_and_balance_hold(redis_client: redis.Redis) -> None:
    """An active pause shows as paused=1 with its age; source=balance also sets the balance hold."""
    # given: nothing paused
    idle = scrape(redis_client)
    # when: a balance hold on BCA since 120 s
    since = time.time() - 120
    redis_client.hset(
        keys.PAUSE,
        "BCA",
        json.dumps({"reason": "0018 balance", "by": "auto", "since": since, "source": "balance"}),
    )
    redis_client.hincrby(keys.HELD, "balance", 3)
    got = scrape(redis_client)
    # then
    assert got[("payouts_held_submits_total", (("kind", "balance"),))] == 3
    assert idle[("payouts_paused", ())] == 0 and idle[("payouts_balance_hold", ())] == 0
    assert got[("payouts_paused", ())] == 1
    assert got[("payouts_balance_hold", ())] == 1
    assert 119 <= got[("payouts_pause_age_seconds", (("scope", "BCA"), ("source", "balance")))] <= 130
    assert (
        got[("payouts_pause_info", (("reason", "0018 balance"), ("scope", "BCA"), ("source", "balance")))]
        == 1
    )


def test_sweep_age_and_review(store: OrderStore) -> None:
    """Seconds since the last sweep come from keys.SWEEP_LAST; review from the review index."""
    # given
    store.redis.set(keys.SWEEP_LAST, repr(time.time() - 42))
    store.create(payout("r-1"), due_at=time.time() + 60)
    # when
    store.transition("r-1", State.REVIEW, reason="test")
    got = scrape(store.redis)
    # then
    assert 41 <= got[("payouts_sweep_last_age_seconds", ())] <= 50
    assert got[("payouts_review_orders", ())] == 1
    assert got[("payouts_orders", (("state", "review"),))] == 1


def test_tombstones_are_counted_and_never_shrink(store: OrderStore) -> None:
    """D56: the never-expiring tombstone hash (one id per order ever stored) is visible in
    /metrics, so its growth can be planned for; an order that expires keeps its tombstone."""
    # given
    for n in range(3):
        store.create(payout(f"t-{n}"), due_at=time.time() + 60)
    # when: one order's keys expire (retention)
    store.redis.delete(keys.order("t-0"), keys.history("t-0"))
    got = scrape(store.redis)
    # then
    assert got[("payouts_tombstones", ())] == 3


def test_console_actions_are_counted_by_action_and_result(redis_client: redis.Redis) -> None:
    """Every console action, allowed or denied, is a series of payouts_console_actions_total."""
    from worker.console import audit
    from worker.console.auth import Actor

    # given two allowed approvals and one denied resolve, audited as the console does
    alice, vic = Actor("alice", frozenset({"approver"})), Actor("vic", frozenset({"viewer"}))
    for _ in range(2):
        audit.record(redis_client, alice, "approve", "ok", payout_cl_id="c-1")
    audit.record(redis_client, vic, "resolve", "denied", payout_cl_id="c-1")
    # when /metrics is rendered
    series = scrape(redis_client)
    # then each (action, result) is its own counter
    assert series[("payouts_console_actions_total", (("action", "approve"), ("result", "ok")))] == 2
    assert series[("payouts_console_actions_total", (("action", "resolve"), ("result", "denied")))] == 1


def test_counters_rules_read_start_at_zero(redis_client: redis.Redis) -> None:
    """On an empty store the first scrape already holds, at 0, every allowed state edge, every
    create refusal code, every endpoint's latency and the time-to-final of every final state:
    increase()/rate() then see the first event (a series born at 1 reads as no increase)."""
    # given: nothing stored, nothing counted
    # when
    got = scrape(redis_client)
    # then
    from worker.gateway import NOT_CREATED
    from worker.states import TRANSITIONS

    for src, dsts in TRANSITIONS.items():
        for dst in dsts:
            assert got[("payouts_transitions_total", (("from", src.value), ("to", dst.value)))] == 0
    for code in NOT_CREATED:
        key = (
            "payouts_gateway_requests_total",
            (("code", code), ("endpoint", "create"), ("outcome", "rejected")),
        )
        assert got[key] == 0
    for endpoint in ("create", "query", "list", "balance"):
        assert got[("payouts_gateway_request_duration_seconds_count", (("endpoint", endpoint),))] == 0
    for state in ("succeeded", "failed", "rejected"):
        assert got[("payouts_time_to_final_seconds_count", (("state", state),))] == 0
    assert all(v == 0 for (name, _), v in got.items() if name.endswith("_total"))


def test_code_labels_are_bounded() -> None:
    """A code label is a documented gateway code, "none" or "other": any answer, bounded series."""
    # when / then
    assert metrics.code_label("0004") == "0004"
    assert metrics.code_label("0050") == "0050"
    assert metrics.code_label("") == "none" and metrics.code_label(None) == "none"
    assert metrics.code_label("9999") == "other" and metrics.code_label("x" * 500) == "other"
