"""One gate for money (issue 19), end to end: real Celery workers, the sandbox over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TEST_CREDENTIALS, Stack, sandbox_config
from worker import keys
from worker.celery_app import make_producer_app
from worker.celeryconf import CHECK_BATCH_TASK, SUBMIT_TASK
from worker.desk.approval import reject
from worker.harness.processes import wait_for
from worker.harness.stack import LocalStack
from worker.ops.cli import main
from worker.producer import store_payout
from worker.sandbox.process import SandboxProcess
from worker.states import FINAL, State

ROOT = Path(__file__).resolve().parents[2]


def data(pid: str, amount: int = 5_000_000, **extra: Any) -> dict[str, Any]:
    return {
        "payout_cl_id": pid,
        "amount": amount,
        "bank_name": "BCA",
        "name": "Wati",
        "number": "4455667788",
        **extra,
    }


# ------------------------------------------------------------------ a fast producer clock + host crash

#: stores orders from a process whose clock the test skews with faketime; prints how far its
#: time.time() is ahead of the Redis server's clock
PRODUCER = """
import json, sys, time
from worker.producer import store_payout
from worker.runtime import build_runtime
from worker.settings import load_settings
import os
rt = build_runtime(load_settings(dict(os.environ)))
for d in json.loads(sys.argv[1]):
    store_payout(rt, d)
