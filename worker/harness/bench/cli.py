"""``payouts bench``: throughput, latency, sweep cost and memory, measured in one run.

Starts its own Redis (AOF on), sandbox gateway, workers and beat, then measures:

1. the no-op task rate of the same broker and pool (the baseline);
2. enqueue rate vs bare ``delay()``, submit rate, enqueue -> accepted / final latency;
3. with 200 ms gateway latency on create: throughput per pool and concurrency, as a
   ratio to min(concurrency / latency, CPU ceiling), and 1 vs 2 worker processes;
4. the sweep tick with 1,000 vs 1,000,000 open-not-due orders, and dispatching 10,000
   due ones;
5. Redis bytes per stored order and worker CPU per payout;
6. durability: submit throughput at ``appendfsync always`` vs ``everysec`` (alternating
   batches, one run) and the latency a replica acknowledgement (``WAIT 1``) adds to the
   enqueue's create and to the claim (worker/harness/bench/durability.py);
7. personal data sealed vs in plain text: enqueue and submit throughput in alternating
   slices (worker/harness/bench/pii.py).

``--quick`` (``make bench``) runs every step with smaller batches in under 3 minutes
and writes the same keys. Method and the last figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: step 3 configurations: (pool, concurrency); the first is the recommended default
POOLS_FULL: tuple[tuple[str, int], ...] = (
    ("threads", 64),
    ("threads", 32),
    ("gevent", 100),
    ("prefork", 4),
    ("prefork", 8),
)
POOLS_QUICK: tuple[tuple[str, int], ...] = (("threads", 64), ("gevent", 100), ("prefork", 4))
#: the pool and concurrency of steps 1-2 (the same for the no-op baseline and submit)
BASE_POOL = ("threads", 32)


@dataclass(frozen=True)
class Plan:
    """Batch sizes of one run."""

    chunks: int
    chunk: int
    latency_seconds: float
    pool_window_s: float
    pools: tuple[tuple[str, int], ...]
    sweep_big: int
    sweep_small: int
    sweep_ticks: int
    due: int
    #: the backlog phase: orders enqueued at once, at this GATEWAY_MAX_RPS
    backlog: int = 20_000
    backlog_rps: float = 50.0
    backlog_timers: tuple[tuple[str, str], ...] = ()
    #: the end-to-end phase: orders to final with callbacks, one threads -c 16 worker
    e2e: int = 1_500
    #: sealed vs plain: slice pairs of 20 enqueues and 20 submits each
    pii_slices: int = 50

    @classmethod
    def of(cls, quick: bool, tiny: bool = False) -> Plan:
        if tiny:  # the smoke test: every step, tiny batches (the 1M sweep becomes 20k)
            fast = (("SWEEP_INTERVAL", "1"), ("CHECK_INTERVAL_MIN", "1"), ("CHECK_INTERVAL_MAX", "5"))
            return cls(
                2,
                150,
                1.0,
                0.5,
                (("threads", 8), ("gevent", 20)),
                20_000,
                1_000,
                50,
                1_000,
                200,
                100.0,
                fast,
                150,
                4,
            )
        if quick:
            return cls(4, 400, 3.0, 3.0, POOLS_QUICK, 1_000_000, 1_000, 300, 10_000, 20_000, pii_slices=25)
        return cls(4, 2000, 10.0, 8.0, POOLS_FULL, 1_000_000, 1_000, 1000, 10_000, 100_000)


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    from worker.harness.processes import redis_server_binary

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import subprocess

    try:
        out = subprocess.run(  # noqa: S603 - our own redis-server binary, fixed arguments
            [redis_server_binary(), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        redis_version = next((p.split("=", 1)[1] for p in out.split() if p.startswith("v=")), "")
    except (OSError, RuntimeError, subprocess.SubprocessError):
        redis_version = ""
    import psutil

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "redis_py": version("redis"),
        "redis_server": redis_version,
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_backlog(stack: Any, plan: Plan, log: Any) -> dict[str, Any]:
    from worker.harness.bench import phases

    log(f"backlog: {plan.backlog:,} orders at GATEWAY_MAX_RPS={plan.backlog_rps:g} ...")
    return phases.measure_backlog(
        stack, n=plan.backlog, rps=plan.backlog_rps, timers=dict(plan.backlog_timers) or None
    )


def run_e2e(stack: Any, plan: Plan, log: Any) -> dict[str, Any]:
    from worker.harness.bench import phases

    log(f"end to end: {plan.e2e:,} orders to final, callbacks on, threads -c 16 ...")
    return phases.measure_e2e(stack, n=plan.e2e, concurrency=16)


def run_pii(stack: Any, plan: Plan, log: Any) -> dict[str, Any]:
    from worker.harness.bench.pii import measure_pii

    log(f"personal data: enqueue and submit, sealed vs plain, {plan.pii_slices} slice pairs ...")
    return measure_pii(stack, slices=plan.pii_slices)


def run_only(phase: str, plan: Plan, *, workdir: Path | None, log: Any) -> dict[str, Any]:
    """``--only PHASE``: one phase alone (its figures, not the headline table)."""
    from worker.harness.bench.stack import BenchStack

    started = time.perf_counter()
    out: dict[str, Any] = {"machine": machine_info()}
    stack = BenchStack(workdir).start()
    try:
        out[phase] = {"backlog": run_backlog, "e2e": run_e2e, "pii": run_pii}[phase](stack, plan, log)
    finally:
        stack.stop()
        if workdir is None:
            stack.cleanup()
    out["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    return out


def run(plan: Plan, *, workdir: Path | None, log: Any) -> dict[str, Any]:
    from worker.harness.bench import durability, phases
    from worker.harness.bench.stack import BenchStack

    started = time.perf_counter()
    out: dict[str, Any] = {
        "machine": machine_info(),
        "plan": plan.__dict__ | {"pools": [f"{p}-{c}" for p, c in plan.pools]},
    }
    stack = BenchStack(workdir).start()
    try:
        # first, on a clean Redis (no orders left open by the other steps): an import far
        # above the gateway's rate, then end to end with callbacks
        out["backlog"] = run_backlog(stack, plan, log)
        out["e2e"] = run_e2e(stack, plan, log)
        out["pii"] = run_pii(stack, plan, log)
        # step 1-2: producer, then alternating noop / submit batches through one worker
        log("producer: delay() vs enqueue_payout() ...")
        prod, staged = phases.measure_producer(stack, chunks=plan.chunks, chunk=plan.chunk)
        out["producer"] = prod
        pool, conc = BASE_POOL
        log(f"drains: no-op vs submit, {pool} -c {conc} ...")
        drains = phases.measure_drains(stack, staged, chunk=plan.chunk, pool=pool, concurrency=conc)
        out["drains"] = drains
        template = phases.real_template(stack, staged.submit_ids[0])
        log("reconcile backlog: beat on, accepted -> final ...")
        out["reconcile_backlog"] = phases.measure_reconcile_backlog(stack, staged.submit_ids)
        # a third of the measured capacity: the latency of a worker with headroom
        # (the checks of the orders already accepted share the same worker)
        rate = max(5.0, drains["submit_per_s"] / 3)
        log(f"latency: steady enqueue at {rate:.0f}/s ...")
        out["latency"] = phases.measure_latency(stack, rate_per_s=rate, seconds=plan.latency_seconds)
        stack.stop_beat()

        # step 3: 200 ms on create, per pool; then 1 vs 2 processes
        ceiling = drains["submit_per_s"]
        assert stack.sandbox is not None
        stack.sandbox.admin.set_faults([phases.LATENCY_RULE])
        pools = []
        for i, (p, c) in enumerate(plan.pools):
            log(f"latency {phases.LATENCY_S * 1000:.0f} ms: {p} -c {c} ...")
            pools.append(
                phases.measure_pool(
                    stack,
                    pool=p,
                    concurrency=c,
                    processes=1,
                    ceiling_per_s=ceiling,
                    latency_s=phases.LATENCY_S,
                    window_s=plan.pool_window_s,
                    prefix=f"l{i}",
                )
            )
        p, c = plan.pools[0]
        log(f"latency {phases.LATENCY_S * 1000:.0f} ms: 2 x {p} -c {c} ...")
        two_slow = phases.measure_pool(
            stack,
            pool=p,
            concurrency=c,
            processes=2,
            ceiling_per_s=ceiling,
            latency_s=phases.LATENCY_S,
            window_s=plan.pool_window_s,
            prefix="s2",
        )
        stack.sandbox.admin.clear_faults()
        log(f"instant gateway: 2 x {pool} -c {conc} ...")
        two_fast = phases.measure_pool(
            stack,
            pool=pool,
            concurrency=conc,
            processes=2,
            ceiling_per_s=ceiling,
            latency_s=0.0,
            window_s=plan.pool_window_s,
            prefix="f2",
        )
        out["pools"] = pools
        out["scaling"] = {
            "two_processes_latency200": two_slow,
            "two_processes_instant": two_fast,
            "one_process_instant_per_s": ceiling,
            "instant_2_vs_1": round(two_fast["payouts_per_s"] / ceiling, 3),
            "latency200_2_vs_1": round(two_slow["payouts_per_s"] / pools[0]["payouts_per_s"], 3),
        }
        stack.stop_workers()

        # durability: appendfsync always vs everysec, and the replica acknowledgement
        log("durability: submit with appendfsync always vs everysec ...")
        out["durability"] = durability.measure_fsync(
            stack, pairs=1 if plan.chunk < 300 else 2, chunk=plan.chunk, pool=pool, concurrency=conc
        )
        log("durability: the same with the broker on a second (everysec) Redis ...")
        out["durability"]["split_broker"] = durability.measure_fsync_split_broker(
            stack, pairs=1 if plan.chunk < 300 else 2, chunk=plan.chunk, pool=pool, concurrency=conc
        )
        log("durability: enqueue and claim with and without a replica acknowledgement ...")
        out["durability"]["replica_ack"] = durability.measure_replica_ack(stack, n=min(1000, plan.chunk))

        # step 4-5: sweep and memory on a second Redis
        log(f"sweep: {plan.sweep_small:,} vs {plan.sweep_big:,} not-due orders ...")
        out["sweep"] = phases.measure_sweep(
            stack,
            big=plan.sweep_big,
            small=plan.sweep_small,
            ticks=plan.sweep_ticks,
            due=plan.due,
            template=template,
        )
    finally:
        stack.stop()
        if workdir is None:
            stack.cleanup()
    out["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    out.update(headline(out))
    return out


def headline(out: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys (``make bench`` and the docs read these)."""
    d, prod, lat, sw = out["drains"], out["producer"], out["latency"], out["sweep"]
    dur = out["durability"]
    default = out["pools"][0]
    return {
        "noop_tasks_per_s": d["noop_tasks_per_s"],
        "submit_per_s": d["submit_per_s"],
        "submit_vs_noop": d["submit_vs_noop"],
        "submit_vs_noop_cpu": d["submit_vs_noop_cpu"],
        "enqueue_per_s": prod["enqueue_per_s"],
        "delay_per_s": prod["delay_per_s"],
        "enqueue_vs_delay": prod["enqueue_vs_delay"],
        "enqueue_vs_delay_cpu": prod["enqueue_vs_delay_cpu"],
        "enqueue_to_accepted_ms": lat["enqueue_to_accepted"],
        "enqueue_to_final_ms": lat["enqueue_to_final"],
        "latency200_config": f"{default['pool']}-{default['concurrency']}",
        "latency200_per_s": default["payouts_per_s"],
        "latency200_ratio_to_ideal": default["ratio_to_ideal"],
        "sweep_tick_ratio_1m_vs_1k": sw["sweep_tick_ratio_1m_vs_1k"],
        "dispatch_10k_due_s": sw["dispatch_10k_due_s"],
        "redrive_10k_due_s": sw["redrive_10k_due_s"],
        "redis_bytes_per_order": sw["redis_bytes_per_order"],
        "tombstone_bytes_per_id": sw["tombstone_bytes_per_id"],
        "redis_bytes_per_order_e2e": d["redis_bytes_per_order_e2e"],
        "cpu_ms_per_payout": d["cpu_ms_per_payout"],
        "noop_cpu_ms": d["noop_cpu_ms"],
        "submit_always_vs_everysec": dur["submit_always_vs_everysec"],
        "submit_per_s_everysec": dur["submit_per_s_everysec"],
        "submit_always_vs_everysec_split_broker": dur["split_broker"]["submit_always_vs_everysec"],
        "replica_ack_create_added_ms": dur["replica_ack"]["create_ack_added_ms_p50"],
        "replica_ack_claim_added_ms": dur["replica_ack"]["claim_ack_added_ms_p50"],
        "e2e_final_per_s": out["e2e"]["final_per_s"],
        "e2e_final_vs_noop": out["e2e"]["final_vs_noop"],
        "backlog_messages_per_order": out["backlog"]["peak_messages_per_order"],
        "backlog_messages_per_open_order": out["backlog"]["peak_messages_per_open_order"],
        "backlog_growth_bytes_per_order": out["backlog"]["redis_growth_per_order"],
        "backlog_requests_per_order": out["backlog"]["gateway_requests_per_order"],
        "backlog_drain_vs_rate": out["backlog"]["drain_vs_rate"],
        "backlog_final_vs_rate": out["backlog"]["final_vs_rate"],
        "enqueue_sealed_vs_plain": out["pii"]["enqueue_sealed_vs_plain"],
        "submit_sealed_vs_plain": out["pii"]["submit_sealed_vs_plain"],
    }


