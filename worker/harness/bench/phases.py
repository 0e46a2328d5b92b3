"""The measurements of ``payouts bench``; each returns a JSON-ready dict.

Every ratio is taken between figures measured in the same run, side by side (the
bench machine is shared, so absolute rates move between runs more than ratios do).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from worker import keys
from worker.celeryconf import CHECK_QUEUE, SUBMIT_QUEUE, SUBMIT_TASK
from worker.harness.bench.loader import BulkLoader, OrderTemplate, synthetic_template, template_from_store
from worker.harness.bench.stack import BenchStack, Drain, process_cpu_s, worker_env
from worker.harness.processes import RedisServer, wait_for
from worker.runtime import Runtime, build_runtime, get_runtime, set_runtime
from worker.settings import load_settings
from worker.states import FINAL, State

ACCOUNT = "8800112233445566"
AMOUNT_MINOR = 5_000_000
#: the gateway latency of step 3, and the fault rule that makes it
LATENCY_S = 0.2
LATENCY_RULE = {"kind": "latency", "seconds": LATENCY_S, "endpoints": ["create"], "name": "bench latency"}


def payout_data(payout_cl_id: str) -> dict[str, Any]:
    return {
        "payout_cl_id": payout_cl_id,
        "amount": AMOUNT_MINOR,
        "bank_name": "BCA",
        "name": "Siti Rahma",
        "number": ACCOUNT,
    }


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank) and max, in milliseconds."""
    if not values:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "n": 0}
    data = sorted(values)

    def rank(q: float) -> float:
        return data[min(len(data) - 1, max(0, round(q * len(data)) - 1))]

    return {
        "p50_ms": round(1000 * rank(0.50), 1),
        "p95_ms": round(1000 * rank(0.95), 1),
        "p99_ms": round(1000 * rank(0.99), 1),
        "max_ms": round(1000 * data[-1], 1),
        "n": len(data),
    }


def redis_data_bytes(client: redis.Redis) -> int:
    """``used_memory`` less client buffers and the AOF buffer (they come and go with load)."""
    info = client.info("memory")
    return (
        int(info["used_memory"]) - int(info.get("mem_clients_normal", 0)) - int(info.get("mem_aof_buffer", 0))
    )


# -- step 1-2: producer side, then noop vs submit drains -------------------------


@dataclass
class Staged:
    noop: list[str]
    submit: list[str]
    submit_ids: list[str]
    #: Redis data bytes before anything was enqueued
    mem_before: int = 0


