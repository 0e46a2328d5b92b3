"""Per-process wiring: settings, one Redis client, the store, the gateway client.

Created lazily on first use in each process (after a prefork fork too), so no
socket is shared between processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from worker import keys, metrics
from worker.celery_app import app
from worker.celeryconf import SUBMIT_QUEUE
from worker.connection import redis_for
from worker.durability import ConnectGuard, require_durable
from worker.gateway import GatewayClient
from worker.ratelimit import RateLimiter
from worker.settings import Settings, get_settings
from worker.store import OrderStore


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: OrderStore
    limiter: RateLimiter
    #: called with (task name, payload) to send a Celery message by name
    send_task: Callable[[str, dict[str, Any]], None] | None = None
    _gateway: GatewayClient | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def gateway(self) -> GatewayClient:
        if self._gateway is None:
            with self._lock:
                if self._gateway is None:
                    cfg = self.settings.require_gateway()
                    self._gateway = GatewayClient(
                        cfg, pool_size=self.settings.worker_concurrency + 4, observe=self._count_gateway
                    )
        return self._gateway

    def _count_gateway(self, endpoint: str, outcome: str, code: str, seconds: float) -> None:
        metrics.count_gateway(self.redis, endpoint, outcome, code, seconds)

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
        self.redis.close()


def _sender(settings: Settings) -> Callable[[str, dict[str, Any]], None]:
    def send(name: str, payload: dict[str, Any]) -> None:
        app.send_task(name, kwargs=payload, queue=settings.result_queue)

    return send


def build_runtime(
    settings: Settings, *, check_durability: bool = True, process: str = "payouts runtime", **kw: Any
) -> Runtime:
    """Wire one process. ``check_durability``: refuse (ConfigError) a store that breaks
    ``REDIS_DURABILITY`` before anything uses it; only ``payouts doctor``-like reporting
    tools pass False."""
    guard = ConnectGuard()
    client = redis_for(settings, pool_size=settings.worker_concurrency + 16, guard=guard)
    if check_durability:
        try:
            require_durable(client, settings, process=process)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # not reachable now: every new connection checks first until one passes
            guard.pending = (settings, process)
    # create.lua reads the submit backlog when the broker is this same Redis
    same_broker = settings.effective_broker_url == settings.redis_url
    rps = settings.gateway.max_rps if settings.gateway else 0.0
    store = OrderStore(
        client,
        events_maxlen=settings.events_maxlen,
        retention_s=settings.order_retention_days * 86400.0,
        result_redeliver_s=settings.result_redeliver_s if settings.result_task else None,
        replica_acks=settings.required_replica_acks,
        replica_ack_timeout_s=settings.redis_replica_ack_timeout_s,
        submit_queue=SUBMIT_QUEUE if same_broker else None,
        submit_rate=rps,
        pii_keys=settings.pii_keys,
        pii_retention_s=settings.pii_retention_days * 86400.0,
    )
    if settings.result_task:
        # a process that publishes results says they are owed (turned off only by the
        # workers' sweep, worker/results.py write_switch): the store decides, D44
        with contextlib.suppress(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            client.set(keys.RESULTS, repr(float(settings.result_redeliver_s)))  # else: the sweep
    kw.setdefault("send_task", _sender(settings))
    return Runtime(settings, client, store, RateLimiter(client, rps), **kw)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built on first use."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = build_runtime(get_settings())
    return _runtime


def set_runtime(rt: Runtime | None) -> None:
    """Replace the process's runtime (tests, CLI)."""
    global _runtime
    _runtime = rt


def _after_fork() -> None:
    global _runtime, _runtime_lock
    _runtime = None
    _runtime_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
