"""One local stack: Redis, the sandbox, Celery workers, beat and the callback receiver.

The demo, the benchmarks, the integration tests and the chaos run all start their
processes through :class:`LocalStack` and build the worker's environment with
:func:`worker_env`, so a new setting is added in one place.

A stack either uses a Redis and a sandbox that already run (the test session's) or
starts and owns its own (:meth:`LocalStack.own`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from sandbox.config import SandboxConfig
from sandbox.process import SandboxProcess
from worker.harness.processes import CeleryProcess, RedisServer, free_port, wait_for
from worker.harness.receiver import GunicornReceiver, Receiver, ThreadReceiver
from worker.pii import KeyRing
from worker.runtime import Runtime, build_runtime, set_runtime
from worker.settings import Settings, load_settings, reset_settings
from worker.states import State


@dataclass(frozen=True)
class Credentials:
    """The merchant's credentials, shared by the stack's sandbox and its workers."""

    platform_id: str = "PF0001"
    platform_key: str = "local-stack-platform-key"
    authorization: str = "local-stack-authorization-token"
    #: PII_KEYS of the stack's processes (a fresh key per run; only the worker side holds it)
    pii_keys: str = field(default_factory=lambda: KeyRing.generate("k1"), repr=False)

    @classmethod
    def random(cls, platform_id: str = "PF0001") -> Credentials:
        """Fresh secrets, distinctive enough that a log check finds any leak."""
        return cls(platform_id, secrets.token_urlsafe(24), secrets.token_urlsafe(24))


#: the worker's settings on one machine: production's shape, timers short enough to
#: watch orders settle in seconds. Each caller overrides what it measures or proves.
WORKER_DEFAULTS: Mapping[str, str] = {
    "GATEWAY_CONNECT_TIMEOUT": "1",
    "GATEWAY_READ_TIMEOUT": "2",
    # our limiter off: the gateway's own 429s (a sandbox fault) must really happen
    "GATEWAY_MAX_RPS": "0",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "SWEEP_INTERVAL": "0.5",
    "CHECK_INTERVAL_MIN": "0.3",
    "CHECK_INTERVAL_MAX": "2",
    "SUBMIT_REDRIVE_AFTER": "3",
    "SUBMITTING_MARGIN": "1",
    "UNCONFIRMED_FIRST_CHECK": "0.2",
    "UNCONFIRMED_GRACE": "5",
    "WORKER_CONCURRENCY": "8",
    "PYTHONUNBUFFERED": "1",
    # set empty, so that nothing from the caller's environment leaks in
    "CELERY_BROKER_URL": "",
    "PAYOUT_NOTIFY_URL": "",
    "PAYOUT_BANK_LIST": "",
    "RESULT_TASK": "",
    "PAYOUTS_CRASH_AT": "",
    # the stack's gateway is the sandbox, which says so in every answer: allowed here only
    "PAYOUTS_ALLOW_SANDBOX": "1",
}

#: variables of the caller's environment that configure the worker: never inherited
_SETTING_PREFIXES = ("GATEWAY_", "PAYOUT_", "REDIS_", "CELERY_", "APPROVAL_", "PAYOUTS_")
_SETTING_NAMES = frozenset(
    {
        "NOT_FOUND_POLICY",
        "RESULT_TASK",
        "RESULT_QUEUE",
        "MAX_ORDER_AGE",
        "TASK_TIME_LIMIT",
        "BROKER_VISIBILITY_TIMEOUT",
        "EVENTS_MAXLEN",
        "ORDER_RETENTION_DAYS",
        "SWEEP_INTERVAL",
        "SWEEP_BATCH",
        "SUBMIT_RETRY_MAX",
        "SUBMIT_REDRIVE_AFTER",
        "SUBMITTING_MARGIN",
        "SUBMIT_CLAIM_BUDGET",
        "UNCONFIRMED_FIRST_CHECK",
        "UNCONFIRMED_GRACE",
        "UNKNOWN_STATUS_REVIEW_AFTER",
        "CHECK_INTERVAL_MIN",
        "CHECK_INTERVAL_MAX",
        "WORKER_CONCURRENCY",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "DUPLICATE_WINDOW",
        "DUPLICATE_KEY",
        "HOLD_CODES",
        "PAUSE_RECHECK",
        "BALANCE_POLL_INTERVAL",
        "RESULT_REDELIVER_AFTER",
        "DEAD_LETTER_QUEUE",
        "DEAD_LETTER_TTL",
        "PII_KEYS",
        "PII_KEYS_FILE",
        "PII_RETENTION_DAYS",
        "SUBMIT_TOKEN_WAIT",
        "CHECK_BATCH_PAGES",
        "CHECK_WINDOW",
        "CHECK_WINDOW_MARGIN",
    }
)


def configures_worker(name: str) -> bool:
    """Whether an environment variable is one of the worker's settings."""
    return name.startswith(_SETTING_PREFIXES) or name in _SETTING_NAMES


