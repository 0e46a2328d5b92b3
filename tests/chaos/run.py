"""The chaos runner: many payouts through real processes while everything fails, then the invariants.

    python -m tests.chaos.run --orders 300 --seed 42          # about two minutes
    python -m tests.chaos.run --orders 10000 --seconds 900    # the soak (`make soak`)

One run starts, all on 127.0.0.1:

* its **own** ``redis-server`` (AOF on, ``appendfsync always`` by default: see
  docs/reliability.md), never the machine's Redis, because it SIGKILLs and restarts it;
* the sandbox gateway with every fault kind on at moderate probabilities, ~10% failed
  payouts, callbacks retried on a short schedule;
* ``--workers`` Celery worker processes (threads pool), two beats at once, and the callback
  receiver under gunicorn (the production entry point, ``python -m worker.web``).

It enqueues ``--orders`` payouts spread over ``--seconds`` (about 3% of them are refused by the
gateway: an amount below its minimum or a bank it does not support) and, at seeded moments,
SIGKILLs a worker (a replacement starts at once) and SIGKILLs Redis (it restarts from its AOF
after 1-3 s). A supervisor restarts any process that dies on its own (counted: it should be 0).
When every order is final or in review, it waits for the gateway's callbacks to stop, reads the
store and the sandbox ledger, checks the invariants (:mod:`worker.harness.invariants`) and the
logs, prints the figures, and exits 0 only when nothing is violated.

Every random choice (orders, fault draws, kill and restart moments, victims) comes from
``--seed``; the seed is printed first, and ``--seed`` replays the same plan. Thread timing
still differs between runs, so a replay meets the same faults, not the same interleaving.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from worker import keys
from worker.celery_app import make_producer_app
from worker.celeryconf import SUBMIT_TASK
from worker.harness.invariants import Expected, Verdict, check_logs, check_orders, check_store, read_orders
from worker.harness.processes import CeleryProcess, RedisServer, free_port, wait_for
from worker.harness.receiver import Receiver
from worker.harness.stack import Credentials, LocalStack, sandbox_config
from worker.producer import store_payout
from worker.runtime import Runtime
from worker.sandbox.process import SandboxProcess

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_ID = "PF0001"
#: the secrets the log check hunts for: distinctive, so a leak cannot hide
PLATFORM_KEY = "chaos-platform-key-7Qw2Zr9Lx4"
AUTH_TOKEN = "chaos-authorization-token-Jt6Vb3Nm8"
CREDENTIALS = Credentials(PLATFORM_ID, PLATFORM_KEY, AUTH_TOKEN)
BANKS = ("BCA", "BNI", "BRI", "MANDIRI", "CIMB")
#: valid for us (no PAYOUT_BANK_LIST), refused by the gateway with 0012 -> ``rejected``
UNSUPPORTED_BANK = "NOSUCHBANK"
#: the sandbox's minimum amount: below it the gateway answers 0028 -> ``rejected``
GATEWAY_MIN_MINOR = 1_000_000
#: beneficiary names are "Penerima 000123": easy to find in a log line
NAME_RE = re.compile(r"Penerima [0-9]{6}")
FINAL_OR_REVIEW = ("succeeded", "failed", "rejected", "review")
OPEN_STATES = ("received", "submitting", "accepted", "unconfirmed")


def fault_rules(scale: float = 1.0, *, rps: float = 40.0) -> list[dict[str, Any]]:
    """Every fault kind of :mod:`worker.sandbox.faults` at a moderate probability (times ``scale``)."""

    def p(x: float) -> float:
        return round(min(1.0, x * scale), 4)

    return [
        {
            "kind": "latency",
            "distribution": {"type": "uniform", "min": 0.0, "max": 0.3},
            "probability": p(0.2),
        },
        # 429 once the gateway sees more than `rps` requests per second (some of the excess)
        {"kind": "rate_limit", "rps": rps, "burst": rps, "probability": p(0.3)},
        # the gateway answers 500 and does NOT create: the order really does not exist there
        {"kind": "create_5xx_before", "probability": p(0.02)},
        # the gateway creates the order, then the answer is lost in one of five ways
        {
            "kind": "create_lost",
            "mode": "hang",
            "seconds": 3.0,
            "then": "answer",
            "probability": p(0.015),
            "name": "hang past the read timeout, then answer",
        },
        {
            "kind": "create_lost",
            "mode": "hang",
            "seconds": 3.0,
            "then": "close",
            "probability": p(0.015),
            "name": "hang past the read timeout, then close",
        },
        {"kind": "create_lost", "mode": "5xx", "status": 502, "probability": p(0.03)},
        {"kind": "create_lost", "mode": "empty", "probability": p(0.03)},
        {"kind": "create_lost", "mode": "garbled", "probability": p(0.03)},
        {"kind": "create_lost", "mode": "reset", "probability": p(0.03)},
        {"kind": "query_5xx", "probability": p(0.1)},
        {"kind": "query_timeout", "seconds": 3.0, "probability": p(0.03)},
        # absent from query answers for 3 s after creation (UNCONFIRMED_GRACE is far longer)
        {"kind": "invisible", "seconds": 3.0, "probability": p(0.1)},
        {"kind": "callback", "mode": "duplicate", "copies": 3, "concurrent": True, "probability": p(0.1)},
        {"kind": "callback", "mode": "out_of_order", "probability": p(0.1)},
        {"kind": "callback", "mode": "delay", "seconds": 2.0, "probability": p(0.1)},
        {"kind": "callback", "mode": "never", "probability": p(0.1)},
        {"kind": "callback", "mode": "wrong_key", "probability": p(0.05)},
    ]


@dataclass
class ChaosConfig:
    """One run's knobs; the defaults are the CI run's."""

    orders: int = 300
    #: the load phase: orders are spread over it and every kill/restart falls in it
    seconds: float | None = None
    seed: int = 0
    workers: int = 2
    concurrency: int = 16
    beats: int = 2
    #: worker SIGKILLs (default: one per ~12 s of load, at least 3)
    kills: int | None = None
    #: Redis SIGKILL + restarts from the AOF (default: one per ~120 s of load, at least 1)
    redis_restarts: int | None = None
    redis_down_s: tuple[float, float] = (1.0, 3.0)
    appendfsync: str = "always"
    #: at each Redis kill, also drop the AOF's last second (what a host crash loses with
    #: ``everysec``): an experiment for docs/reliability.md, expected to break invariants
    host_crash: bool = False
    fault_scale: float = 1.0
    #: share of orders the gateway refuses (amount below its minimum, unsupported bank)
    rejected_share: float = 0.03
    failure_ratio: float = 0.1
    #: after the load phase, how long the orders may take to settle
    drain_timeout_s: float | None = None
    workdir: Path | None = None
    keep: bool = False
    out: Callable[[str], None] = print

    def replay(self) -> str:
        """The command line that replays this run's plan."""
        parts = [f"python -m tests.chaos.run --orders {self.orders}"]
        for flag, value, default in (
            ("--seconds", self.seconds, None),
            ("--workers", self.workers, 2),
            ("--concurrency", self.concurrency, 16),
            ("--kills", self.kills, None),
            ("--redis-restarts", self.redis_restarts, None),
            ("--appendfsync", self.appendfsync, "always"),
            ("--fault-scale", self.fault_scale, 1.0),
        ):
            if value != default:
                parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        if self.host_crash:
            parts.append("--host-crash")
        return " ".join([*parts, f"--seed {self.seed}"])

    @property
    def load_s(self) -> float:
        return self.seconds if self.seconds else max(20.0, self.orders / 20.0)

    @property
    def n_kills(self) -> int:
        return self.kills if self.kills is not None else max(3, int(self.load_s / 12))

    @property
    def n_restarts(self) -> int:
        return self.redis_restarts if self.redis_restarts is not None else max(1, int(self.load_s / 120))

    @property
    def drain_s(self) -> float:
        return self.drain_timeout_s or 150.0 + self.orders * 0.02


