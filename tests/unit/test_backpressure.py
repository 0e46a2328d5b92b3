"""Bounded cost, pure parts: the dispatch rule, the capped backoff exponent, the check
lease token, the batch windows and the deadline settings check."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers import base_env
from worker.backoff import MAX_BACKOFF_EXPONENT, backoff_s, retry_delay_s
from worker.checks import is_due_for_check, windows
from worker.reports import next_check_delay_s
from worker.settings import ConfigError, load_settings
from worker.states import State
from worker.store import Order
from worker.sweep import SubmitBudget


def order(i: str = "A", *, due_at: float | None = None, t: float = 1000.0, **fields: str) -> Order:
    return Order(i, State.ACCEPTED, 1, "BCA", "x", "1", None, t, t, fields=fields, due_at=due_at)


def test_backoff_exponent_is_capped_and_never_overflows() -> None:
    """A huge attempt or check count gives the capped delay, not OverflowError (D29)."""
    # given
    counts = [0, 1, 10, MAX_BACKOFF_EXPONENT, 1023, 1024, 10**6]
    # when
    delays = [backoff_s(30.0, 600.0, n) for n in counts]
    retries = [retry_delay_s(n, cap_s=300.0) for n in counts]
    # then
    assert delays[:2] == [30.0, 60.0]
    assert delays[2:] == [600.0] * 5
    assert all(0.8 <= r <= 300 * 1.2 for r in retries)
    assert backoff_s(1.0, math.inf, 10**6) == 2.0**MAX_BACKOFF_EXPONENT


def test_next_check_delay_survives_a_huge_check_count() -> None:
    """``checks`` incremented for days (1024 and beyond) still yields CHECK_INTERVAL_MAX."""
    # given
    rt: Any = SimpleNamespace(settings=SimpleNamespace(check_interval_min_s=30.0, check_interval_max_s=600.0))
    # when
    delay = next_check_delay_s(rt, 5000)
    # then
    assert 540.0 <= delay <= 660.0


def test_submit_budget_keeps_the_queue_near_two_ticks_of_work() -> None:
    """Re-drives per tick = rate x interval x 2 less what is already queued; a held order is
    leased until the queue ahead of it is consumed (queued / rate)."""
    # given: 50 rps, 10 s ticks: cap 1000; 700 queued
    budget = SubmitBudget(rate=50.0, queued=700, cap=1000, left=300, base_lease_s=25.0)
    # when
    taken = sum(budget.take() for _ in range(1000))
    # then
    assert taken == 300 and not budget.take()
    assert budget.lease_s() == pytest.approx(25.0 + 700 / 50)
    assert budget.lease_s(300) == pytest.approx(25.0 + 1000 / 50)


def test_submit_budget_of_a_long_queue_redrives_nothing() -> None:
    """With 100,000 messages queued (an import), no order is re-driven: their messages wait."""
    # given
    rt: Any = SimpleNamespace(
        settings=SimpleNamespace(sweep_interval_s=10.0, lease_s=25.0),
        limiter=SimpleNamespace(rate=50.0, enabled=True),
        submit_backlog=lambda: 100_000,
    )
    # when
    budget = SubmitBudget.of(rt)
    # then
    assert budget.cap == 1000 and budget.left == 0 and not budget.take()
    assert budget.lease_s() == pytest.approx(25.0 + 2000.0)


def test_check_message_stands_only_while_due_or_held_by_its_lease() -> None:
    """A check is due, or held by the lease its sweep recorded; rescheduled or unscheduled
    since, the message is stale and must do nothing (D17)."""
    # given
    now = 5000.0
    due = order(due_at=now - 1)
    held = order(due_at=now + 20, lease=repr(now + 20))
    rescheduled = order(due_at=now + 300, lease=repr(now + 20))
    never_leased = order(due_at=now + 300)
    unscheduled = order(due_at=None, lease=repr(now + 20))
    # when
    verdicts = [is_due_for_check(o, now) for o in (due, held, rescheduled, never_leased, unscheduled)]
    # then
    assert verdicts == [True, True, False, False, False]


def test_batch_windows_are_narrow() -> None:
    """Orders days apart are never one list-query window (D18)."""
    # given
    times = [0.0, 10.0, 299.0, 301.0, 86400.0, 86500.0, 2 * 86400.0]
    orders = [order(f"O{k}", t=t) for k, t in enumerate(times)]
    # when
    groups = windows(reversed(orders), 300.0)
    # then
    assert [[o.payout_cl_id for o in g] for g in groups] == [
        ["O0", "O1", "O2"],
        ["O3"],
        ["O4", "O5"],
        ["O6"],
    ]
    assert all(max(o.created_at for o in g) - min(o.created_at for o in g) <= 300 for g in groups)


def test_visibility_timeout_must_cover_the_longest_task_by_its_own_deadlines() -> None:
    """The check names what bounds a task on the threads pool: its page budget x (token wait
    + total HTTP deadline), not Celery's time limit (D19)."""
    # given: 4 pages x (2 s + 30 s) = 128 s; twice that is above 200 s
    env = base_env(
        "redis://127.0.0.1:1/0",
        GATEWAY_TOTAL_TIMEOUT="30",
        BROKER_VISIBILITY_TIMEOUT="200",
        CHECK_BATCH_PAGES="4",
    )
    env["TASK_TIME_LIMIT"] = "90"
    # when / then
    with pytest.raises(
        ConfigError, match="BROKER_VISIBILITY_TIMEOUT must be at least twice the longest task"
    ):
        load_settings(env)
    ok = load_settings({**env, "BROKER_VISIBILITY_TIMEOUT": "400", "TASK_TIME_LIMIT": "150"})
    assert ok.max_task_s == pytest.approx(128.0)
    assert ok.gateway is not None and ok.gateway.total_timeout_s == 30.0


def test_total_timeout_defaults_to_connect_plus_read() -> None:
    """GATEWAY_TOTAL_TIMEOUT defaults to connect + read, and bounds the lease's call time."""
    # given
    s = load_settings(base_env("redis://127.0.0.1:1/0"))
    # then
    assert s.gateway is not None and s.gateway.total_timeout_s == 3.0  # 1 + 2 in base_env
    assert s.call_s == 3.0
    assert s.lease_s == max(2 * s.sweep_interval_s, 3.0 + s.submit_token_wait_s + 5.0)


@pytest.mark.parametrize(
    ("extra", "same"),
    [
        ({}, True),
        ({"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m"}, True),
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:6390/0"}, True),
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:6391/0"}, False),
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:6390/1"}, False),
    ],
)
def test_broker_is_the_store_under_sentinel_too(extra: dict[str, str], same: bool) -> None:
    """D49: without CELERY_BROKER_URL the broker is the store's Redis (under Sentinel the same
    master name and db, though its URL reads sentinel://), so create.lua and the sweep read
    the queue in the store; a broker URL of its own is read through the broker."""
    from worker.runtime import broker_is_store

    s = load_settings(base_env("redis://127.0.0.1:6390/0", **extra))
    assert broker_is_store(s) is same