def worker_env(
    redis_url: str,
    gateway_url: str,
    credentials: Credentials,
    *,
    notify_url: str = "",
    base: Mapping[str, str] | None = None,
    **overrides: Any,
) -> dict[str, str]:
    """The environment of every worker, beat and receiver process of a local stack.

    ``base`` (e.g. ``os.environ``) contributes everything that does not configure the
    worker; then :data:`WORKER_DEFAULTS`, the stack's addresses and credentials, and
    ``overrides`` (setting name -> value) last.
    """
    env = {k: v for k, v in (base or {}).items() if not configures_worker(k)}
    env.update(WORKER_DEFAULTS)
    env.update(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_BASE_URL": gateway_url,
            "GATEWAY_PLATFORM_ID": credentials.platform_id,
            "GATEWAY_PLATFORM_KEY": credentials.platform_key,
            "GATEWAY_AUTHORIZATION": credentials.authorization,
            "PII_KEYS": credentials.pii_keys,
            "PAYOUT_NOTIFY_URL": notify_url,
        }
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def sandbox_config(credentials: Credentials, **overrides: Any) -> SandboxConfig:
    """A sandbox on a free loopback port that knows ``credentials``; fast, quiet, seeded."""
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "platform_id": credentials.platform_id,
        "platform_key": credentials.platform_key,
        "authorization": credentials.authorization,
        "pending_s": 0.1,
        "processing_s": 0.3,
        "failure_ratio": 0.0,
        "seed": 7,
        "callback_delays_s": (0.2, 0.5, 1.0, 2.0),
        "callback_timeout_s": 2.0,
        "quiet": True,
    }
    base.update(overrides)
    return SandboxConfig(**base)