#: (label, key, target, "ge"/"le") for the summary table
TARGETS: tuple[tuple[str, str, float | None, str], ...] = (
    ("no-op tasks/s (baseline)", "noop_tasks_per_s", None, ""),
    ("submit payouts/s (instant gateway)", "submit_per_s", None, ""),
    ("submit / no-op", "submit_vs_noop", 0.5, "ge"),
    ("submit / no-op, by worker CPU", "submit_vs_noop_cpu", None, ""),
    ("enqueue_payout calls/s", "enqueue_per_s", None, ""),
    ("bare delay() calls/s", "delay_per_s", None, ""),
    ("enqueue / delay()", "enqueue_vs_delay", 0.8, "ge"),
    ("enqueue / delay(), by producer CPU", "enqueue_vs_delay_cpu", None, ""),
    ("200 ms gateway: ratio to ideal", "latency200_ratio_to_ideal", 0.8, "ge"),
    ("sweep tick 1M / 1k not-due", "sweep_tick_ratio_1m_vs_1k", 1.2, "le"),
    ("dispatch 10k due orders, s", "dispatch_10k_due_s", 1.0, "le"),
    ("re-drive 10k lost submits, s", "redrive_10k_due_s", None, ""),
    ("Redis bytes per stored order", "redis_bytes_per_order", 1024, "le"),
    ("Redis bytes per id tombstone (kept forever)", "tombstone_bytes_per_id", 128, "le"),
    ("Redis bytes per order, end to end", "redis_bytes_per_order_e2e", None, ""),
    ("worker CPU ms per payout", "cpu_ms_per_payout", None, ""),
    ("worker CPU ms per no-op task", "noop_cpu_ms", None, ""),
    ("submit, appendfsync always / everysec", "submit_always_vs_everysec", 0.9, "ge"),
    ("submit payouts/s, appendfsync everysec", "submit_per_s_everysec", None, ""),
    ("  same, broker on its own Redis", "submit_always_vs_everysec_split_broker", 0.9, "ge"),
    ("replica ack: ms added per enqueue (p50)", "replica_ack_create_added_ms", None, ""),
    ("replica ack: ms added per claim (p50)", "replica_ack_claim_added_ms", None, ""),
    ("end to end: final orders/s", "e2e_final_per_s", None, ""),
    ("end to end: final / no-op rate", "e2e_final_vs_noop", 0.35, "ge"),
    ("backlog: peak messages / orders", "backlog_messages_per_order", 1.1, "le"),
    ("backlog: peak messages / open orders", "backlog_messages_per_open_order", 1.1, "le"),
    ("backlog: Redis growth B/order", "backlog_growth_bytes_per_order", None, ""),
    ("backlog: gateway requests / order", "backlog_requests_per_order", None, ""),
    ("backlog: create rate / GATEWAY_MAX_RPS", "backlog_drain_vs_rate", 0.9, "ge"),
    ("backlog: final rate / GATEWAY_MAX_RPS", "backlog_final_vs_rate", None, ""),
    ("enqueue, sealed / plain personal data", "enqueue_sealed_vs_plain", 0.95, "ge"),
    ("submit, sealed / plain personal data", "submit_sealed_vs_plain", 0.95, "ge"),
)


