"""The Celery application: ``celery -A worker.celery_app worker`` / ``beat``.

Configuration is built lazily from the environment on first use, so importing
this module never needs the gateway's secrets; a worker checks them at start.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from worker.celeryconf import celery_config
from worker.connection import check_redis_persistence
from worker.logs import configure_logging, get_logger
from worker.settings import Settings, get_settings

app = Celery("payouts", include=["tasks.payouts"])
app.add_defaults(lambda: celery_config(get_settings()))


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Celery's own log output goes through our structlog configuration."""
    s = get_settings()
    configure_logging(s.log_format, s.log_level)


@signals.worker_init.connect
def _check_worker(**_: Any) -> None:
    """Refuse to start without gateway settings or with a Redis that evicts keys."""
    s = get_settings()
    s.require_gateway()
    problems, warnings = check_redis_persistence(s.redis_url)
    log = get_logger("payouts.worker")
    for w in warnings:
        log.warning("redis.warning", detail=w)
    if problems:
        raise SystemExit("refusing to start: " + "; ".join(problems))
    _refuse_sandbox(s, log)


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
        raise SystemExit(
            "refusing to start: GATEWAY_BASE_URL answers as the sandbox (X-Payout-Sandbox); "
            "set PAYOUTS_ALLOW_SANDBOX=1 for tests and demos"
        )
    elif sandbox:
        log.warning("gateway.sandbox", detail="PAYOUTS_ALLOW_SANDBOX=1: no money moves")


@signals.task_prerun.connect
def _bind_task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    import structlog

    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    import structlog

    structlog.contextvars.clear_contextvars()


def make_producer_app(settings: Settings) -> Celery:
    """A Celery app bound to ``settings`` (not the process's app): for a harness that
    publishes to a broker of its own while this process's app may be bound elsewhere."""
    producer = Celery("payouts-producer", set_as_current=False)
    producer.conf.update(celery_config(settings))
    return producer


#: this worker's node name (``celery -n``), known once the worker is set up
_worker_name: str | None = None


@signals.celeryd_after_setup.connect
def _remember_name(sender: Any = None, **_: Any) -> None:
    global _worker_name
    _worker_name = str(sender) if sender else None


@signals.task_postrun.connect
def _heartbeat(**_: Any) -> None:
    """A finished task proves this worker consumes: write its heartbeat (throttled)."""
    if _worker_name is None:
        return
    from worker.liveness import write_heartbeat
    from worker.runtime import get_runtime

    try:
        write_heartbeat(get_runtime().redis, _worker_name)
    except Exception:
        get_logger("payouts.worker").warning("heartbeat.failed")


def worker_name() -> str | None:
    """This worker's node name (None outside a worker)."""
    return _worker_name
