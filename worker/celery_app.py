"""The Celery application: ``celery -A worker.celery_app worker`` / ``beat``.

Configuration is built lazily from the environment on first use, so importing
this module never needs the gateway's secrets; a worker checks them at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import celery.apps.worker
import redis
from celery import Celery, signals
from celery.apps.beat import Beat
from celery.apps.worker import Worker
from kombu.utils.objects import cached_property

from worker import metrics
from worker.celeryconf import SUBMIT_TASK, celery_config
from worker.connection import redis_for
from worker.durability import require_durable
from worker.logs import configure_logging, get_logger, say_json
from worker.settings import ConfigError, Settings, get_settings


class _JsonWorker(Worker):  # type: ignore[misc]  # celery is untyped
    """``celery worker`` whose start-up banner is one JSON line, not a block of text."""

    def on_before_init(self, **kwargs: Any) -> None:
        # logging first: Celery warns about privileges (a Python warning) right after this
        s = get_settings()
        configure_logging(s.log_format, s.log_level)
        super().on_before_init(**kwargs)

    def emit_banner(self) -> None:
        get_logger("celery.worker").info(
            "celery.worker.start",
            hostname=self.hostname,
            concurrency=self.concurrency,
            pool=getattr(self.pool_cls, "__name__", str(self.pool_cls)),
            queues=sorted(self.app.amqp.queues.consume_from or self.app.amqp.queues),
        )


class _JsonBeat(Beat):  # type: ignore[misc]
    """``celery beat`` without its text banner: one JSON line instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["quiet"] = True
        super().__init__(*args, **kwargs)

    def run(self) -> None:
        s = get_settings()
        configure_logging(s.log_format, s.log_level)
        get_logger("celery.beat").info("celery.beat.start", schedule=str(self.schedule))
        super().run()


class _App(Celery):  # type: ignore[misc]
    @cached_property
    def Worker(self) -> Any:
        return self.subclass_with_self(_JsonWorker)

    @cached_property
    def Beat(self) -> Any:
        return self.subclass_with_self(_JsonBeat)


app = _App("payouts", include=["worker.tasks.payouts"])
app.add_defaults(lambda: celery_config(get_settings()))
# Celery prints "worker: Warm shutdown (MainProcess)" and friends from signal handlers
# straight to stdout; render them as JSON lines (same no-lock write as Celery's own).
celery.apps.worker.safe_say = lambda msg, f=None: say_json(msg, f)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Celery's own log output goes through our structlog configuration."""
    s = get_settings()
    configure_logging(s.log_format, s.log_level)


def _check_store(process: str) -> None:
    """Refuse to start with a store's Redis that evicts keys or breaks REDIS_DURABILITY."""
    s = get_settings()
    client = redis_for(s, pool_size=2)
    try:
        require_durable(client, s, process=process)
        if process == "worker":
            from worker.results import write_switch

            write_switch(client, s)  # whether results are owed is the store's word (D44)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        # unreachable now: the process's runtime checks on its first connection instead
        get_logger("payouts.worker").warning("redis.unreachable", process=process, error=type(exc).__name__)
    except ConfigError as exc:
        _refuse(get_logger("payouts.worker"), str(exc), process=process)
    finally:
        client.close()


@signals.worker_init.connect
def _check_worker(**_: Any) -> None:
    """Refuse to start without gateway settings, without the personal-data keys (PII_KEYS:
    a worker stores by-name creates and opens what it sends) or with a store that is not
    durable enough."""
    s = get_settings()
    log = get_logger("payouts.worker")
    try:
        s.require_gateway()
        s.require_pii()
    except ConfigError as exc:
        _refuse(log, str(exc))
    _check_store("worker")
    _refuse_sandbox(s, log)


def _refuse(log: Any, why: str, process: str = "worker") -> NoReturn:
    """Exit with one JSON line saying why (a SystemExit text would print a plain-text line)."""
    log.critical("worker.refusing_to_start", process=process, detail="refusing to start: " + why)
    raise SystemExit(1)


def _refuse_sandbox(s: Any, log: Any) -> None:
    """D6: a production configuration pointed at the sandbox moves no money; refuse it."""
    from worker.gateway import GatewayClient

    client = GatewayClient(s.require_gateway(), pool_size=1)
    try:
        sandbox = client.is_sandbox()
    finally:
        client.close()
    if sandbox is None:
        log.warning("gateway.unreachable_at_start")
    elif sandbox and not s.allow_sandbox:
        _refuse(
            log,
            "GATEWAY_BASE_URL answers as the sandbox (X-Payout-Sandbox); "
            "set PAYOUTS_ALLOW_SANDBOX=1 for tests and demos",
        )
    elif sandbox:
        log.warning("gateway.sandbox", detail="PAYOUTS_ALLOW_SANDBOX=1: no money moves")


@signals.beat_init.connect
def _check_beat(**_: Any) -> None:
    """Beat schedules the sweep of the store: the same durability rule."""
    _check_store("beat")


@signals.worker_shutdown.connect
def _flush_metrics(**_: Any) -> None:
    """The last buffered gateway counts reach Redis before the process exits."""
    metrics.flush()


def make_producer_app(settings: Settings) -> Celery:
    """A Celery app bound to ``settings`` (not the process's app): for a harness that
    publishes to a broker of its own while this process's app may be bound elsewhere."""
    producer = Celery("payouts-producer", set_as_current=False)
    producer.conf.update(celery_config(settings))
    return producer


class CeleryDispatcher:
    """The runtime's dispatcher (:class:`worker.dispatch.Dispatcher`) over a Celery app:
    a submit goes to the tasks' queue by name, a result to ``result_queue``."""

    def __init__(self, app: Celery, result_queue: str) -> None:
        self.app = app
        self.result_queue = result_queue

    def submit(self, payout_cl_id: str) -> None:
        self.app.send_task(SUBMIT_TASK, args=[payout_cl_id])

    def result(self, name: str, payload: Mapping[str, Any]) -> None:
        self.app.send_task(name, kwargs=dict(payload), queue=self.result_queue)


def queue_length(queue: str, celery_app: Celery | None = None) -> int:
    """Messages waiting in ``queue``, read through the broker's own connection (D49): the
    broker's transport and address, under Sentinel the master it resolves, so a broker
    that is not the store's Redis is still seen. A queue the broker does not know (kombu's
    Redis transport: no message yet) holds 0."""
    with (celery_app or app).pool.acquire(block=True, timeout=5) as conn:
        try:
            ok = conn.default_channel.queue_declare(queue=queue, passive=True)
        except conn.channel_errors:
            return 0
        return int(ok.message_count)
