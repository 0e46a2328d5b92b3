"""The order store's invariants, checked over every order in a (test) Redis database."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import redis

from worker import keys
from worker.states import FINAL, OPEN, State, is_allowed


def all_order_ids(client: redis.Redis) -> list[str]:
    """Every stored order id (SCAN: fine in a test database, never in the worker)."""
    prefix = keys.order("")
    return sorted(k[len(prefix) :] for k in client.scan_iter(match=prefix + "*", count=1000))


def check_invariants(
    client: redis.Redis, *, create_requests: Mapping[str, Mapping[str, int]] | None = None
) -> dict[str, str]:
    """Assert every invariant; return {payout_cl_id: state}.

    * each order's history is a chain ``"" -> received -> ...`` of edges the table allows,
      ending at the stored state; a final state is only ever left for ``review``;
    * ``payouts:counts`` equals the number of orders in each state;
    * an order is in the due-index iff it is open; in the review index iff in review;
    * the events stream holds exactly one entry per history entry, in the same order;
    * with ``create_requests`` (the sandbox ledger): at most one create per order.
    """
    states: dict[str, str] = {}
    history_total = 0
    histories: dict[str, list[tuple[str, str]]] = {}
    for pid in all_order_ids(client):
        state = client.hget(keys.order(pid), "state")
        assert state is not None, pid
        states[pid] = state
        entries = [json.loads(h) for h in client.lrange(keys.history(pid), 0, -1)]
        assert entries, f"{pid}: no history"
        chain = [(str(e["from"]), str(e["to"])) for e in entries]
        histories[pid] = chain
        history_total += len(chain)
        assert chain[0] == ("", "received"), f"{pid}: history starts {chain[0]}"
        for (prev_from, prev_to), (src, dst) in pairwise(chain):
            assert src == prev_to, f"{pid}: history broken at {prev_from}->{prev_to}, {src}->{dst}"
        for src, dst in chain[1:]:
            assert is_allowed(State(src), State(dst)), f"{pid}: {src} -> {dst} not allowed"
            if State(src) in FINAL:
                assert dst == State.REVIEW.value, f"{pid}: final {src} replaced by {dst}"
        assert chain[-1][1] == state, f"{pid}: history ends {chain[-1]}, state {state}"

    actual = Counter(states.values())
    counts = {k: int(v) for k, v in client.hgetall(keys.COUNTS).items()}
    for s in State:
        assert counts.get(s.value, 0) == actual.get(s.value, 0), (
            f"counts[{s.value}]={counts.get(s.value, 0)}, actual {actual.get(s.value, 0)}"
        )

    due = set(client.zrange(keys.DUE, 0, -1))
    open_ids = {pid for pid, s in states.items() if State(s) in OPEN}
    assert due == open_ids, f"due-index {sorted(due ^ open_ids)} differ; states {states}"
    review = set(client.zrange(keys.REVIEW, 0, -1))
    assert review == {pid for pid, s in states.items() if s == State.REVIEW.value}

    events = client.xrange(keys.EVENTS, "-", "+")
    assert len(events) == history_total, f"{len(events)} events, {history_total} history entries"
    by_order: dict[str, list[tuple[str, str]]] = {}
    for _, fields in events:
        by_order.setdefault(fields["payout_cl_id"], []).append((fields["from"], fields["to"]))
    assert by_order == histories

    if create_requests is not None:
        for pid in states:
            total = int(create_requests.get(pid, {}).get("total", 0))
            assert total <= 1, f"{pid}: {total} create requests at the gateway"
    return states


def describe(client: redis.Redis, pid: str) -> dict[str, Any]:
    """An order's fields and history, for assertion messages."""
    return {
        "fields": client.hgetall(keys.order(pid)),
        "history": [json.loads(h) for h in client.lrange(keys.history(pid), 0, -1)],
    }