@dataclass
class Report:
    """What a run did and found."""

    seed: int
    verdict: Verdict = field(default_factory=Verdict)
    figures: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict.ok


def chaos_settings(cfg: ChaosConfig) -> dict[str, str]:
    """The run's settings over the local stack's defaults (short timeouts, fast sweeps)."""
    return {
        "SWEEP_BATCH": "500",
        "CHECK_INTERVAL_MIN": "0.5",
        "CHECK_INTERVAL_MAX": "3",
        "SUBMIT_REDRIVE_AFTER": "8",
        "SUBMIT_RETRY_MAX": "5",
        "UNCONFIRMED_FIRST_CHECK": "0.3",
        # far above the 3 s `invisible` window plus a query timeout: an order the gateway
        # holds is never declared missing; one it really lacks goes to review after this
        "UNCONFIRMED_GRACE": "15",
        "NOT_FOUND_POLICY": "review",
        "WORKER_CONCURRENCY": str(cfg.concurrency),
        # strict durability refuses a Redis that fsyncs once a second: say so explicitly
        "REDIS_DURABILITY": "strict" if cfg.appendfsync == "always" else "relaxed",
    }


@dataclass(order=True)
class Event:
    at_s: float
    action: str = field(compare=False)
    arg: float = field(default=0.0, compare=False)


