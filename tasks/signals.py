"""Task-level signal handlers: log context per task, and the per-worker heartbeat.

Imported by :mod:`worker.tasks.payouts`, which every worker loads (the app's ``include``), so
each worker connects them once. They live here, in the Celery surface, and not in
``worker/celery_app.py``: the heartbeat needs the process's runtime, and the runtime
publishes through the app, so keeping them beside the app would tie the two in a circle (D64).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import signals

from worker.liveness import write_heartbeat
from worker.logs import get_logger
from worker.payout import ID_RE
from worker.runtime import get_runtime

#: this worker's node name (``celery -n``), known once the worker is set up
_worker_name: str | None = None


def order_id_of(args: Any, kwargs: Any) -> str | None:
    """The order a task concerns: its single positional arg, or ``kwargs['payout_cl_id']``."""
    value: Any = None
    if isinstance(args, (list, tuple)) and len(args) == 1:
        value = args[0]
    elif isinstance(kwargs, dict):
        value = kwargs.get("payout_cl_id")
    return value if isinstance(value, str) and ID_RE.fullmatch(value) else None


@signals.task_prerun.connect
def _bind_task_context(
    task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    """Every line a task writes, Celery's own succeeded/retry/failure lines included, carries
    the task id and (when the task concerns one order) ``payout_cl_id``."""
    structlog.contextvars.clear_contextvars()
    ctx: dict[str, Any] = {"task_id": task_id, "task": getattr(task, "name", None)}
    order = order_id_of(args, kwargs)
    if order:
        ctx["payout_cl_id"] = order
    structlog.contextvars.bind_contextvars(**ctx)


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


@signals.celeryd_after_setup.connect
def _remember_name(sender: Any = None, **_: Any) -> None:
    global _worker_name
    _worker_name = str(sender) if sender else None


@signals.task_postrun.connect
def _heartbeat(**_: Any) -> None:
    """A finished task proves this worker consumes: write its heartbeat (throttled)."""
    if _worker_name is None:
        return
    try:
        write_heartbeat(get_runtime().redis, _worker_name)
    except Exception:
        get_logger("payouts.worker").warning("heartbeat.failed")


def worker_name() -> str | None:
    """This worker's node name (None outside a worker)."""
    return _worker_name
