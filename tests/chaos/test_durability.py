"""Durability: both guarantees hold when Redis loses acknowledged writes.

Real processes: redis-server (and ``redis-server --sentinel``), Celery workers, beat, the
sandbox with its duplicate check **off** (a second create makes a second payout), so the
only thing between a lost claim and a double payout is the worker's loss-epoch guard
(worker/durability.py): after a restart or failover every order that existed before is
queried at the gateway before any create may be sent for it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import TEST_CREDENTIALS, sandbox_config
from worker import keys
from worker.celery_app import make_producer_app
from worker.celeryconf import SUBMIT_TASK
from worker.harness.invariants import Expected, check_orders, read_orders
from worker.harness.processes import RedisServer, SentinelServer, wait_for
from worker.harness.stack import LocalStack
from worker.producer import store_payout
from worker.states import FINAL, State

BANKS = ("BCA", "BNI", "BRI", "MANDIRI")


def plan(n: int, seed: int, prefix: str) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed)
    out: dict[str, dict[str, Any]] = {}
    for i in range(n):
        pid = f"{prefix}-{i:05d}"
        out[pid] = {
            "payout_cl_id": pid,
            "amount": rng.randrange(20_000, 2_000_000) * 100,
            "bank_name": rng.choice(BANKS),
            "name": f"Penerima {i:05d}",
            "number": str(rng.randrange(10**11, 10**15)),
        }
    return out


def settled(stack: LocalStack, ids: list[str]) -> bool:
    """Every order final or in review (a record that vanished counts as unsettled)."""
    try:
        orders = stack.rt.store.get_many(ids)
    except redis.exceptions.RedisError:
        return False
    return len(orders) == len(ids) and all(o.state in FINAL or o.state is State.REVIEW for o in orders.values())


def gateway_verdict(stack: LocalStack, data: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """check_orders against the ledger, plus "at most one create request per id"."""
    assert stack.sandbox is not None
    ledger = stack.sandbox.admin.ledger()
    expected = {p: Expected(d["amount"], d["number"], d["name"]) for p, d in data.items()}
    stored = read_orders(stack.redis, list(data))
    verdict = check_orders(expected, stored, ledger)
    twice = [p for p, c in ledger["create_requests"].items() if int(c["total"]) > 1]
    return verdict.violations + [f"{p}: {ledger['create_requests'][p]} create requests" for p in twice], ledger


def found_after_epoch(stack: LocalStack, ids: list[str]) -> list[str]:
    """Orders the guard found at the gateway after a loss epoch (their claim was lost)."""
    stored = read_orders(stack.redis, ids)
    return [
        p for p, o in stored.items() if any("after loss epoch" in str(h.get("reason", "")) for h in o["history"])
    ]


# ----------------------------------------------------------------------------- host crash


@pytest.fixture
def crash_stack(tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack.own(
        tmp_path / "stack",
        sandbox=sandbox_config(duplicate_check=False, pending_s=0.2, processing_s=0.4),
        credentials=TEST_CREDENTIALS,
        appendfsync="everysec",
        bind_runtime=False,
        REDIS_DURABILITY="relaxed",
        GATEWAY_MAX_RPS="60",
        UNCONFIRMED_GRACE="4",
    )
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.timeout(400)
def test_host_crash_everysec_relaxed_no_second_create(crash_stack: LocalStack) -> None:
    """A host crash under appendfsync everysec (Redis SIGKILLed while creates are in flight,
    its AOF cut back to its size one second before) loses claims whose creates were sent.
    With the gateway's duplicate check off, the loss-epoch guard alone must keep every id
    at one create request, and every order must end final or in review, agreeing with the
    gateway."""
    # given: 240 orders stored and on disk (enqueued more than a second before the crash)
    stack = crash_stack
    assert stack.redis_server is not None and stack.sandbox is not None
    server = stack.redis_server
    data = plan(240, seed=11, prefix="hc")
    for d in data.values():
        store_payout(stack.rt, d)
    ids = list(data)
    time.sleep(1.5)  # deliberate: every enqueue is past the everysec fsync before the load
    server.sample_aof()
    stack.start_receiver()
    stack.start_worker(concurrency=16)
    stack.start_beat()
    stack.wait_workers_ready()
    producer = make_producer_app(stack.settings)
    for pid in ids:
        producer.send_task(SUBMIT_TASK, args=[pid])
    admin = stack.sandbox.admin

    # when: creates are in flight (a third of them done), the host crashes
    wait_for(lambda: len(admin.ledger()["create_requests"]) >= 80, 60, what="80 creates at the gateway")
    dropped = server.host_crash(lost_s=1.0)
    time.sleep(0.5)
    server.start()

    # then
    wait_for(lambda: settled(stack, ids), 240, interval_s=0.5, what="every order final or in review")
    violations, ledger = gateway_verdict(stack, data)
    assert violations == [], violations[:20]
    assert max(ledger["payouts_per_id"].values()) == 1
    epoch = stack.redis.hgetall(keys.LOSS_EPOCH)
    assert int(epoch.get("no", 0)) >= 1, epoch
    caught = found_after_epoch(stack, ids)
    # not vacuous: the crash dropped acknowledged writes and lost claims whose create was sent
    assert dropped > 0
    assert caught, "no lost claim was found at the gateway: the crash lost nothing that mattered"
    print(f"host crash: {dropped} AOF bytes dropped, {len(caught)} lost claims found at the gateway")
