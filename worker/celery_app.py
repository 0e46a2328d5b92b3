"""The Celery application: ``celery -A worker.celery_app worker`` / ``beat``.

Configuration is built lazily from the environment on first use, so importing
this module never needs the gateway's secrets; a worker checks them at start.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, signals

from worker.celeryconf import celery_config
from worker.connection import redis_for
from worker.durability import require_durable
from worker.logs import configure_logging, get_logger
from worker.settings import ConfigError, Settings, get_settings

app = Celery("payouts", include=["tasks.payouts"])
app.add_defaults(lambda: celery_config(get_settings()))


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
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        # unreachable now: the process's runtime checks on its first connection instead
        get_logger("payouts.worker").warning("redis.unreachable", process=process, error=type(exc).__name__)
    except ConfigError as exc:
        get_logger("payouts.worker").error("redis.refused", process=process, detail=str(exc))
        raise SystemExit(str(exc)) from None
    finally:
        client.close()


@signals.worker_init.connect
def _check_worker(**_: Any) -> None:
    """Refuse to start without gateway settings or with a store that is not durable enough."""
    s = get_settings()
    s.require_gateway()
    _check_store("worker")
    log = get_logger("payouts.worker")
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


@signals.beat_init.connect
def _check_beat(**_: Any) -> None:
    """Beat schedules the sweep of the store: the same durability rule."""
    _check_store("beat")


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