#: moves every message of one list onto another, oldest first (bench bookkeeping only)
_MOVE_ALL = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n
"""

#: producer calls per timed slice; delay() and enqueue_payout() slices alternate
PRODUCER_SLICE = 100


def measure_producer(stack: BenchStack, *, chunks: int, chunk: int) -> tuple[dict[str, Any], Staged]:
    """``noop.delay()`` vs ``enqueue_payout()``, in alternating slices, no worker running.

    Slices of :data:`PRODUCER_SLICE` calls alternate (the machine is shared: load
    changes within seconds), after a warm-up of both. The messages are moved to staging
    queues, one per chunk: the noop chunks become the baseline batches, the enqueued
    orders the submit batches of :func:`measure_drains`.
    """
    from worker.producer import enqueue_payout
    from worker.tasks.bench import noop

    if stack.workers:
        raise RuntimeError("measure_producer needs the submit queue to itself")
    move = stack.redis.register_script(_MOVE_ALL)

    def enqueue(pid: str) -> None:
        enqueue_payout(pid, AMOUNT_MINOR, "BCA", "Siti Rahma", ACCOUNT, runtime=stack.rt)

    for i in range(50):  # warm-up: connections, script cache, code paths
        noop.delay(f"warm-{i}")
        enqueue(f"warm-{i:06d}")
    stack.redis.delete(SUBMIT_QUEUE)
    staged = Staged([], [], [], redis_data_bytes(stack.redis))
    pairs: list[tuple[float, float]] = []
    cpu_delay = cpu_enqueue = 0.0
    for k in range(chunks):
        noop_stage, submit_stage = stack.new_stage("noop"), stack.new_stage("submit")
        for j in range(0, chunk, PRODUCER_SLICE):
            n = min(PRODUCER_SLICE, chunk - j)
            c, t = time.process_time(), time.perf_counter()
            for i in range(j, j + n):
                noop.delay(f"noop-{k}-{i:06d}")
            t_delay, c_delay = time.perf_counter() - t, time.process_time() - c
            move(keys=[SUBMIT_QUEUE, noop_stage])
            ids = [f"sub-{k}-{i:06d}" for i in range(j, j + n)]
            c, t = time.process_time(), time.perf_counter()
            for pid in ids:
                enqueue(pid)
            t_enq, c_enq = time.perf_counter() - t, time.process_time() - c
            move(keys=[SUBMIT_QUEUE, submit_stage])
            staged.submit_ids.extend(ids)
            pairs.append((n / t_delay, n / t_enq))
            cpu_delay += c_delay
            cpu_enqueue += c_enq
        staged.noop.append(noop_stage)
        staged.submit.append(submit_stage)
    total = chunks * chunk
    delay_rate = statistics.median(d for d, _ in pairs)
    enqueue_rate = statistics.median(e for _, e in pairs)
    return {
        "n": total,
        "slices": len(pairs),
        "delay_per_s": round(delay_rate, 1),
        "enqueue_per_s": round(enqueue_rate, 1),
        # median of the per-slice ratios: each pair ran within a fraction of a second
        "enqueue_vs_delay": round(statistics.median(e / d for d, e in pairs), 3),
        "delay_cpu_ms": round(1000 * cpu_delay / total, 3),
        "enqueue_cpu_ms": round(1000 * cpu_enqueue / total, 3),
        "enqueue_vs_delay_cpu": round(cpu_delay / cpu_enqueue, 3),
    }, staged


def measure_drains(
    stack: BenchStack, staged: Staged, *, chunk: int, pool: str, concurrency: int
) -> dict[str, Any]:
    """Alternate noop and submit batches through one worker; ratios per pair."""
    stack.start_worker(pool, concurrency)
    stack.wait_workers_ready()
    pairs: list[tuple[Drain, Drain]] = []
    for noop_stage, submit_stage in zip(staged.noop, staged.submit, strict=True):
        d_noop = stack.drain("noop", noop_stage, chunk, lambda: chunk - stack.queue_left())
        base = stack.answered_count()
        d_sub = stack.drain("submit", submit_stage, chunk, lambda b=base: stack.answered_count() - b)  # type: ignore[misc]
        pairs.append((d_noop, d_sub))
    wait_for(lambda: stack.queue_left() == 0, 30, what="the submit queue to empty")
    mem_after = redis_data_bytes(stack.redis)
    n_orders = len(staged.submit_ids)
    ratios = [s.rate_per_s / n.rate_per_s for n, s in pairs]
    noop_rate = statistics.median(n.rate_per_s for n, _ in pairs)
    submit_rate = statistics.median(s.rate_per_s for _, s in pairs)
    return {
        "pool": pool,
        "concurrency": concurrency,
        "noop_tasks_per_s": round(noop_rate, 1),
        "submit_per_s": round(submit_rate, 1),
        "submit_vs_noop": round(statistics.median(ratios), 3),
        "submit_vs_noop_each": [round(r, 3) for r in ratios],
        # the same ratio from worker CPU per task: steadier on a shared machine
        "submit_vs_noop_cpu": round(
            statistics.median(n.cpu_ms_per_task / s.cpu_ms_per_task for n, s in pairs), 3
        ),
        "noop_cpu_ms": round(statistics.median(n.cpu_ms_per_task for n, _ in pairs), 3),
        "cpu_ms_per_payout": round(statistics.median(s.cpu_ms_per_task for _, s in pairs), 3),
        "drains": [d.as_dict() for pair in pairs for d in pair],
        # every enqueued order is now accepted, with its history and events: the real layout
        "redis_bytes_per_order_e2e": round((mem_after - staged.mem_before) / n_orders, 1),
    }


# -- step 2: latency from enqueue to accepted and to final -----------------------


def wait_final(stack: BenchStack, ids: Sequence[str], timeout_s: float) -> float:
    """Seconds until every id is final (polls states in one pipeline)."""
    t0 = time.perf_counter()
    finals = {s.value for s in FINAL}

    def all_final() -> bool:
        pipe = stack.redis.pipeline(transaction=False)
        for i in ids:
            pipe.hget(keys.order(i), "state")
        return all(s in finals for s in pipe.execute())

    wait_for(all_final, timeout_s, interval_s=0.1, what="orders to reach a final state")
    return time.perf_counter() - t0


def history_times(stack: BenchStack, ids: Sequence[str]) -> tuple[list[float], list[float]]:
    """(enqueue -> accepted, enqueue -> final) seconds of each order, from its history."""
    pipe = stack.redis.pipeline(transaction=False)
    for i in ids:
        pipe.lrange(keys.history(i), 0, -1)
    to_accepted: list[float] = []
    to_final: list[float] = []
    finals = {s.value for s in FINAL}
    import json

    for raw in pipe.execute():
        entries = [json.loads(h) for h in raw]
        if not entries:
            continue
        t0 = float(entries[0]["at"])
        acc = next((e for e in entries if e["to"] == State.ACCEPTED.value), None)
        fin = next((e for e in entries if e["to"] in finals), None)
        if acc is not None:
            to_accepted.append(float(acc["at"]) - t0)
        if fin is not None:
            to_final.append(float(fin["at"]) - t0)
    return to_accepted, to_final


def measure_latency(
    stack: BenchStack, *, rate_per_s: float, seconds: float, prefix: str = "lat"
) -> dict[str, Any]:
    """Enqueue at a steady ``rate_per_s`` (worker and beat running); time each order."""
    from worker.producer import enqueue_payout

    ids: list[str] = []
    t0 = time.perf_counter()
    n = max(20, int(rate_per_s * seconds))
    for i in range(n):
        wait = t0 + i / rate_per_s - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        pid = f"{prefix}-{i:06d}"
        enqueue_payout(pid, AMOUNT_MINOR, "BCA", "Siti Rahma", ACCOUNT, runtime=stack.rt)
        ids.append(pid)
    offered = n / (time.perf_counter() - t0)
    wait_final(stack, ids, timeout_s=120)
    to_acc, to_fin = history_times(stack, ids)
    return {
        "offered_per_s": round(offered, 1),
        "n": n,
        "enqueue_to_accepted": percentiles(to_acc),
        "enqueue_to_final": percentiles(to_fin),
    }


def measure_reconcile_backlog(stack: BenchStack, ids: Sequence[str]) -> dict[str, Any]:
    """Start beat with ``ids`` accepted (and due); how fast do they all become final?"""
    stack.start_beat()
    seconds = wait_final(stack, ids, timeout_s=300)
    return {"n": len(ids), "seconds": round(seconds, 2), "final_per_s": round(len(ids) / seconds, 1)}


# -- step 3: 200 ms gateway latency, per pool --------------------------------------


def stage_orders(stack: BenchStack, ids: Sequence[str]) -> str:
    """Store ``ids`` and publish their submit messages into a fresh staging queue."""
    from worker.celery_app import app
    from worker.producer import store_payout

    stage = stack.new_stage("submit")
    with app.producer_or_acquire() as producer:
        for pid in ids:
            store_payout(stack.rt, payout_data(pid))
            app.send_task(SUBMIT_TASK, args=[pid], queue=stage, producer=producer)
    return stage


def measure_pool(
    stack: BenchStack,
    *,
    pool: str,
    concurrency: int,
    processes: int,
    ceiling_per_s: float,
    latency_s: float,
    window_s: float,
    prefix: str,
) -> dict[str, Any]:
    """Drain a batch of submits through ``processes`` workers of ``pool``/``concurrency``.

    ideal = processes x min(concurrency / latency, ceiling): in-flight limit or CPU limit.
    """
    per_process = concurrency / latency_s if latency_s > 0 else float("inf")
    ideal = processes * min(per_process, ceiling_per_s)
    n = max(40, int(ideal * window_s))
    ids = [f"{prefix}-{i:06d}" for i in range(n)]
    stage = stage_orders(stack, ids)
    stack.stop_workers()
    for _ in range(processes):
        stack.start_worker(pool, concurrency)
    stack.wait_workers_ready()
    base = stack.answered_count()
    d = stack.drain(
        f"{pool}-{concurrency}x{processes}",
        stage,
        n,
        lambda: stack.answered_count() - base,
        timeout_s=60 + 5 * n / ideal,
    )
    return {
        "pool": pool,
        "concurrency": concurrency,
        "processes": processes,
        "gateway_latency_ms": round(1000 * latency_s),
        "n": n,
        "payouts_per_s": round(d.rate_per_s, 1),
        "ideal_per_s": round(ideal, 1),
        "ratio_to_ideal": round(d.rate_per_s / ideal, 3),
        "cpu_ms_per_payout": round(d.cpu_ms_per_task, 3),
        "worker_cpu_util": round(d.worker_cpu_util, 2),
        "sandbox_cpu_util": round(d.others_cpu_util.get("sandbox", 0.0), 2),
        "redis_cpu_util": round(d.others_cpu_util.get("redis", 0.0), 2),
    }


# -- step 4-5: the sweep and memory, on a second Redis ------------------------------


def _sweep_runtime(url: str, gateway_url: str) -> Runtime:
    # AOF off on purpose (what is measured is the sweep, not persistence)
    return build_runtime(load_settings({**worker_env(url, gateway_url, 8), "REDIS_DURABILITY": "relaxed"}))


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def measure_sweep(
    stack: BenchStack, *, big: int, small: int, ticks: int, due: int, template: OrderTemplate | None
) -> dict[str, Any]:
    """Sweep tick with ``small`` vs ``big`` open-not-due orders; dispatching ``due`` due ones.

    Runs on its own Redis (AOF off: loading a million orders is not what is measured),
    db 0 with ``big`` orders, db 1 with ``small``; the dispatch publishes to the bench
    broker exactly as the ``payouts.sweep`` task does, with no worker running.
    """
    from worker.tasks.payouts import sweep

    if stack.workers:
        raise RuntimeError("measure_sweep publishes to the bench broker: stop the workers first")
    template = template or synthetic_template()
    server = RedisServer(appendonly=False).start()
    prev_rt = get_runtime()
    rts: list[Runtime] = []
    try:
        url_big, url_small = server.url, server.url[: -len("/0")] + "/1"
        rt_big = _sweep_runtime(url_big, stack.gateway_url)
        rt_small = _sweep_runtime(url_small, stack.gateway_url)
        rts += [rt_big, rt_small]
        later = time.time() + 86400.0
        mem0 = redis_data_bytes(rt_big.redis)
        t = time.perf_counter()
        BulkLoader(rt_big.redis).load(template, id_prefix="nd-", first=0, count=big, due_at=later)
        load_s = time.perf_counter() - t
        mem1 = redis_data_bytes(rt_big.redis)
        # the permanent tombstone of each id (payouts:ids, D1): what outlives retention
        stamp_s = str(int(time.time()))
        for lo in range(0, big, 10_000):
            pipe = rt_big.redis.pipeline(transaction=False)
            for n in range(lo, min(big, lo + 10_000)):
                pipe.hset(keys.IDS, f"nd-{n:09d}", stamp_s)
            pipe.execute()
        tombstone_bytes = (redis_data_bytes(rt_big.redis) - mem1) / big
        BulkLoader(rt_small.redis).load(template, id_prefix="nd-", first=0, count=small, due_at=later)
        # side by side: alternate the two stores, after a warm-up of each
        from worker.sweep import sweep_due

        timed(lambda: sweep_due(rt_small), 20)
        timed(lambda: sweep_due(rt_big), 20)
        t_small: list[float] = []
        t_big: list[float] = []
        for _ in range(ticks):
            t_small += timed(lambda: sweep_due(rt_small), 1)
            t_big += timed(lambda: sweep_due(rt_big), 1)
        med_small, med_big = statistics.median(t_small), statistics.median(t_big)

        # dispatch: `due` accepted orders due now among the `big` not-due ones
        past = time.time() - 5.0
        loader = BulkLoader(rt_big.redis)
        loader.load(template, id_prefix="due-", first=0, count=due, due_at=past)
        set_runtime(rt_big)
        broker = stack.redis
        t = time.perf_counter()
        summary = sweep.run()
        dispatch_s = time.perf_counter() - t
        published_check = int(broker.llen(CHECK_QUEUE))
        broker.delete(CHECK_QUEUE)
        # the same for orders whose submit message was lost: one submit message each
        loader.load(template, id_prefix="rd-", first=0, count=due, due_at=past, state=State.RECEIVED.value)
        t = time.perf_counter()
        summary_rd = sweep.run()
        redrive_s = time.perf_counter() - t
        published_submit = int(broker.llen("payouts"))
        broker.delete("payouts")
        return {
            "not_due_big": big,
            "not_due_small": small,
            "ticks": ticks,
            "tick_ms_1k": round(1000 * med_small, 3),
            "tick_ms_1m": round(1000 * med_big, 3),
            "tick_p95_ms_1k": round(1000 * sorted(t_small)[int(0.95 * len(t_small))], 3),
            "tick_p95_ms_1m": round(1000 * sorted(t_big)[int(0.95 * len(t_big))], 3),
            "sweep_tick_ratio_1m_vs_1k": round(med_big / med_small, 3),
            "load_1m_s": round(load_s, 2),
            "redis_bytes_per_order": round((mem1 - mem0) / big, 1),
            "tombstone_bytes_per_id": round(tombstone_bytes, 1),
            "dispatch_due": due,
            "dispatch_10k_due_s": round(dispatch_s, 3),
            "dispatch_summary": summary,
            "dispatch_messages": published_check,
            "redrive_10k_due_s": round(redrive_s, 3),
            "redrive_summary": summary_rd,
            "redrive_messages": published_submit,
            "template": "real accepted order" if template.fields.get("answered_at") else "synthetic",
        }
    finally:
        set_runtime(prev_rt)
        for rt in rts:
            rt.close()
        server.cleanup()


def real_template(stack: BenchStack, payout_cl_id: str) -> OrderTemplate | None:
    return template_from_store(stack.rt.store, payout_cl_id)


# -- backlog: an import far above the gateway's rate (D17) ---------------------------

#: production-like timers for the backlog phase (the other phases use bench timers)
BACKLOG_ENV = {
    "SWEEP_INTERVAL": "10",
    "CHECK_INTERVAL_MIN": "10",
    "CHECK_INTERVAL_MAX": "60",
    "SUBMIT_REDRIVE_AFTER": "60",
    "UNCONFIRMED_FIRST_CHECK": "5",
}


def broker_messages(client: redis.Redis) -> int:
    """Messages queued (submit and check queues) plus reserved, not yet acked."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(SUBMIT_QUEUE)
    pipe.llen(CHECK_QUEUE)
    pipe.hlen("unacked")
    return sum(int(x) for x in pipe.execute())