def spread(rng: random.Random, n: int, start_s: float, end_s: float) -> list[float]:
    """``n`` moments in [start, end): one per equal slot, at a random point of its middle 80%."""
    width = (end_s - start_s) / max(1, n)
    return [start_s + width * (i + 0.1 + 0.8 * rng.random()) for i in range(n)]


class ChaosRun:
    """One run: ``ChaosRun(cfg).run()`` returns a :class:`Report`."""

    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(f"chaos|{cfg.seed}")
        self.dir = cfg.workdir or Path(tempfile.mkdtemp(prefix="payouts-chaos-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stack: LocalStack | None = None
        self.redis_server: RedisServer | None = None
        self.sandbox: SandboxProcess | None = None
        self.receiver: Receiver | None = None
        self.workers: list[CeleryProcess] = []
        self.beats: list[CeleryProcess] = []
        self.rt: Runtime | None = None
        self.producer: Any = None
        self.env: dict[str, str] = {}
        self.expected: dict[str, Expected] = {}
        self.plan: list[dict[str, Any]] = []
        #: ids stored so far (the web app was told "stored"): what the checks hold us to
        self.stored_ids: list[str] = []
        self.stop = threading.Event()
        self.enqueue_done = threading.Event()
        self.enqueue_error: BaseException | None = None
        self.t0 = 0.0
        self.counters: Counter[str] = Counter()
        self.kills: list[dict[str, Any]] = []
        self.restarts: list[dict[str, Any]] = []
        self.redis_down = False
        #: (monotonic time, AOF file, size) samples, for the host-crash simulation
        self.aof_sizes: list[tuple[float, Path, int]] = []

    # ------------------------------------------------------------------ setup

    def say(self, text: str) -> None:
        self.cfg.out(f"[chaos {time.monotonic() - self.t0:7.1f}s] {text}" if self.t0 else f"[chaos] {text}")

    def make_plan(self) -> None:
        rng = random.Random(f"orders|{self.cfg.seed}")
        for n in range(self.cfg.orders):
            pid = f"ch{self.cfg.seed % 100_000}-{n:06d}"
            amount = rng.randrange(10_000, 20_000_000) * 100  # IDR 10,000 .. 20,000,000
            bank = rng.choice(BANKS)
            if rng.random() < self.cfg.rejected_share:
                if rng.random() < 0.5:
                    amount = rng.randrange(1, GATEWAY_MIN_MINOR // 100) * 100
                else:
                    bank = UNSUPPORTED_BANK
            number = str(rng.randrange(10**11, 10**16))
            name = f"Penerima {n:06d}"
            self.plan.append(
                {"payout_cl_id": pid, "amount": amount, "bank_name": bank, "name": name, "number": number}
            )
            self.expected[pid] = Expected(amount, number, name)

    def start_processes(self) -> None:
        cfg = self.cfg
        order_rate = cfg.orders / cfg.load_s
        sandbox_cfg = sandbox_config(
            CREDENTIALS,
            pending_s=0.2,
            processing_s=0.5,
            failure_ratio=cfg.failure_ratio,
            seed=cfg.seed,
            callback_delays_s=(0.5, 1.0, 2.0, 4.0),
            min_amount_minor=GATEWAY_MIN_MINOR,
            # the gateway does NOT refuse a repeated payout_cl_id (docs/gateway.md §11): a second
            # create would be a second payout, and the ledger would show it
            duplicate_check=False,
            # requests run at ~2x the order rate (create + queries): bursts above 1.5x get 429s
            faults=fault_rules(cfg.fault_scale, rps=max(5.0, 1.5 * order_rate)),
        )
        self.stack = stack = LocalStack.own(
            self.dir,
            sandbox=sandbox_cfg,
            credentials=CREDENTIALS,
            appendfsync=cfg.appendfsync,
            bind_runtime=False,
            overrides=chaos_settings(cfg),
        )
        assert stack.redis_server is not None and stack.sandbox is not None
        self.redis_server, self.sandbox, self.rt, self.env = (
            stack.redis_server,
            stack.sandbox,
            stack.rt,
            stack.env,
        )
        self.workers, self.beats = stack.workers, stack.beats
        self.say(f"redis-server on port {stack.redis_server.port}, AOF appendfsync={cfg.appendfsync}")
        self.say(
            f"sandbox at {stack.sandbox.url} with {len(sandbox_cfg.faults)} fault rules, duplicate check off"
        )
        # the web app's side: our own producer bound to this run's broker (the process-wide
        # app may already be bound to another Redis, e.g. inside the pytest session)
        self.producer = make_producer_app(stack.settings)
        self.receiver = stack.start_receiver(gunicorn=True)
        for _ in range(cfg.workers):
            self.start_worker()
        for _ in range(cfg.beats):
            self.start_beat()
        # load starts once every worker consumes (not waited for later)
        stack.wait_workers_ready(90)
        self.say(
            f"{cfg.workers} workers (threads x{cfg.concurrency}), {cfg.beats} beats, "
            f"callback receiver on :{stack.callback_port}"
        )

    def start_worker(self) -> CeleryProcess:
        n = self.counters["workers_started"]
        self.counters["workers_started"] += 1
        assert self.stack is not None
        return self.stack.start_worker(name=f"chaos{n}-{free_port()}", concurrency=self.cfg.concurrency)

    def start_beat(self) -> CeleryProcess:
        self.counters["beats_started"] += 1
        assert self.stack is not None
        return self.stack.start_beat()

    def schedule(self) -> list[Event]:
        cfg = self.cfg
        rng = random.Random(f"schedule|{cfg.seed}")
        start, end = min(8.0, 0.15 * cfg.load_s), cfg.load_s
        events = [Event(t, "kill") for t in spread(rng, cfg.n_kills, start, end)]
        for t in spread(rng, cfg.n_restarts, start + 2.0, end):
            events.append(Event(t, "redis_down", rng.uniform(*cfg.redis_down_s)))
        return sorted(events)

    # ------------------------------------------------------------------ load

    def enqueue_all(self) -> None:
        """The web app: store each order, then publish its submit message (failures tolerated)."""
        assert self.rt is not None
        rate = self.cfg.orders / self.cfg.load_s
        try:
            for n, data in enumerate(self.plan):
                if self.stop.wait(max(0.0, self.t0 + n / rate - time.monotonic())):
                    return
                deadline = time.monotonic() + 60
                while True:
                    try:
                        store_payout(self.rt, data)
                        break
                    except redis.exceptions.RedisError:
                        self.counters["store_retries"] += 1
                        if time.monotonic() > deadline or self.stop.wait(0.2):
                            raise
                self.stored_ids.append(data["payout_cl_id"])
                try:
                    self.producer.send_task(SUBMIT_TASK, args=[data["payout_cl_id"]])
                except Exception:  # broker down: the sweep re-drives the order
                    self.counters["publish_failed"] += 1
        except BaseException as exc:  # reported by the main loop
            self.enqueue_error = exc
        finally:
            self.enqueue_done.set()

    def counts(self) -> dict[str, int] | None:
        assert self.rt is not None
        if self.redis_down:
            return None
        try:
            return self.rt.store.counts()
        except redis.exceptions.RedisError:
            return None

    # ------------------------------------------------------------------ chaos

    def do(self, ev: Event, events: list[Event]) -> None:
        assert self.redis_server is not None
        now = time.monotonic() - self.t0
        if ev.action == "kill":
            alive = [w for w in self.workers if w.alive()]
            if not alive:
                return
            victim = self.rng.choice(alive)
            counts = self.counts() or {}
            victim.kill()
            self.workers.remove(victim)
            self.kills.append(
                {"at_s": round(now, 1), "worker": victim.name, "submitting": counts.get("submitting")}
            )
            self.start_worker()
            self.say(
                f"SIGKILL {victim.name} (submitting now: {counts.get('submitting', '?')}); "
                "replacement started"
            )
        elif ev.action == "redis_down":
            self.redis_server.stop(kill=True)
            self.redis_down = True
            self.restarts.append({"at_s": round(now, 1), "down_s": round(ev.arg, 1)})
            self.say(f"SIGKILL redis-server; restart from the AOF in {ev.arg:.1f}s")
            if self.cfg.host_crash:
                dropped = self.drop_last_second()
                self.restarts[-1]["aof_bytes_dropped"] = dropped
                self.say(f"host crash simulated: the AOF's last second ({dropped} bytes) dropped")
            events.append(Event(now + ev.arg, "redis_up"))
            events.sort()
        elif ev.action == "redis_up":
            t = time.monotonic()
            self.redis_server.start()
            self.redis_down = False
            self.restarts[-1]["load_s"] = round(time.monotonic() - t, 2)
            self.restarts[-1]["up_at_s"] = round(time.monotonic() - self.t0, 1)
            self.say(f"redis-server back (AOF loaded in {time.monotonic() - t:.2f}s)")

    def sample_aof(self) -> None:
        """Remember the size of the AOF file being appended to (host-crash simulation)."""
        assert self.redis_server is not None
        files = sorted(
            (self.redis_server.dir / "appendonlydir").glob("*.incr.aof"), key=lambda p: p.stat().st_mtime
        )
        if files:
            now = time.monotonic()
            self.aof_sizes.append((now, files[-1], files[-1].stat().st_size))
            self.aof_sizes = [x for x in self.aof_sizes if now - x[0] < 5.0]

    def drop_last_second(self) -> int:
        """Truncate the AOF to its size of one second ago (Redis is down); bytes dropped."""
        if not self.aof_sizes:
            return 0
        _, path, _ = self.aof_sizes[-1]
        older = [x for x in self.aof_sizes if x[1] == path and x[0] <= time.monotonic() - 1.0]
        if not older:
            return 0
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.truncate(older[-1][2])
        return size - older[-1][2]

    def supervise(self) -> None:
        """A process supervisor's job: restart what died without our doing (counted)."""
        for group, start in ((self.workers, self.start_worker), (self.beats, self.start_beat)):
            for p in list(group):
                if not p.alive():
                    group.remove(p)
                    code = p.proc.returncode if p.proc is not None else None
                    p.stop()
                    self.counters["unexpected_exits"] += 1
                    self.say(f"{p.role} {p.name} exited on its own (code {code}); restarting it")
                    start()
        if self.receiver is not None and not self.receiver.alive():
            self.counters["unexpected_exits"] += 1
            self.say("the callback receiver exited on its own; restarting it")
            self.receiver.stop()
            self.receiver.start()
        if self.sandbox is not None and not self.sandbox.running:
            raise RuntimeError("the sandbox gateway died: " + "".join(self.sandbox.output[-20:]))

    # ------------------------------------------------------------------ run

    def run(self) -> Report:
        cfg = self.cfg
        report = Report(seed=cfg.seed, workdir=str(self.dir))
        self.say(
            f"seed {cfg.seed}: {cfg.orders} orders over {cfg.load_s:.0f}s, {cfg.n_kills} worker "
            f"kills, {cfg.n_restarts} Redis restart(s); replay: {cfg.replay()}"
        )
        started = time.monotonic()
        try:
            self.make_plan()
            self.start_processes()
            report.figures["startup_s"] = round(time.monotonic() - started, 1)
            self.loop(report)
            self.quiesce(report)
            self.check(report)
        finally:
            self.shutdown()
        report.verdict.merge(self.check_logs())
        report.figures["total_s"] = round(time.monotonic() - started, 1)
        self.figures(report)
        if report.ok and not cfg.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        return report

    def loop(self, report: Report) -> None:
        cfg = self.cfg
        events = self.schedule()
        self.t0 = time.monotonic()
        feeder = threading.Thread(target=self.enqueue_all, name="enqueue", daemon=True)
        feeder.start()
        deadline = self.t0 + cfg.load_s + cfg.drain_s
        last_poll = last_say = 0.0
        settled_at: float | None = None
        while True:
            now = time.monotonic()
            while events and events[0].at_s <= now - self.t0:
                self.do(events.pop(0), events)
            self.supervise()
            if self.cfg.host_crash and not self.redis_down:
                self.sample_aof()
            if self.enqueue_error is not None:
                raise RuntimeError(f"enqueue failed: {self.enqueue_error!r}")
            if now - last_poll >= 1.0:
                last_poll = now
                counts = self.counts()
                if counts is not None and now - last_say >= 10:
                    last_say = now
                    self.say(" ".join(f"{k}={v}" for k, v in counts.items() if v))
                if (
                    counts is not None
                    and not events
                    and self.enqueue_done.is_set()
                    and sum(counts[s] for s in FINAL_OR_REVIEW) >= cfg.orders
                    and not any(counts[s] for s in OPEN_STATES)
                ):
                    settled_at = now
                    break
            if now > deadline:
                break
            self.stop.wait(0.2)
        self.stop.set()
        feeder.join(10)
        loaded = self.enqueue_end_s()
        chaos_at = [k["at_s"] for k in self.kills] + [r.get("up_at_s", r["at_s"]) for r in self.restarts]
        last_chaos = max([0.0, *chaos_at])
        if settled_at is None:
            counts = self.counts() or {}
            report.verdict.violate(
                f"not settled {cfg.drain_s:.0f}s after the load phase: "
                + " ".join(f"{k}={v}" for k, v in counts.items() if v)
            )
            self.say("TIMEOUT: orders did not settle")
        else:
            end = settled_at - self.t0
            report.figures["settled_at_s"] = round(end, 1)
            report.figures["drain_s"] = round(end - loaded, 1)
            report.figures["recovery_s"] = round(end - last_chaos, 1)
            self.say(f"all {cfg.orders} orders final or in review")
        report.figures["load_s"] = round(loaded, 1)

    def enqueue_end_s(self) -> float:
        return min(self.cfg.load_s, time.monotonic() - self.t0)

    def quiesce(self, report: Report) -> None:
        """Let the gateway finish its callbacks (stale, duplicate, forged) before judging."""
        assert self.sandbox is not None
        t = time.monotonic()
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: self.sandbox.admin.stats()["background_tasks"] == 0,  # type: ignore[union-attr]
                30,
                interval_s=0.5,
                what="the gateway's callbacks to end",
            )
        report.figures["quiesce_s"] = round(time.monotonic() - t, 1)

    def check(self, report: Report) -> None:
        assert self.sandbox is not None and self.rt is not None
        ledger = self.sandbox.admin.ledger()
        stats = self.sandbox.admin.stats()
        expected = {i: self.expected[i] for i in self.stored_ids}
        if len(expected) < self.cfg.orders:
            report.verdict.violate(f"only {len(expected)} of {self.cfg.orders} orders were enqueued")
        stored = read_orders(self.rt.redis, expected)
        report.verdict.merge(check_orders(expected, stored, ledger))
        client = self.rt.redis
        events = (fields for _, fields in client.xrange(keys.EVENTS))
        review = client.zrange(keys.REVIEW, 0, -1)
        report.verdict.merge(check_store(stored, events, self.rt.store.counts(), review))
        report.figures["gateway"] = {
            "faults_fired": dict(sorted(stats.get("faults_fired", {}).items())),
            "requests": stats.get("requests", {}),
            "callbacks": stats.get("callbacks", {}),
            "orders_by_status": stats.get("orders", {}).get("by_status", {}),
        }
        latencies = sorted(
            float(rec["history"][-1]["at"]) - float(rec["fields"]["created_at"])
            for rec in stored.values()
            if rec.get("history") and rec["fields"].get("created_at")
        )
        if latencies:
            pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)  # noqa: E731
            report.figures["settle_latency_s"] = {"p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0)}

    def shutdown(self) -> None:
        self.stop.set()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                self.producer.close()
        if self.stack is not None:
            self.stack.stop()

    def check_logs(self) -> Verdict:
        paths = sorted(self.dir.glob("*.log"))
        return check_logs(
            paths,
            numbers={e.number for e in self.expected.values()},  # planned ones too: never logged
            name_pattern=NAME_RE,
            secrets={"platform key": PLATFORM_KEY, "authorization token": AUTH_TOKEN},
        )

    # ------------------------------------------------------------------ figures

    def figures(self, report: Report) -> None:
        f = report.figures
        f.update(report.verdict.figures)
        f["seed"] = self.cfg.seed
        f["replay"] = self.cfg.replay()
        f["orders"] = self.cfg.orders
        f["workers"] = self.cfg.workers
        f["beats"] = self.cfg.beats
        f["appendfsync"] = self.cfg.appendfsync + (" + simulated host crash" if self.cfg.host_crash else "")
        f["kills"] = self.kills
        f["redis_restarts"] = self.restarts
        f["unexpected_exits"] = self.counters["unexpected_exits"]
        f["store_retries"] = self.counters["store_retries"]
        f["publish_failed"] = self.counters["publish_failed"]
        f["results"] = dict(sorted(report.verdict.results.items()))
        f["review_reasons"] = dict(report.verdict.review_reasons)
        if self.counters["unexpected_exits"]:
            report.verdict.notes.append(
                f"{self.counters['unexpected_exits']} process(es) exited on their own and were restarted "
                "(see the logs: 'Unrecoverable error'); a supervisor must restart workers"
            )
        f["violations"] = len(report.verdict.violations)
        f["notes"] = len(report.verdict.notes)
        self.cfg.out(format_figures(report))


def format_figures(report: Report) -> str:
    """The figures as a plain table (also what docs/reliability.md quotes)."""
    f = report.figures
    gw = f.get("gateway", {})
    rows: list[tuple[str, Any]] = [
        ("seed", f"{f.get('seed')}  (replay: {f.get('replay')})"),
        ("orders", f.get("orders")),
        ("processes", f"{f.get('workers')} workers (threads), {f.get('beats')} beats, gunicorn receiver"),
        (
            "worker SIGKILLs",
            f"{len(f.get('kills', []))} at " + ", ".join(f"{k['at_s']}s" for k in f.get("kills", [])),
        ),
        (
            "Redis SIGKILL+restart",
            f"{len(f.get('redis_restarts', []))} (appendfsync "
            f"{f.get('appendfsync')}; down "
            + ", ".join(f"{r['down_s']}s" for r in f.get("redis_restarts", []))
            + ")",
        ),
        ("unexpected process exits", f.get("unexpected_exits")),
        (
            "enqueue retries (Redis down)",
            f"{f.get('store_retries')} store, {f.get('publish_failed')} publishes lost",
        ),
    ]
    for kind, n in gw.get("faults_fired", {}).items():
        rows.append((f"fault fired: {kind}", n))
    cb = gw.get("callbacks", {})
    rows += [
        ("gateway requests", ", ".join(f"{k} {v}" for k, v in sorted(gw.get("requests", {}).items()))),
        (
            "create requests / orders",
            f"{f.get('create_requests')} / {f.get('gateway_orders')} "
            f"(after created: {f.get('create_requests_after_created')})",
        ),
        ("callbacks", ", ".join(f"{k} {v}" for k, v in cb.items())),
        ("results", ", ".join(f"{k} {v}" for k, v in f.get("results", {}).items())),
    ]
    for reason, n in f.get("review_reasons", {}).items():
        rows.append(("review reason", f"{n} x {reason}"))
    lat = f.get("settle_latency_s", {})
    rows += [
        ("paid (minor units)", f"ours {f.get('paid_minor_ours')}, gateway {f.get('paid_minor_gateway')}"),
        (
            "forged callbacks (wrong key)",
            f"{f.get('forged_callbacks_refused')} refused (401) on {f.get('forged_orders')} orders",
        ),
        ("created twice / lost / wrong", f"{f.get('created_twice')} / {f.get('lost')} / {f.get('wrong')}"),
        ("log lines checked", f"{f.get('log_lines')} ({f.get('log_payout_events')} payout.* events)"),
        ("time: startup / load / drain", f"{f.get('startup_s')}s / {f.get('load_s')}s / {f.get('drain_s')}s"),
        ("time: recovery after last chaos", f"{f.get('recovery_s')}s"),
        ("order settle time p50/p95/max", f"{lat.get('p50')}s / {lat.get('p95')}s / {lat.get('max')}s"),
        ("total wall time", f"{f.get('total_s')}s"),
        ("verdict", "OK" if report.ok else f"FAILED ({f.get('violations')} violations)"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    for text in report.verdict.violations:
        lines.append(f"  VIOLATION: {text}")
    for text in report.verdict.notes[:20]:
        lines.append(f"  note: {text}")
    if not report.ok:
        lines.append(f"  logs kept in {report.workdir}")
    return "\n".join(["chaos run figures:", *lines])


def run_chaos(cfg: ChaosConfig) -> Report:
    """Run one chaos run and return its report (never raises on a violated invariant)."""
    return ChaosRun(cfg).run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="length of the load phase (default: orders/20, at least 20)",
    )
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--kills", type=int, default=None)
    ap.add_argument("--redis-restarts", type=int, default=None)
    ap.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    ap.add_argument(
        "--host-crash",
        action="store_true",
        help="experiment: at each Redis kill also drop the AOF's last second",
    )
    ap.add_argument("--fault-scale", type=float, default=1.0, help="multiply every fault probability")
    ap.add_argument("--drain-timeout", type=float, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the logs even when the run passes")
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    cfg = ChaosConfig(
        orders=a.orders,
        seconds=a.seconds,
        seed=seed,
        workers=a.workers,
        concurrency=a.concurrency,
        kills=a.kills,
        redis_restarts=a.redis_restarts,
        appendfsync=a.appendfsync,
        host_crash=a.host_crash,
        fault_scale=a.fault_scale,
        drain_timeout_s=a.drain_timeout,
        workdir=a.workdir,
        keep=a.keep,
        out=lambda s: print(s, flush=True),
    )
    report = run_chaos(cfg)
    if a.json is not None:
        payload = {
            **report.figures,
            "violation_texts": report.verdict.violations,
            "note_texts": report.verdict.notes,
        }
        a.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
