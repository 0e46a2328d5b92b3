"""``payouts bench``: what durability costs (docs/reliability.md, "Durability").

* :func:`measure_fsync` -- submit throughput (claim, create, record: the whole task through
  a real worker and the sandbox) with the bench Redis at ``appendfsync always`` vs
  ``everysec``, switched with ``CONFIG SET`` between alternating batches of the same run;
  the ratio always / everysec is the price of ``REDIS_DURABILITY=strict`` (target >= 0.9).
* :func:`measure_replica_ack` -- the replica acknowledgement of strict mode with replicas:
  one replica is attached to the bench Redis and the enqueue's create and the claim are
  timed with and without ``WAIT 1`` (``REDIS_REPLICA_ACKS=1``), in alternating slices.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from worker.celeryconf import SUBMIT_QUEUE
from worker.harness.bench.phases import _MOVE_ALL, ACCOUNT, AMOUNT_MINOR, percentiles
from worker.harness.bench.stack import BenchStack
from worker.harness.processes import RedisServer, wait_for
from worker.payout import Payout
from worker.producer import enqueue_payout
from worker.states import State
from worker.store import OrderStore

MODES = ("always", "everysec")


def measure_fsync(
    stack: BenchStack, *, pairs: int, chunk: int, pool: str, concurrency: int
) -> dict[str, Any]:
    """Submit drains at ``appendfsync always`` vs ``everysec``, alternating, one worker."""
    if stack.workers:
        raise RuntimeError("measure_fsync stages its batches with no worker running")
    move = stack.redis.register_script(_MOVE_ALL)
    stages: list[tuple[str, str]] = []
    for k in range(pairs):
        order = MODES if k % 2 == 0 else MODES[::-1]  # neither mode always goes first
        for mode in order:
            stage = stack.new_stage(f"fsync-{mode}")
            for i in range(chunk):
                enqueue_payout(
                    f"fs{mode[0]}-{k}-{i:06d}", AMOUNT_MINOR, "BCA", "Siti Rahma", ACCOUNT, runtime=stack.rt
                )
            move(keys=[SUBMIT_QUEUE, stage])
            stages.append((mode, stage))
    stack.start_worker(pool, concurrency)
    stack.wait_workers_ready()
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    drains = []
    try:
        for mode, stage in stages:
            stack.redis.config_set("appendfsync", mode)
            base = stack.answered_count()
            d = stack.drain(f"submit-{mode}", stage, chunk, lambda b=base: stack.answered_count() - b)  # type: ignore[misc]
            rates[mode].append(d.rate_per_s)
            drains.append(d.as_dict() | {"appendfsync": mode})
    finally:
        stack.redis.config_set("appendfsync", "always")
        stack.stop_workers()
    ratios = [a / e for a, e in zip(rates["always"], rates["everysec"], strict=True) if e > 0]
    return {
        "pool": pool,
        "concurrency": concurrency,
        "submit_per_s_always": round(statistics.median(rates["always"]), 1),
        "submit_per_s_everysec": round(statistics.median(rates["everysec"]), 1),
        "submit_always_vs_everysec": round(statistics.median(ratios), 3) if ratios else 0.0,
        "submit_always_vs_everysec_each": [round(r, 3) for r in ratios],
        "drains": drains,
    }


def measure_fsync_split_broker(
    stack: BenchStack, *, pairs: int, chunk: int, pool: str, concurrency: int
) -> dict[str, Any]:
    """As :func:`measure_fsync`, with the Celery broker on a second Redis (``everysec``):
    only the order store's writes (enqueue, claim, answer) pay the fsync. Safe for
    ``enqueue_payout`` (a lost submit message is re-driven by the sweep from the store),
    not for by-name ``payouts.create`` messages (the order is not stored yet)."""
    from worker.celery_app import make_producer_app
    from worker.celeryconf import SUBMIT_TASK
    from worker.producer import store_payout
    from worker.settings import load_settings

    if stack.workers:
        raise RuntimeError("measure_fsync_split_broker stages its batches with no worker running")
    broker = RedisServer(appendfsync="everysec").start()
    bclient = broker.client()
    try:
        producer = make_producer_app(load_settings(stack.env(concurrency, CELERY_BROKER_URL=broker.url)))
        stages: list[tuple[str, str]] = []
        for k in range(pairs):
            for mode in MODES if k % 2 == 0 else MODES[::-1]:
                stage = stack.new_stage(f"split-{mode}")
                for i in range(chunk):
                    pid = f"sb{mode[0]}-{k}-{i:06d}"
                    data = {
                        "payout_cl_id": pid,
                        "amount": AMOUNT_MINOR,
                        "bank_name": "BCA",
                        "name": "Siti Rahma",
                        "number": ACCOUNT,
                    }
                    store_payout(stack.rt, data)
                    producer.send_task(SUBMIT_TASK, args=[pid])
                bclient.rename(SUBMIT_QUEUE, stage)
                stages.append((mode, stage))
        w = stack.start_worker(pool, concurrency, CELERY_BROKER_URL=broker.url)
        assert w.log_path is not None
        log_path = w.log_path
        wait_for(lambda: b" ready." in log_path.read_bytes(), 90, what="the split-broker worker")
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        for mode, stage in stages:
            stack.redis.config_set("appendfsync", mode)
            base = stack.answered_count()
            t0 = time.perf_counter()
            bclient.rename(stage, SUBMIT_QUEUE)
            wait_for(lambda b=base: stack.answered_count() - b >= chunk, 300, interval_s=0.01, what="drain")  # type: ignore[misc]
            rates[mode].append(chunk / (time.perf_counter() - t0))
    finally:
        stack.redis.config_set("appendfsync", "always")
        stack.stop_workers()
        bclient.close()
        broker.cleanup()
    ratios = [a / e for a, e in zip(rates["always"], rates["everysec"], strict=True) if e > 0]
    return {
        "submit_per_s_always": round(statistics.median(rates["always"]), 1),
        "submit_per_s_everysec": round(statistics.median(rates["everysec"]), 1),
        "submit_always_vs_everysec": round(statistics.median(ratios), 3) if ratios else 0.0,
        "submit_always_vs_everysec_each": [round(r, 3) for r in ratios],
    }


def measure_replica_ack(stack: BenchStack, *, n: int, slice_n: int = 50) -> dict[str, Any]:
    """Per-call latency of the enqueue's create and of the claim, without and with WAIT 1."""
    assert stack.redis_server is not None
    replica = RedisServer(replicaof=("127.0.0.1", stack.redis_server.port)).start()
    try:

        def online() -> bool:
            stack.redis.set("payouts:bench:probe", "1")
            return int(stack.redis.wait(1, 200)) >= 1

        wait_for(online, 60, what="the bench replica to sync")
        ring = stack.rt.store.pii_keys
        plain = OrderStore(stack.rt.redis, pii_keys=ring)
        acked = OrderStore(stack.rt.redis, pii_keys=ring, replica_acks=1, replica_ack_timeout_s=2.0)
        times: dict[str, list[float]] = {"create": [], "create_acked": [], "claim": [], "claim_acked": []}
        done = 0
        k = 0
        while done < n:
            for name, store in (
                (("", plain), ("_acked", acked)) if k % 2 == 0 else (("_acked", acked), ("", plain))
            ):
                ids = [f"ra{name or '_plain'}-{k}-{i:05d}" for i in range(slice_n)]
                for pid in ids:
                    p = Payout(pid, AMOUNT_MINOR, "BCA", "Siti Rahma", ACCOUNT)
                    t = time.perf_counter()
                    store.create(p, due_at=time.time() + 3600)
                    times["create" + name].append(time.perf_counter() - t)
                for pid in ids:
                    t = time.perf_counter()
                    store.transition(
                        pid,
                        State.SUBMITTING,
                        sources={State.RECEIVED},
                        reason="bench claim",
                        due=time.time() + 3600,
                        guard=True,
                        replicated=True,
                    )
                    times["claim" + name].append(time.perf_counter() - t)
            done += slice_n
            k += 1
        out: dict[str, Any] = {name: percentiles(v) for name, v in times.items()}
        for what in ("create", "claim"):
            base = statistics.median(times[what])
            out[f"{what}_ack_added_ms_p50"] = round(
                1000 * (statistics.median(times[what + "_acked"]) - base), 3
            )
            out[f"{what}_acked_vs_plain_rate"] = round(base / statistics.median(times[what + "_acked"]), 3)
        out["n"] = done
        return out
    finally:
        replica.cleanup()
        stack.redis.delete("payouts:bench:probe")