def _still_open(client: redis.Redis, ids: Sequence[str], chunk: int = 5000) -> int:
    """How many of ``ids`` are not final (pipelined, ``chunk`` per round trip)."""
    finals = {s.value for s in FINAL}
    left = 0
    for i in range(0, len(ids), chunk):
        pipe = client.pipeline(transaction=False)
        for pid in ids[i : i + chunk]:
            pipe.hget(keys.order(pid), "state")
        left += sum(1 for st in pipe.execute() if st not in finals)
    return left


def measure_backlog(
    stack: BenchStack,
    *,
    n: int,
    rps: float,
    concurrency: int = 16,
    prefix: str = "bl",
    timers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``n`` orders enqueued at once (an import), one worker at ``GATEWAY_MAX_RPS=rps``.

    Samples every 0.5 s: broker messages, open orders, Redis memory. Figures: the peak
    of broker messages / open orders (target <= 1.1), memory growth after the import
    beyond what it stored (target ~0), gateway requests per order, and the create rate
    (orders answered / s while draining) / rps (target >= 0.9).
    """
    from worker.producer import enqueue_payout

    if stack.workers or stack.beat is not None:
        raise RuntimeError("measure_backlog needs the broker to itself")
    assert stack.sandbox is not None and stack.sandbox.admin is not None
    timers = timers or BACKLOG_ENV
    env = {**timers, "GATEWAY_MAX_RPS": repr(float(rps))}
    rt = build_runtime(load_settings(stack.env(concurrency, **env)))
    stop_sweep = threading.Event()
    interval = float(timers.get("SWEEP_INTERVAL", "10"))
    sweeper: threading.Thread | None = None
    try:
        mem0 = redis_data_bytes(stack.redis)
        t = time.perf_counter()
        ids = [f"{prefix}-{i:07d}" for i in range(n)]
        for pid in ids:
            enqueue_payout(pid, AMOUNT_MINOR, "BCA", "Siti Rahma", ACCOUNT, runtime=rt)
        enqueue_s = time.perf_counter() - t
        mem1 = redis_data_bytes(stack.redis)
        before = stack.sandbox.admin.stats()["requests"]
        answered0 = stack.answered_count()
        finals0 = sum(int(x or 0) for x in stack.redis.hmget(keys.COUNTS, [s.value for s in FINAL]))
        stack.start_worker("threads", concurrency, **env)

        # beat's part, in this process at the phase's SWEEP_INTERVAL: the sweep task's body
        # (lease, route, publish) as the worker runs it, with the phase's settings
        def beat() -> None:
            from worker.tasks.payouts import sweep

            prev = get_runtime()
            set_runtime(rt)
            try:
                while not stop_sweep.wait(interval):
                    sweep.run()
            finally:
                set_runtime(prev)

        sweeper = threading.Thread(target=beat, name="bench-backlog-sweep", daemon=True)
        sweeper.start()
        t0 = time.perf_counter()
        peak_msgs, peak_ratio, peak_mem = 0, 0.0, mem1
        t_answered: float | None = None
        samples = 0
        deadline = t0 + n / rps * 3 + 300
        while True:
            msgs = broker_messages(stack.redis)
            open_n = n - (
                sum(int(x or 0) for x in stack.redis.hmget(keys.COUNTS, [s.value for s in FINAL])) - finals0
            )
            peak_msgs = max(peak_msgs, msgs)
            if open_n >= max(1, n // 10):
                peak_ratio = max(peak_ratio, msgs / open_n)
            peak_mem = max(peak_mem, redis_data_bytes(stack.redis))
            samples += 1
            if t_answered is None and stack.answered_count() - answered0 >= n:
                t_answered = time.perf_counter() - t0
            if open_n <= 0:
                # the counts also move for older orders of earlier phases: ask ours
                open_n = _still_open(stack.redis, ids)
                if open_n == 0:
                    break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"backlog not drained: {open_n} of {n} open after {deadline - t0:.0f}s")
            time.sleep(0.5)
        final_s = time.perf_counter() - t0
        after = stack.sandbox.admin.stats()["requests"]
        delta = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in after}
        # create requests for our ids (the ledger counts per id): 1 each, or a duplicate
        per_id = stack.sandbox.admin.ledger()["create_requests"]
        ours = [int(c.get("total", 0)) for pid, c in per_id.items() if pid.startswith(f"{prefix}-")]
        answered_s = t_answered or final_s
        return {
            "n": n,
            "rps": rps,
            "concurrency": concurrency,
            "timers": timers,
            "enqueue_s": round(enqueue_s, 1),
            "peak_broker_messages": peak_msgs,
            "peak_messages_per_order": round(peak_msgs / n, 3),
            "peak_messages_per_open_order": round(peak_ratio, 3),
            "redis_bytes_per_order_stored": round((mem1 - mem0) / n, 1),
            "redis_growth_after_import_bytes": peak_mem - mem1,
            "redis_growth_per_order": round((peak_mem - mem1) / n, 1),
            "gateway_requests": delta,
            "gateway_requests_per_order": round(sum(delta.values()) / n, 3),
            "creates_per_order": round(sum(ours) / n, 3),
            "orders_created_twice": sum(1 for c in ours if c > 1),
            "answered_s": round(answered_s, 1),
            "final_s": round(final_s, 1),
            "ideal_s": round(n / rps, 1),
            "drain_vs_rate": round((n / answered_s) / rps, 3),
            "final_vs_rate": round((n / final_s) / rps, 3),
            "samples": samples,
            "sweep": "in the bench process every SWEEP_INTERVAL (the task body, as beat + a worker run it)",
        }
    finally:
        stop_sweep.set()
        if sweeper is not None:
            sweeper.join(interval + 30)
        stack.stop_workers()
        rt.close()


# -- end to end: enqueue -> final with callbacks, one worker ---------------------------


def measure_e2e(stack: BenchStack, *, n: int, concurrency: int = 16, prefix: str = "e2e") -> dict[str, Any]:
    """``n`` staged payouts to a final state on an instant sandbox with callbacks on (the
    receiver under gunicorn, as in production), rate limit off, one ``threads -c
    concurrency`` worker; against ``n`` bare no-op tasks through the same worker.

    ``final_vs_noop`` = orders reaching a final state per second (10 %..90 %) / no-op
    tasks per second, both measured here, one after the other.
    """
    from worker.celery_app import app
    from worker.harness.processes import free_port
    from worker.harness.receiver import GunicornReceiver
    from worker.tasks.bench import noop

    if stack.workers:
        raise RuntimeError("measure_e2e needs the broker to itself")
    port = free_port()
    notify = f"http://127.0.0.1:{port}/payouts/notify"
    env = {"GATEWAY_MAX_RPS": "0", "PAYOUT_NOTIFY_URL": notify}
    receiver = GunicornReceiver(stack.env(8), port, stack.workdir / "receiver.log").start()
    try:
        noop_stage = stack.new_stage("noop")
        with app.producer_or_acquire() as producer:
            for i in range(n):
                noop.apply_async((f"{prefix}-noop-{i}",), queue=noop_stage, producer=producer)
        ids = [f"{prefix}-{i:06d}" for i in range(n)]
        submit_stage = stage_orders(stack, ids)
        stack.start_worker("threads", concurrency, **env)
        stack.wait_workers_ready()
        d_noop = stack.drain("noop", noop_stage, n, lambda: n - stack.queue_left())
        finals = [s.value for s in FINAL]

        def final_count() -> int:
            return sum(int(x or 0) for x in stack.redis.hmget(keys.COUNTS, finals))

        base = final_count()
        d_e2e = stack.drain("e2e", submit_stage, n, lambda: final_count() - base, timeout_s=60 + n / 20)
        receiver_cpu = 0.0
        if receiver.web.proc is not None:
            import psutil

            p = psutil.Process(receiver.web.proc.pid)
            receiver_cpu = sum(process_cpu_s([c]) for c in [p, *p.children(recursive=True)])
        return {
            "n": n,
            "concurrency": concurrency,
            "noop_tasks_per_s": round(d_noop.rate_per_s, 1),
            "final_per_s": round(d_e2e.rate_per_s, 1),
            "final_vs_noop": round(d_e2e.rate_per_s / d_noop.rate_per_s, 3),
            "done": d_e2e.done,
            "worker_cpu_ms_per_order": round(d_e2e.cpu_ms_per_task, 3),
            "noop_cpu_ms": round(d_noop.cpu_ms_per_task, 3),
            "receiver_cpu_ms_per_order_total": round(1000 * receiver_cpu / n, 3),
            "drains": [d_noop.as_dict(), d_e2e.as_dict()],
        }
    finally:
        stack.stop_workers()
        receiver.stop()
