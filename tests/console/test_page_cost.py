"""Every console page reads a page: its Redis cost does not grow with the open orders (issue 21).

The cost is counted on the server (``INFO commandstats``: every command the page sent, and
any a script ran), for each page at 100 and at 10,000 open orders, with the same review
and approvals queues (30 orders each). The rule: the same number of commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from tests.console.conftest import Client
from worker import keys
from worker.payout import Payout
from worker.runtime import Runtime
from worker.states import State

pytestmark = pytest.mark.console

QUEUED = 30
PAGES = ("/", "/review", "/approvals", "/search", "/pause", "/order/rev-0", "/review?from=10")


def commands(r: redis.Redis) -> int:
    """Commands the server has run so far (INFO's own excluded)."""
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


def cost(r: redis.Redis, call: Callable[[], object]) -> int:
    before = commands(r)
    call()
    return commands(r) - before


def open_orders(rt: Runtime, start: int, end: int) -> None:
    """Received orders ``open-<n>``, created through the store's own script."""
    due = time.time() + 3600
    for n in range(start, end):
        rt.store.create(Payout(f"open-{n}", 100_000, "BCA", "Dewi", "1234567890"), due_at=due)


def queues(rt: Runtime) -> None:
    """30 orders in review, 30 awaiting approval (through the transitions)."""
    due = time.time() + 3600
    for n in range(QUEUED):
        rt.store.create(Payout(f"rev-{n}", 100_000, "BCA", "Dewi", "1234567890"), due_at=due)
        rt.store.transition(f"rev-{n}", State.REVIEW, reason="setup")
        rt.store.create(Payout(f"apr-{n}", 9_000_000, "BCA", "Dewi", "1234567890"), due_at=due)
        rt.store.transition(
            f"apr-{n}", State.AWAITING_APPROVAL, reason="setup", fields={"requested_by": "otto"}, due=due
        )


def page_costs(c: Client, r: redis.Redis) -> dict[str, int]:
    out = {}
    for p in PAGES:
        path, _, query = p.partition("?")
        out[p] = cost(r, lambda path=path, query=query: c.get(path, user="ada", query=query))
        got = c.get(path, user="ada", query=query)
        assert got.status == 200, (p, got.body[:300])
    out["POST /search"] = cost(
        r, lambda: c.post("/search", user="ada", form={"csrf": c.token("ada"), "payout_cl_id": "rev-1"})
    )
    return out


def test_pages_cost_the_same_at_100_and_10000_open_orders(
    make_client: Callable[..., Client], runtime: Runtime
) -> None:
    """Overview, review, approvals (and their later pages), search, pause and an order page
    send the same number of Redis commands with 10,000 open orders as with 100."""
    c = make_client()
    r = runtime.redis
    # given the queues and 100 open orders; every page seen once (the approvals index's
    # one-time backfill runs on the first view of a store)
    queues(runtime)
    open_orders(runtime, 0, 100 - QUEUED)
    page_costs(c, r)
    assert int(r.zcard(keys.OPEN_SINCE)) == 100  # received and awaiting approval; review is not open
    small = page_costs(c, r)
    # when the open orders grow to 10,000
    open_orders(runtime, 100 - QUEUED, 10_000 - QUEUED)
    assert int(r.zcard(keys.OPEN_SINCE)) == 10_000
    large = page_costs(c, r)
    # then every page costs what it cost before
    assert large == small
    # and the queue pages show their whole queue's length, a page at a time
    body = c.get("/approvals", user="ada").body
    assert f"{QUEUED} order(s) wait for a checker" in body and body.count('form="bulk"') == QUEUED
