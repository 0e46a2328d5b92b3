"""The processes of one bench run, and the "drain" measurement every phase uses.

Method (docs/performance.md): messages are published into a *staging* queue that no
worker reads, then the staging list is renamed onto the real queue (``RENAME`` is
atomic and wakes the worker's ``BRPOP``), so a drain starts with the whole batch
waiting and the producer idle. Progress is sampled every 10 ms from Redis; the rate is
taken between 10 % and 90 % done (no start-up or tail), the CPU per task from the
worker's ``/proc`` times over the same window.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from worker import keys
from worker.celeryconf import SUBMIT_QUEUE
from worker.harness import stack as local_stack
from worker.harness.processes import CeleryProcess, RedisServer, wait_for
from worker.harness.stack import Credentials, LocalStack
from worker.runtime import Runtime
from worker.sandbox.process import SandboxProcess
from worker.states import State

#: bench-only credentials, shared with the bench's own sandbox and nothing else
CREDENTIALS = Credentials("PF0001", "bench-platform-key-not-a-secret", "bench-authorization-token")
#: kombu's Redis transport keeps reserved (not yet acked) messages in this hash
UNACKED_KEY = "unacked"
#: states an order leaves "waiting for its create answer" into
ANSWERED = (State.ACCEPTED, State.REJECTED, State.UNCONFIRMED, State.SUCCEEDED, State.FAILED)


#: the bench's settings over the local stack's defaults
BENCH_SETTINGS: dict[str, str] = {
    "GATEWAY_CONNECT_TIMEOUT": "2",
    "GATEWAY_READ_TIMEOUT": "5",
    # on, but far above what one machine reaches: its Lua call is part of the cost
    "GATEWAY_MAX_RPS": "100000",
    "CHECK_INTERVAL_MIN": "1",
    "CHECK_INTERVAL_MAX": "5",
    "SUBMIT_REDRIVE_AFTER": "600",
    "SUBMITTING_MARGIN": "30",
    "UNCONFIRMED_FIRST_CHECK": "1",
    "UNCONFIRMED_GRACE": "600",
}


def worker_env(redis_url: str, gateway_url: str, concurrency: int, **extra: Any) -> dict[str, str]:
    """Production-like worker settings, with timers short enough for a bench."""
    return local_stack.worker_env(
        redis_url,
        gateway_url,
        CREDENTIALS,
        **{**BENCH_SETTINGS, "WORKER_CONCURRENCY": str(concurrency), **extra},
    )


def process_cpu_s(procs: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds of ``procs`` (dead ones count as 0)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system
    return total


@dataclass
class Drain:
    """One batch of ``total`` tasks processed from a full queue."""

    what: str
    total: int
    wall_s: float
    rate_per_s: float
    cpu_ms_per_task: float
    worker_cpu_util: float
    others_cpu_util: dict[str, float] = field(default_factory=dict)
    done: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "total": self.total,
            "done": self.done,
            "wall_s": round(self.wall_s, 3),
            "rate_per_s": round(self.rate_per_s, 1),
            "cpu_ms_per_task": round(self.cpu_ms_per_task, 3),
            "worker_cpu_util": round(self.worker_cpu_util, 2),
            "others_cpu_util": {k: round(v, 2) for k, v in self.others_cpu_util.items()},
        }


class BenchStack:
    """Redis (AOF ``appendfsync always``, as in production), the sandbox, workers and beat of one run.

    The processes come from one :class:`~worker.harness.stack.LocalStack`; this class adds
    what a measurement needs: staged queues, CPU accounting and drain sampling.
    """

    def __init__(self, workdir: Path | None = None, *, log_level: str = "INFO") -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="payouts-bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_level = log_level
        self.stack: LocalStack | None = None
        self.beat: CeleryProcess | None = None
        self._stage_seq = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> BenchStack:
        cfg = local_stack.sandbox_config(
            CREDENTIALS, pending_s=0.0, processing_s=0.0, failure_ratio=0.0, seed=1
        )
        self.stack = LocalStack.own(
            self.workdir,
            sandbox=cfg,
            credentials=CREDENTIALS,
            # production's setting: REDIS_DURABILITY=strict (the default) requires it; the
            # durability step measures everysec against it (bench/durability.py)
            appendfsync="always",
            callbacks=False,
            overrides={**BENCH_SETTINGS, "LOG_LEVEL": self.log_level},
        )
        # this process is the producer: its Celery app publishes to the bench Redis
        self.stack.bind_this_process()
        from worker.celery_app import app

        app.conf.broker_url = self.redis_server.url
        if app.conf.broker_url != self.redis_server.url:  # pragma: no cover - config bug
            raise RuntimeError("the bench producer would publish to another Redis")
        return self

    def stop(self) -> None:
        self.beat = None
        if self.stack is not None:
            self.stack.stop()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def local(self) -> LocalStack:
        assert self.stack is not None, "start() first"
        return self.stack

    @property
    def redis_server(self) -> RedisServer:
        assert self.local.redis_server is not None
        return self.local.redis_server

    @property
    def sandbox(self) -> SandboxProcess | None:
        return self.local.sandbox

    @property
    def workers(self) -> list[CeleryProcess]:
        return self.local.workers

    @property
    def rt(self) -> Runtime:
        return self.local.rt

    @property
    def redis(self) -> redis.Redis:
        return self.rt.redis

    @property
    def gateway_url(self) -> str:
        assert self.sandbox is not None
        return self.sandbox.url

    def env(self, concurrency: int, **extra: Any) -> dict[str, str]:
        return worker_env(
            self.redis_server.url,
            self.gateway_url if self.sandbox else "",
            concurrency,
            **{"LOG_LEVEL": self.log_level, **extra},
        )

    # -- workers and beat -----------------------------------------------------

    def start_worker(self, pool: str, concurrency: int, **extra_env: Any) -> CeleryProcess:
        n = len(self.workers)
        return self.local.start_worker(
            "--include",
            "worker.tasks.bench",
            pool=pool,
            concurrency=concurrency,
            log_level=self.log_level,
            name=f"bench{n}-{pool}{concurrency}",
            env={"WORKER_CONCURRENCY": str(concurrency), **extra_env},
        )

    def wait_workers_ready(self, timeout_s: float = 60.0) -> None:
        """Until every running worker answers a remote-control ping."""
        from worker.celery_app import app

        want = {w.name for w in self.workers}

        def ready() -> bool:
            for w in self.workers:
                if not w.alive():
                    raise RuntimeError(f"worker {w.name} exited; see {w.log_path}")
            replies = app.control.ping(timeout=0.5)
            names = {name.split("@", 1)[0] for r in replies for name in r}
            return want <= names

        wait_for(ready, timeout_s, interval_s=0.1, what="bench workers to answer a ping")

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop(timeout_s=15)
        self.workers.clear()

    def start_beat(self) -> None:
        self.beat = self.local.start_beat(log_level="WARNING")

    def stop_beat(self) -> None:
        if self.beat is not None:
            self.beat.stop()
            self.local.beats.remove(self.beat)
            self.beat = None

    def worker_procs(self) -> list[psutil.Process]:
        """The worker processes and their pool children (prefork)."""
        out: list[psutil.Process] = []
        for w in self.workers:
            if not w.alive():
                continue
            p = psutil.Process(w.pid)
            out.append(p)
            out.extend(p.children(recursive=True))
        return out

    def other_procs(self) -> dict[str, psutil.Process]:
        out = {}
        if self.redis_server.proc is not None:
            out["redis"] = psutil.Process(self.redis_server.proc.pid)
        if self.sandbox is not None and self.sandbox.process is not None:
            out["sandbox"] = psutil.Process(self.sandbox.process.pid)
        out["bench"] = psutil.Process()
        return out

    # -- staging --------------------------------------------------------------

    def new_stage(self, kind: str) -> str:
        """A queue name no worker consumes, to publish a batch into."""
        self._stage_seq += 1
        return f"bench.stage.{kind}.{self._stage_seq}"

    def stage_default_queue(self, kind: str) -> str:
        """Move what was published to the submit queue aside (no worker may be running)."""
        stage = self.new_stage(kind)
        if self.redis.exists(SUBMIT_QUEUE):
            self.redis.rename(SUBMIT_QUEUE, stage)
        return stage

    def release(self, stage: str, queue: str = SUBMIT_QUEUE) -> None:
        """Hand a staged batch to the workers in one atomic step."""
        if self.redis.llen(queue):
            raise RuntimeError(f"queue {queue} is not empty; the drain would mix batches")
        self.redis.rename(stage, queue)

    # -- progress -------------------------------------------------------------

    def answered_count(self) -> int:
        """Orders that got past ``submitting`` (by the counts hash, one round trip)."""
        raw = self.redis.hmget(keys.COUNTS, [s.value for s in ANSWERED])
        return sum(int(x or 0) for x in raw)

    def queue_left(self, queue: str = SUBMIT_QUEUE) -> int:
        """Messages waiting in ``queue`` plus every reserved, not yet acked, message."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.hlen(UNACKED_KEY)
        a, b = pipe.execute()
        return int(a) + int(b)

    def drain(
        self,
        what: str,
        stage: str,
        total: int,
        progress: Callable[[], int],
        *,
        timeout_s: float = 300.0,
        interval_s: float = 0.01,
    ) -> Drain:
        """Release ``stage`` and sample ``progress()`` (tasks done so far) until ``total``."""
        workers = self.worker_procs()
        others = self.other_procs()
        samples: list[tuple[float, int, float, dict[str, float]]] = []

        def sample() -> int:
            done = progress()
            cpu_o = {k: process_cpu_s([p]) for k, p in others.items()}
            samples.append((time.perf_counter(), done, process_cpu_s(workers), cpu_o))
            return done

        t0 = time.perf_counter()
        self.release(stage)
        deadline = t0 + timeout_s
        while sample() < total:
            if time.perf_counter() > deadline:
                break
            time.sleep(interval_s)
        return summarise_drain(what, total, samples, t0)


def summarise_drain(
    what: str, total: int, samples: list[tuple[float, int, float, dict[str, float]]], t0: float
) -> Drain:
    """Rate and CPU between the samples at 10 % and 90 % done."""
    rows = samples
    done_final = rows[-1][1]

    def first_at(frac: float) -> tuple[float, int, float, dict[str, float]]:
        goal = frac * total
        return next((r for r in rows if r[1] >= goal), rows[-1])

    lo, hi = first_at(0.1), first_at(0.9)
    if hi[1] <= lo[1] or hi[0] <= lo[0]:
        lo, hi = rows[0], rows[-1]
    span_t = max(hi[0] - lo[0], 1e-9)
    span_n = max(hi[1] - lo[1], 1)
    return Drain(
        what=what,
        total=total,
        done=done_final,
        wall_s=rows[-1][0] - t0,
        rate_per_s=span_n / span_t,
        cpu_ms_per_task=1000.0 * (hi[2] - lo[2]) / span_n,
        worker_cpu_util=(hi[2] - lo[2]) / span_t,
        others_cpu_util={k: (hi[3][k] - lo[3][k]) / span_t for k in lo[3]},
    )