print(time.time() - rt.store.server_time())
rt.close()
"""


@pytest.fixture
def crash_stack(tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack.own(
        tmp_path / "stack",
        sandbox=sandbox_config(duplicate_check=False, pending_s=0.2, processing_s=0.4),
        credentials=TEST_CREDENTIALS,
        appendfsync="everysec",
        bind_runtime=False,
        REDIS_DURABILITY="relaxed",
        UNCONFIRMED_GRACE="3",
    )
    try:
        yield stack
    finally:
        stack.stop()


def _aof_dir(stack: LocalStack) -> Path:
    assert stack.redis_server is not None
    return stack.redis_server.dir / "appendonlydir"


@pytest.mark.timeout(180)
def test_fast_producer_clock_and_host_crash_no_second_create(crash_stack: LocalStack, tmp_path: Path) -> None:
    """D36: a producer whose clock runs 5 s fast stores orders; a worker claims and sends them;
    the Redis host crashes under ``everysec`` and loses every claim (the AOF is back to what
    was on disk before them). With the gateway's duplicate check off, the loss-epoch guard
    (epoch numbers, no clocks) must keep every id at one create request."""
    faketime = shutil.which("faketime")
    if faketime is None:
        if os.environ.get("CI"):
            pytest.fail("faketime not installed: .ci/run installs Debian's faketime package")
        pytest.skip("faketime not installed (apt install faketime)")
    stack, server = crash_stack, crash_stack.redis_server
    assert server is not None and stack.sandbox is not None
    ids = [f"fk-{i:02d}" for i in range(12)]
    # the worker runs first: the crash must come within seconds of the enqueue, while a
    # clock-based guard would still take the fast producer's orders for post-crash ones
    stack.start_receiver()
    stack.start_worker(concurrency=4)
    stack.wait_workers_ready()
    # given: the orders stored by a process 5 s ahead of this host (and of Redis)
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [faketime, "-f", "+5s", sys.executable, "-c", PRODUCER, json.dumps([data(i) for i in ids])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert float(out.stdout.split()[-1]) > 4, "the producer's clock was not skewed"
    # ... and on disk: a rewritten AOF holds them; this copy is what the crash will leave
    stack.redis.bgrewriteaof()
    wait_for(
        lambda: (
            stack.redis.info("persistence")["aof_rewrite_in_progress"] == 0
            and stack.redis.info("persistence")["aof_rewrite_scheduled"] == 0
        ),
        30,
        interval_s=0.02,
        what="the AOF rewrite",
    )
    on_disk = tmp_path / "aof-before-claims"
    shutil.copytree(_aof_dir(stack), on_disk)
    # when: the worker claims and sends every create ...
    producer = make_producer_app(stack.settings)
    for i in ids:
        producer.send_task(SUBMIT_TASK, args=[i])
    admin = stack.sandbox.admin
    wait_for(
        lambda: len(admin.ledger()["create_requests"]) == len(ids),
        60,
        interval_s=0.02,
        what="every create sent",
    )
    # ... and the host crashes, losing every claim written since the copy
    server.stop(kill=True)
    shutil.rmtree(_aof_dir(stack))
    shutil.copytree(on_disk, _aof_dir(stack))
    server.start()
    assert all(stack.rt.store.state_of(i) is State.RECEIVED for i in ids), "the crash lost no claim"
    stack.start_beat()  # re-drives the received orders

    # then: every order settles from the gateway's word, and no id was created twice
    def settled() -> bool:
        orders = stack.rt.store.get_many(ids)
        return len(orders) == len(ids) and all(
            o.state in FINAL or o.state is State.REVIEW for o in orders.values()
        )

    wait_for(settled, 90, interval_s=0.5, what="every order final or in review")
    ledger = admin.ledger()
    twice = {p: c for p, c in ledger["create_requests"].items() if int(c["total"]) != 1}
    assert twice == {} and max(ledger["payouts_per_id"].values()) == 1
    assert int(stack.redis.hget(keys.LOSS_EPOCH, "no") or 0) >= 1


# ------------------------------------------------------------------ final means final


def test_resubmit_of_a_checker_rejected_duplicate_is_refused(
    make_stack: Any, gateway: SandboxProcess, use_env: Any
) -> None:
    """D38: WD-2 (same beneficiary and amount as WD-1) is held as a duplicate and rejected by
    a checker; the maker's `payouts resubmit` is refused, with or without --force, and the
    gateway never sees WD-2 while WD-1 is paid."""
    # given
    stack: Stack = make_stack(gateway.url, APPROVAL_ABOVE="100000000", DUPLICATE_KEY="k" * 32)
    stack.start_callbacks()
    stack.start_worker()
    store_payout(stack.rt, data("wd-1", requested_by="maker"))
    make_producer_app(stack.settings).send_task(SUBMIT_TASK, args=["wd-1"])
    store_payout(stack.rt, data("wd-2", requested_by="maker"))
    assert stack.state("wd-2") is State.AWAITING_APPROVAL
    reject(stack.rt, "wd-2", by="checker", note="duplicate of wd-1")
    use_env(gateway.url)  # the CLI's settings: this Redis, this gateway
    # when / then
    assert main(["resubmit", "wd-2", "--by", "maker"]) == 1
    assert (
        main(["resubmit", "wd-2", "--by", "maker", "--force", "--note", "x", "--approved-by", "maker"]) == 1
    )
    stack.wait_state("wd-1", State.SUCCEEDED, timeout_s=30)
    assert stack.state("wd-2") is State.REJECTED
    assert gateway.admin.create_requests("wd-2") == 0  # type: ignore[union-attr]


# ------------------------------------------------------------------ ambiguous answers


def test_0017_while_created_and_lists_lag_is_never_rejected(make_stack: Any, gateway: SandboxProcess) -> None:
    """D41: the gateway creates the order but answers 0017, and its lists do not show the
    order for 2 s; the order waits out the grace, is found, and is paid: never rejected."""
    # given
    assert gateway.admin is not None
    gateway.admin.set_faults(
        [
            {"kind": "create_lost", "mode": "code", "code": "0017", "match": "^c17-"},
            {"kind": "invisible", "seconds": 2, "match": "^c17-"},
        ]
    )
    stack: Stack = make_stack(gateway.url, UNCONFIRMED_GRACE="6")
    stack.start_callbacks()
    stack.start_worker()
    stack.start_beat()
    store_payout(stack.rt, data("c17-1"))
    # when
    make_producer_app(stack.settings).send_task(SUBMIT_TASK, args=["c17-1"])
    # then
    stack.wait_state("c17-1", State.SUCCEEDED, timeout_s=40)
    history = stack.rt.store.require("c17-1").history
    assert all(h["to"] != "rejected" for h in history) and any(h["to"] == "unconfirmed" for h in history)
    assert gateway.admin.create_requests("c17-1") == 1


# ------------------------------------------------------------------ one report path


def test_batch_of_too_old_orders_reaches_review(make_stack: Any, gateway: SandboxProcess) -> None:
    """D43: 60 accepted orders open for 5 days (MAX_ORDER_AGE 3 days) are checked on the batch
    path while the gateway ignores the list's time filter: every one ends in review, with a
    bounded number of list calls (none for the batch: old orders go to single checks)."""
    # given: 60 accepted orders at a gateway that keeps them pending
    assert gateway.admin is not None
    gateway.admin.set_faults([{"kind": "outcome", "status": 1, "match": "^old-"}])
    stack: Stack = make_stack(gateway.url)
    stack.start_worker()
    ids = [f"old-{i:02d}" for i in range(60)]
    producer = make_producer_app(stack.settings)
    for i in ids:
        store_payout(stack.rt, data(i, amount=1_000_000 + len(i)))
        producer.send_task(SUBMIT_TASK, args=[i])
    wait_for(lambda: all(stack.state(i) is State.ACCEPTED for i in ids), 60, what="60 accepted")
    gateway.admin.set_list_filter("ignore_all")
    five_days = f"{stack.rt.store.server_time() - 5 * 86400:.3f}"
    for i in ids:
        stack.redis.hset(keys.order(i), mapping={"created_at": five_days, "submitted_at": five_days})
    before = int(gateway.admin.stats()["requests"].get("query_list", 0))
    # when: the sweep's batch task gets them
    producer.send_task(CHECK_BATCH_TASK, args=[ids])
    # then
    wait_for(lambda: all(stack.state(i) is State.REVIEW for i in ids), 60, what="60 in review")
    calls = int(gateway.admin.stats()["requests"].get("query_list", 0)) - before
    assert calls <= len(ids), f"{calls} list calls for {len(ids)} orders"
    reasons = {stack.rt.store.require(i).reason.split(" (")[0] for i in ids}
    assert reasons == {"open longer than MAX_ORDER_AGE"}