class LocalStack:
    """The processes of one run, and this process's runtime over the same Redis.

    ``LocalStack(workdir, redis_url=..., gateway_url=..., credentials=...)`` uses a Redis
    and a gateway that already run; :meth:`own` starts (and later stops) both.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        redis_url: str,
        gateway_url: str,
        credentials: Credentials,
        callbacks: bool = True,
        bind_runtime: bool = True,
        base_env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.credentials = credentials
        self.callback_port = free_port()
        notify = f"http://127.0.0.1:{self.callback_port}/payouts/notify" if callbacks else ""
        self.env = worker_env(
            redis_url,
            gateway_url,
            credentials,
            notify_url=notify,
            base=base_env,
            **{**(overrides or {}), **settings},
        )
        self.settings: Settings = load_settings(self.env)
        self.rt: Runtime = build_runtime(self.settings)
        self.bound = bind_runtime
        if bind_runtime:
            set_runtime(self.rt)
        self.redis: redis.Redis = self.rt.redis
        self.workers: list[CeleryProcess] = []
        self.beats: list[CeleryProcess] = []
        self.receiver: Receiver | None = None
        self.redis_server: RedisServer | None = None
        self.sandbox: SandboxProcess | None = None
        self._saved_environ: dict[str, str] | None = None
        self._started = 0

    @classmethod
    def own(
        cls,
        workdir: Path | None = None,
        *,
        sandbox: SandboxConfig | None = None,
        credentials: Credentials | None = None,
        appendfsync: str = "always",
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> LocalStack:
        """Start a private Redis (unless ``redis_url``) and a sandbox, then the stack over them."""
        creds = credentials or Credentials.random()
        workdir = workdir or Path(tempfile.mkdtemp(prefix="payouts-stack-"))
        server = None if redis_url else RedisServer(appendfsync=appendfsync).start()
        gateway: SandboxProcess | None = None
        try:
            gateway = SandboxProcess(sandbox or sandbox_config(creds)).start()
            stack = cls(
                workdir,
                redis_url=redis_url or (server.url if server else ""),
                gateway_url=gateway.url,
                credentials=creds,
                **kwargs,
            )
        except BaseException:
            if gateway is not None:
                gateway.stop()
            if server is not None:
                server.cleanup()
            raise
        stack.redis_server, stack.sandbox = server, gateway
        return stack

    # ------------------------------------------------------------------ processes

    def start_receiver(self, *, gunicorn: bool = False) -> Receiver:
        """The callback receiver at ``PAYOUT_NOTIFY_URL``: a thread here, or gunicorn."""
        if gunicorn:
            receiver: Receiver = GunicornReceiver(
                self.env, self.callback_port, self.workdir / "receiver.log"
            ).start()
        else:
            receiver = ThreadReceiver(self.rt, self.callback_port).start()
        self.receiver = receiver
        return receiver

    def start_worker(
        self,
        *args: str,
        pool: str = "threads",
        concurrency: int | None = None,
        log_level: str = "INFO",
        name: str | None = None,
        env: Mapping[str, Any] | None = None,
    ) -> CeleryProcess:
        """``celery worker -P pool -c concurrency`` with the stack's environment (+ ``env``)."""
        n = self._started
        self._started += 1
        c = concurrency or int(self.env["WORKER_CONCURRENCY"])
        w = CeleryProcess(
            "worker",
            {**self.env, **{k: str(v) for k, v in (env or {}).items()}},
            name=name or f"w{n}-{self.callback_port}",
            args=["-P", pool, "-c", str(c), "--loglevel", log_level, *args],
            log_path=self.workdir / f"worker{n}.log",
        ).start()
        self.workers.append(w)
        return w

    def start_beat(self, *, log_level: str = "INFO") -> CeleryProcess:
        n = self._started
        self._started += 1
        b = CeleryProcess(
            "beat", self.env, args=["--loglevel", log_level], log_path=self.workdir / f"beat{n}.log"
        ).start()
        self.beats.append(b)
        return b

    def wait_workers_ready(self, timeout_s: float = 90.0) -> None:
        """Until every worker logged that it consumes (no broker round trip needed)."""

        def ready() -> bool:
            for w in self.workers:
                if not w.alive():
                    raise RuntimeError(f"celery worker {w.name} exited:\n{self.log_tail()}")
            return all(w.log_path is not None and b" ready." in w.log_path.read_bytes() for w in self.workers)

        wait_for(ready, timeout_s, interval_s=0.1, what="the workers to be ready")

    @contextlib.contextmanager
    def in_this_process(self) -> Iterator[None]:
        """This process (the web app's side: the producer) takes the stack's settings."""
        self.bind_this_process()
        try:
            yield
        finally:
            self.unbind_this_process()

    def bind_this_process(self) -> None:
        """Replace this process's environment with the stack's (undone by :meth:`stop`)."""
        if self._saved_environ is None:
            self._saved_environ = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        reset_settings()

    def unbind_this_process(self) -> None:
        if self._saved_environ is not None:
            os.environ.clear()
            os.environ.update(self._saved_environ)
            self._saved_environ = None
            reset_settings()

    # ------------------------------------------------------------------ reading

    def state(self, payout_cl_id: str) -> State | None:
        return self.rt.store.state_of(payout_cl_id)

    def wait_state(self, payout_cl_id: str, *states: State, timeout_s: float = 20.0) -> State:
        """Poll until the order is in one of ``states``; the logs' tail on failure."""

        def reached() -> State | None:
            s = self.state(payout_cl_id)
            return s if s in states else None

        try:
            return wait_for(reached, timeout_s, what=f"{payout_cl_id} in {[s.value for s in states]}")  # type: ignore[no-any-return]
        except TimeoutError:
            order = self.rt.store.get(payout_cl_id)
            raise AssertionError(
                f"{payout_cl_id} stuck: {order.public() if order else None}\n{self.log_tail()}"
            ) from None

    def log_paths(self) -> list[Path]:
        return sorted(self.workdir.glob("*.log"))

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_paths())

    def log_tail(self, n: int = 40) -> str:
        lines: list[str] = []
        for path in self.log_paths():
            lines += [f"{path.name}: {line}" for line in path.read_text(errors="replace").splitlines()[-n:]]
        return "\n".join(lines[-n:])

    def json_logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    # ------------------------------------------------------------------ stop

    def stop_workers(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop()
        self.workers.clear()

    def stop(self) -> None:
        """Stop everything the stack started, in reverse order; safe to call twice."""
        self.stop_workers()
        for b in self.beats:
            with contextlib.suppress(Exception):
                b.stop()
        self.beats.clear()
        if self.receiver is not None:
            with contextlib.suppress(Exception):
                self.receiver.stop()
            self.receiver = None
        if self.bound:
            set_runtime(None)
        with contextlib.suppress(Exception):
            self.rt.close()
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                self.sandbox.stop()
            self.sandbox = None
        if self.redis_server is not None:
            with contextlib.suppress(Exception):
                self.redis_server.cleanup()
            self.redis_server = None
        self.unbind_this_process()
