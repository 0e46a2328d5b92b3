"""Thin Celery tasks: bind the log context, call one domain function, dispatch the next step.

Every message carries only the merchant order id (``payout_cl_id``).
"""

from __future__ import annotations

from typing import Any

import redis
import structlog
from celery.worker.request import Request

from worker.celery_app import app
from worker.celeryconf import CHECK_BATCH_TASK, CHECK_TASK, CREATE_TASK, SUBMIT_TASK, SWEEP_TASK
from worker.checks import check_order, check_window
from worker.errors import DuplicatePayout, InvalidPayout
from worker.logs import get_logger
from worker.producer import store_payout
from worker.runtime import get_runtime
from worker.submission import submit_order
from worker.sweep import sweep_due

log = get_logger("payouts.tasks")

#: above this many due checks in one sweep, check with the list query's window
BATCH_CHECK_THRESHOLD = 50


@app.task(name=SUBMIT_TASK, ignore_result=True)
def submit(payout_cl_id: str) -> str:
    """Claim the order and send its create request (at most once)."""
    structlog.contextvars.bind_contextvars(payout_cl_id=payout_cl_id)
    return submit_order(get_runtime(), payout_cl_id).value


@app.task(name=CHECK_TASK, ignore_result=True)
def check(payout_cl_id: str) -> str:
    """Query the gateway for one open order and apply its status."""
    structlog.contextvars.bind_contextvars(payout_cl_id=payout_cl_id)
    return check_order(get_runtime(), payout_cl_id).value


@app.task(name=CHECK_BATCH_TASK, ignore_result=True)
def check_batch(payout_cl_ids: list[str]) -> int:
    """Check many due orders with windowed list queries; check the rest singly."""
    rest = check_window(get_runtime(), payout_cl_ids)
    _publish(check, rest)
    return len(payout_cl_ids) - len(rest)


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Lease due orders and dispatch submit/check for each."""
    result = sweep_due(get_runtime())
    _publish(submit, result.submit)
    checks = result.check
    if len(checks) >= BATCH_CHECK_THRESHOLD:
        for i in range(0, len(checks), 500):
            check_batch.delay(checks[i : i + 500])
    else:
        _publish(check, checks)
    summary = {
        "leased": result.leased,
        "submit": len(result.submit),
        "check": len(checks),
        "unconfirmed": len(result.unconfirmed),
        "dropped": result.dropped,
    }
    if result.leased:
        log.info("payouts.sweep", **summary)
    return summary


class RedactedRequest(Request):  # type: ignore[misc]  # celery is untyped
    """A by-name create carries the account number and name in its kwargs: keep them out
    of task events (Flower) and Celery's own log lines; only the order id is shown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kw = self.kwargs if isinstance(self.kwargs, dict) else {}
        shown = repr({"payout_cl_id": str(kw.get("payout_cl_id", ""))[:32]})
        self._argsrepr = "()"
        self._kwargsrepr = shown
        self._request_dict["argsrepr"] = "()"
        self._request_dict["kwargsrepr"] = shown


@app.task(
    name=CREATE_TASK,
    ignore_result=True,
    Request=RedactedRequest,
    # The order is not stored yet, so the sweep cannot recover this message: while Redis
    # is unreachable, retry (only these errors; validation errors are never retried).
    autoretry_for=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=30,
)
def create(**fields: Any) -> str:
    """Enqueue by task name: validate, store and submit. Bad input is logged, not retried."""
    structlog.contextvars.bind_contextvars(payout_cl_id=str(fields.get("payout_cl_id", ""))[:32])
    try:
        order_id, created = store_payout(get_runtime(), fields)
    except (InvalidPayout, DuplicatePayout) as exc:
        log.error("payout.create.refused", error=str(exc))
        return "refused"
    if created:
        submit.delay(order_id)
    return "created" if created else "exists"


def _publish(task: Any, ids: list[str]) -> None:
    """Publish one message per id over a single pooled producer connection.

    kombu's batch pipelines the LPUSHes (flushed every 1000 and at the end): 0.3 ms a
    message instead of 0.8 (bench). Messages not flushed when publishing fails are
    dropped; their orders stay leased and the next sweep after the lease sends them.
    """
    if not ids:
        return
    with app.producer_or_acquire() as producer, producer.batch():
        for i in ids:
            task.apply_async((i,), producer=producer)
