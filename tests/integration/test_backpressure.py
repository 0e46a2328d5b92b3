"""Backpressure with real workers, beat, Redis and the sandbox over HTTP: an import far
larger than the gateway's rate drains at the rate with at most about one broker message
per open order, and a worker that stops consuming fails its own health check."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

from tests.helpers import Stack
from worker.celeryconf import CHECK_QUEUE, SUBMIT_QUEUE
from worker.harness.processes import wait_for
from worker.producer import enqueue_payout
from worker.sandbox.process import SandboxProcess
from worker.states import FINAL, State

N = 2000
RPS = 20


def broker_messages(stack: Stack) -> int:
    """Messages queued or reserved (kombu's ``unacked`` hash) on the broker."""
    pipe = stack.redis.pipeline(transaction=False)
    pipe.llen(SUBMIT_QUEUE)
    pipe.llen(CHECK_QUEUE)
    pipe.hlen("unacked")
    return sum(int(x) for x in pipe.execute())


def test_an_import_at_the_rate_limit_keeps_one_message_per_order(
    make_stack: Any, gateway: SandboxProcess
) -> None:
    """2,000 orders at GATEWAY_MAX_RPS=20: the broker never holds more than 1.1 messages
    per open order, the gateway gets one create per order, and every order ends final
    in about N / rate (D17)."""
    # given: callbacks settle orders; checks only for the ones they miss
    stack = make_stack(gateway.url, GATEWAY_MAX_RPS=str(RPS), SWEEP_INTERVAL="1", CHECK_INTERVAL_MIN="5")
    stack.start_callbacks()
    stack.start_worker(concurrency=8)
    stack.start_beat()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], broker_messages(stack))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ids = [f"BP-{k:05d}" for k in range(N)]
    # when
    t0 = time.monotonic()
    for pid in ids:
        enqueue_payout(pid, 5_000_000, "BCA", "Siti Rahma", "8800112233445566", runtime=stack.rt)
    finals = {s.value for s in FINAL}

    def all_final() -> bool:
        pipe = stack.redis.pipeline(transaction=False)
        for pid in ids:
            pipe.hget(f"payouts:order:{pid}", "state")
        return all(s in finals for s in pipe.execute())

    try:
        wait_for(all_final, N / RPS * 2.2 + 60, interval_s=1.0, what="every order final")
    finally:
        stop.set()
        sampler.join(5)
    drain_s = time.monotonic() - t0
    # then
    assert peak[0] / N <= 1.1, f"peak {peak[0]} broker messages for {N} orders"
    ledger = gateway.admin.ledger()
    creates = ledger["totals"]["create_requests"]
    assert creates == N, f"{creates} create requests for {N} orders"
    assert drain_s >= N / RPS * 0.9, "faster than the rate limit allows: the limit was not applied"
    states = stack.rt.store.counts()
    assert states[State.SUCCEEDED.value] + states[State.FAILED.value] == N


def health(stack: Stack, worker: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.ops.health",
            "--worker",
            worker,
            "--max-heartbeat-age",
            "3",
            "--wait",
            "4",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_fails_for_the_one_worker_that_stopped_consuming(
    make_stack: Any, gateway: SandboxProcess
) -> None:
    """Two workers; one stops consuming (frozen) while its peer goes on: `payouts health
    --worker` fails for that one only, and passes again once it consumes (D25)."""
    # given
    stack = make_stack(gateway.url)
    stack.start_callbacks()
    stuck, peer = stack.start_worker(concurrency=2), stack.start_worker(concurrency=2)
    wait_for(
        lambda: health(stack, stuck.nodename).returncode == 0, 60, interval_s=1, what="first worker healthy"
    )
    assert health(stack, peer.nodename).returncode == 0
    # when: the first worker stops consuming; the peer goes on with new work
    stuck.freeze()
    try:
        time.sleep(3.5)
        enqueue_payout("HB-1", 5_000_000, "BCA", "Siti Rahma", "8800112233445566", runtime=stack.rt)
        stack.wait_state("HB-1", State.ACCEPTED, State.SUCCEEDED, State.FAILED, timeout_s=30)
        frozen, alive = health(stack, stuck.nodename), health(stack, peer.nodename)
    finally:
        stuck.thaw()
    # then
    assert frozen.returncode == 1, frozen.stdout + frozen.stderr
    assert f"worker {stuck.nodename}" in frozen.stdout and "unhealthy" in frozen.stdout
    assert alive.returncode == 0, alive.stdout + alive.stderr
    # and: consuming again, it recovers
    wait_for(
        lambda: health(stack, stuck.nodename).returncode == 0, 60, interval_s=1, what="thawed worker healthy"
    )