def render_table(out: dict[str, Any]) -> str:
    lines = [f"{'metric':<38} {'value':>12}  target"]
    for label, key, target, how in TARGETS:
        value = out[key]
        mark = ""
        if target is not None:
            ok = value >= target if how == "ge" else value <= target
            mark = f"{'>=' if how == 'ge' else '<='} {target:g}  {'ok' if ok else 'MISSED'}"
        lines.append(
            f"{label:<38} {value:>12,.3f}  {mark}"
            if isinstance(value, float)
            else f"{label:<38} {value:>12,}  {mark}"
        )
    for name, key in (
        ("enqueue -> accepted", "enqueue_to_accepted_ms"),
        ("enqueue -> final", "enqueue_to_final_ms"),
    ):
        p = out[key]
        lines.append(f"{name + ' ms p50/p95/p99':<38} {p['p50_ms']:>6}/{p['p95_ms']}/{p['p99_ms']}")
    lines.append("")
    lines.append(
        f"{'pool (200 ms on create)':<24} {'procs':>5} {'per s':>8} {'ideal':>8} "
        f"{'ratio':>6} {'cpu ms':>7} {'worker':>6} {'sandbox':>7}"
    )
    rows = [
        *out["pools"],
        out["scaling"]["two_processes_latency200"],
        out["scaling"]["two_processes_instant"],
    ]
    for r in rows:
        name = f"{r['pool']} -c {r['concurrency']}" + ("" if r["gateway_latency_ms"] else " (instant)")
        lines.append(
            f"{name:<24} {r['processes']:>5} {r['payouts_per_s']:>8} "
            f"{r['ideal_per_s']:>8} {r['ratio_to_ideal']:>6} "
            f"{r['cpu_ms_per_payout']:>7} {r['worker_cpu_util']:>6} "
            f"{r['sandbox_cpu_util']:>7}"
        )
    m = out["machine"]
    lines.append("")
    lines.append(
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}, "
        f"Celery {m['celery']}, Redis {m['redis_server']}; "
        f"load {m['loadavg_start']} -> {m['loadavg_end']}; {out['elapsed_s']} s"
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payouts bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short run (< 3 min), same keys")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the smoke test
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write every figure as JSON to FILE; with no FILE, print them as one JSON object instead",
    )
    p.add_argument("--keep", metavar="DIR", help="keep worker logs in DIR")
    p.add_argument(
        "--only", choices=["backlog", "e2e", "pii"], help="run one phase alone (its JSON, no table)"
    )
    p.add_argument("--e2e", type=int, metavar="N", help="orders in the end-to-end phase")
    p.add_argument("--backlog", type=int, metavar="N", help="orders in the backlog phase")
    p.add_argument("--backlog-rps", type=float, metavar="R", help="GATEWAY_MAX_RPS of the backlog phase")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from worker.logs import configure_logging

    configure_logging("console", "WARNING")
    plan = Plan.of(args.quick, args.tiny)
    if args.backlog:
        plan = dataclasses.replace(plan, backlog=args.backlog)
    if args.e2e:
        plan = dataclasses.replace(plan, e2e=args.e2e)
    if args.backlog_rps:
        plan = dataclasses.replace(plan, backlog_rps=args.backlog_rps)

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    from worker.harness.processes import terminate_as_interrupt

    workdir = Path(args.keep) if args.keep else None
    # SIGTERM (a `timeout`, a container stop) and Ctrl-C unwind through the stacks' `finally`
    # blocks: every Redis, sandbox and Celery worker the bench started is stopped
    with terminate_as_interrupt():
        try:
            out = (
                run_only(args.only, plan, workdir=workdir, log=log)
                if args.only
                else run(plan, workdir=workdir, log=log)
            )
        except KeyboardInterrupt:
            log("interrupted: stopped everything the bench started")
            return 130
    if args.json == "-":
        print(json.dumps(out, default=str))
        return 0
    print(json.dumps(out[args.only], indent=2) if args.only else render_table(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n", "utf-8")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
