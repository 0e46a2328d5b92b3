"""Per-process wiring: settings, one Redis client, the store, the gateway client.

Created lazily on first use in each process (after a prefork fork too), so no
socket is shared between processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from worker import keys, metrics
from worker.celery_app import CeleryDispatcher, app, queue_length
from worker.celeryconf import SUBMIT_QUEUE
from worker.connection import redis_for
from worker.dispatch import Dispatcher
from worker.durability import ConnectGuard, require_durable
from worker.gateway import GatewayClient
from worker.logs import get_logger
from worker.ratelimit import RateLimiter
from worker.settings import Settings, get_settings
from worker.store import NO_QUEUE, OrderStore

log = get_logger("payouts.runtime")


#: how long a submit-queue length read through a separate broker is reused (D49)
BACKLOG_CACHE_S = 1.0


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: OrderStore
    limiter: RateLimiter
    #: how this process publishes (a submit, a result): the Celery app unless replaced (D63)
    dispatch: Dispatcher
    #: the submit queue's length read through the broker's own connection, when the broker
    #: is not the store's Redis (D49); None: not readable (the backlog counts as unknown)
    broker_queue_length: Callable[[], int] | None = None
    _gateway: GatewayClient | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _backlog: tuple[float, int] | None = field(default=None, repr=False)

    def submit_backlog(self) -> int | None:
        """Submit messages waiting at the broker (the D17 backpressure), None if unknown.

        The store's Redis when it is the broker (one LLEN, as ``create.lua`` reads it);
        otherwise through the broker's own connection, reused for ``BACKLOG_CACHE_S``. A
        broker that does not answer gives None (the caller counts nothing queued)."""
        if self.store.submit_queue != NO_QUEUE:
            return int(self.redis.llen(self.store.submit_queue))
        if self.broker_queue_length is None:
            return None
        now = time.monotonic()
        cached = self._backlog
        if cached is not None and now - cached[0] < BACKLOG_CACHE_S:
            return cached[1]
        try:
            n = self.broker_queue_length()
        except Exception as exc:  # the broker is down: its publishes fail too
            log.warning("payouts.broker.queue_length_failed", error=type(exc).__name__)
            return None
        self._backlog = (now, n)
        return n

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


def build_runtime(
    settings: Settings,
    *,
    check_durability: bool = True,
    process: str = "payouts runtime",
    dispatch: Dispatcher | None = None,
) -> Runtime:
    """Wire one process. ``check_durability``: refuse (ConfigError) a store that breaks
    ``REDIS_DURABILITY`` before anything uses it; only ``payouts doctor``-like reporting
    tools pass False. ``dispatch``: how the process publishes (default: the Celery app)."""
    # the deferred durability check runs on a client built like the store's own (D47)
    guard = ConnectGuard(lambda: redis_for(settings, pool_size=1, identity_check=False))
    client = redis_for(settings, pool_size=settings.worker_concurrency + 16, guard=guard)
    if check_durability:
        try:
            require_durable(client, settings, process=process)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # not reachable now: every new connection checks first until one passes
            guard.pending = (settings, process)
    # create.lua reads the submit backlog when the broker is this same Redis; otherwise
    # the sweep and the deferrals read it through the broker's own connection (D49)
    same_broker = broker_is_store(settings)
    broker_queue_length = None if same_broker else (lambda: queue_length(SUBMIT_QUEUE))
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
    if dispatch is None:
        dispatch = CeleryDispatcher(app, settings.result_queue)
    return Runtime(settings, client, store, RateLimiter(client, rps), dispatch, broker_queue_length)


def broker_is_store(settings: Settings) -> bool:
    """Is the broker the store's own Redis (same server, same db)? Without
    ``CELERY_BROKER_URL`` it always is, under Sentinel too (the broker follows the same
    master name and db); with it, when the two URLs are the same (D49)."""
    return not settings.broker_url or settings.broker_url == settings.redis_url


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
