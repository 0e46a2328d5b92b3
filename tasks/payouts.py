"""Thin Celery tasks: bind the log context, call one domain function, dispatch the next step.

Every message carries only the merchant order id (``payout_cl_id``).
"""

from __future__ import annotations

import json
from typing import Any

import kombu.exceptions
import redis
import structlog
from celery.exceptions import Reject
from celery.worker.request import Request

from worker.celery_app import app, worker_name
from worker.celeryconf import (
    CHECK_BATCH_TASK,
    CHECK_TASK,
    CREATE_TASK,
    HEARTBEAT_TASK,
    SUBMIT_TASK,
    SWEEP_TASK,
)
from worker.checks import check_order, check_window
from worker.errors import DuplicatePayout, InvalidPayout, NotDurable
from worker.liveness import write_heartbeat
from worker.logs import get_logger
from worker.pii import SealBroken
from worker.producer import store_payout
from worker.results import DUPLICATE_REQUEST, report_duplicate, report_refused
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


@app.task(name=HEARTBEAT_TASK, ignore_result=True)
def heartbeat() -> str:
    """Sent to one worker's direct queue by ``payouts health --worker``: prove it consumes."""
    name = worker_name() or ""
    if name:
        write_heartbeat(get_runtime().redis, name, force=True)
    return name


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Lease due orders and dispatch submit/check for each."""
    result = sweep_due(get_runtime())
    _publish(submit, result.submit)
    checks = result.check
    if len(checks) >= BATCH_CHECK_THRESHOLD:
        for i in range(0, len(checks), 500):
            chunk = checks[i : i + 500]
            # Flower and the logs show a count, not 500 ids under no payout_cl_id key
            check_batch.apply_async((chunk,), argsrepr=f"({len(chunk)} order ids)", kwargsrepr="{}")
    else:
        _publish(check, checks)
    summary = {
        "leased": result.leased,
        "submit": len(result.submit),
        "check": len(checks),
        "unconfirmed": len(result.unconfirmed),
        "dropped": result.dropped,
        "held_back": result.held_back,
        "submit_queue": result.submit_queue,
    }
    if result.leased:
        log.info("payouts.sweep", **summary)
    return summary


def _shown(kwargs_or_id: Any) -> str:
    """What a by-name create may show anywhere (Flower, inspect, events, logs): its order id.
    Takes the task's kwargs or the order id itself."""
    if isinstance(kwargs_or_id, dict):
        pid = kwargs_or_id.get("payout_cl_id", "")
    else:
        pid = kwargs_or_id if isinstance(kwargs_or_id, str) else ""
    return repr({"payout_cl_id": str(pid)[:32]})


class RedactedRequest(Request):  # type: ignore[misc]  # celery is untyped
    """A by-name create carries the account number and name in its kwargs: keep them out
    of task events (Flower), ``celery inspect`` and Celery's own log lines (D13)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        shown = _shown(self.kwargs)
        self._argsrepr = "()"
        self._kwargsrepr = shown
        self._request_dict["argsrepr"] = "()"
        self._request_dict["kwargsrepr"] = shown

    def info(self, safe: bool = False) -> dict[str, Any]:
        """``inspect active/reserved/scheduled`` and Flower's worker page call this without
        ``safe``, which would return the raw kwargs: always answer the redacted reprs."""
        out: dict[str, Any] = super().info(safe=True)
        return out


class RedactedTask(app.Task):  # type: ignore[misc,name-defined]
    """Every publish of a by-name create -- its autoretries above all, which Celery re-sends
    through ``signature_from_request`` without the original reprs -- carries redacted
    ``argsrepr``/``kwargsrepr`` headers, so neither the message header nor its ``task-sent``
    event holds the account number or the name."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        options["argsrepr"] = "()"
        options["kwargsrepr"] = _shown(kwargs)
        return super().apply_async(args, kwargs, **options)


#: errors after which a by-name create is tried again: the order is not stored yet (or not
#: yet on enough replicas), so the sweep cannot recover this message (Redis unreachable,
#: read-only replica after a failover, out of memory under noeviction, D11; the enqueue not
#: acknowledged by the replicas in time, D42). Repeating the create is idempotent for the
#: same id and data. Validation errors are never retried.
CREATE_RETRY_ON = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    kombu.exceptions.OperationalError,
    NotDurable,
)
#: error replies of a store that refuses writes for a while, which redis-py raises as a
#: plain ResponseError (D42): no good replica (``min-replicas-to-write``), a failed RDB
#: save (``stop-writes-on-bgsave-error``), a script or function running too long
CREATE_RETRY_REPLIES = ("NOREPLICAS", "MISCONF", "BUSY")
CREATE_MAX_RETRIES = 30


def _retryable(exc: BaseException) -> bool:
    """A storage refusal a later attempt may get past (never a validation error)."""
    if isinstance(exc, CREATE_RETRY_ON):
        return True
    if isinstance(exc, redis.exceptions.ResponseError):
        # a pipeline's error reads "Command # 1 (EVALSHA ...) of pipeline caused error: CODE ..."
        text = str(exc)
        head, sep, tail = text.partition("caused error: ")
        return (tail if sep else head).split(" ", 1)[0] in CREATE_RETRY_REPLIES
    return False


@app.task(
    name=CREATE_TASK,
    base=RedactedTask,
    ignore_result=True,
    bind=True,
    Request=RedactedRequest,
    max_retries=CREATE_MAX_RETRIES,
)
def create(self: Any, **fields: Any) -> str:
    """Enqueue by task name: validate, store and submit.

    Bad input is reported to the web app (event + RESULT_TASK ``refused``), never retried;
    an id that exists with other data is answered with the stored order's real state under
    the kind ``duplicate_request`` (D39).
    Storage errors are retried with backoff; after the last retry the message goes to
    the dead-letter queue (DEAD_LETTER_QUEUE) instead of being acknowledged and lost.
    Every message this worker publishes again (a retry, a dead letter) carries the fields
    sealed (``{payout_cl_id, sealed}``, PII_KEYS): only the web app's own message holds
    them in plain text.
    """
    pid = str(fields.get("payout_cl_id", ""))[:32]
    structlog.contextvars.bind_contextvars(payout_cl_id=pid)
    rt = get_runtime()
    if SEALED in fields:
        try:
            fields = _unseal(rt, fields)
        except SealBroken as exc:  # retired key, or altered: never guessed at, never stored
            log.error("payout.create.unreadable", reason=str(exc))
            report_refused(rt, pid, "the sealed message does not open (PII_KEYS)")
            return "unreadable"
    try:
        try:
            order_id, needs_submit = store_payout(rt, fields)
        except InvalidPayout as exc:
            log.error("payout.create.refused", error=str(exc))
            report_refused(rt, pid, exc.problems)
            return "refused"
        except DuplicatePayout:
            # the id is taken (D39): report the stored order's real state, never `refused`
            state = report_duplicate(rt, pid)
            log.error("payout.create.duplicate_request", state=state)
            return DUPLICATE_REQUEST
    except (*CREATE_RETRY_ON, redis.exceptions.ResponseError) as exc:
        if not _retryable(exc):
            raise
        if self.request.retries >= self.max_retries:
            _dead_letter(rt, fields, exc)
            return "dead_letter"
        delay = min(60, 2 ** (self.request.retries + 1))
        log.warning("payout.create.retry", error=type(exc).__name__, attempt=self.request.retries + 1)
        try:
            # the retried message shows only the order id (the kwargs hold personal data)
            raise self.retry(
                exc=exc,
                countdown=delay,
                kwargs=_sealed(rt, pid, fields),
                kwargsrepr=_shown(pid),
                argsrepr="()",
            ) from None
        except Reject:
            # Celery rejects *without* requeue when the retry cannot be published (the
            # broker is the same failing Redis): requeue instead, never drop the order
            raise Reject(exc, requeue=True) from None
    if needs_submit:
        submit.delay(order_id)
    return "created" if needs_submit else "exists"


#: the kwarg of a create message whose payout fields are sealed (a retry or a dead letter)
SEALED = "sealed"
#: the associated data's field name of a sealed create message (with its order id)
_MESSAGE_FIELD = "create_message"


def _sealed(rt: Any, pid: str, fields: dict[str, Any]) -> dict[str, str]:
    """The create's kwargs with the payout fields sealed under PII_KEYS, bound to ``pid``."""
    ring = rt.settings.require_pii()
    return {"payout_cl_id": pid, SEALED: ring.seal(pid, _MESSAGE_FIELD, json.dumps(fields))}


def _unseal(rt: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    pid, sealed = kwargs.get("payout_cl_id"), kwargs.get(SEALED)
    if not isinstance(pid, str) or not isinstance(sealed, str) or set(kwargs) != {"payout_cl_id", SEALED}:
        raise SealBroken("not a sealed create message")
    fields = json.loads(rt.settings.require_pii().open(pid, _MESSAGE_FIELD, sealed))
    if not isinstance(fields, dict):
        raise SealBroken("not a sealed create message")
    return fields


def _dead_letter(rt: Any, fields: dict[str, Any], exc: BaseException) -> None:
    """Park the message, its fields sealed, on the dead-letter queue for DEAD_LETTER_TTL;
    if even that fails, requeue it."""
    pid = str(fields.get("payout_cl_id", ""))[:32]
    queue, ttl_s = rt.settings.dead_letter_queue, rt.settings.dead_letter_ttl_s
    try:
        app.send_task(
            CREATE_TASK,
            kwargs=_sealed(rt, pid, fields),
            queue=queue,
            kwargsrepr=_shown(pid),
            argsrepr="()",
            # replayed after this, the worker discards it (Celery's expires)
            expires=ttl_s,
        )
    except Exception:
        log.error("payout.create.dead_letter_failed", error=type(exc).__name__)
        raise Reject(exc, requeue=True) from None
    _expire_queue(queue, ttl_s)
    log.error("payout.create.dead_letter", error=type(exc).__name__, queue=queue, ttl_s=ttl_s)


def _expire_queue(queue: str, ttl_s: float) -> None:
    """The dead-letter list itself expires DEAD_LETTER_TTL after its newest message (each
    dead letter renews it): parked messages do not stay in the broker for ever."""
    try:
        with app.connection_for_write() as conn:
            conn.default_channel.client.expire(queue, max(1, int(ttl_s)))
    except Exception as exc:  # the message is parked; its own expiry still applies
        log.warning("payout.create.dead_letter_ttl_failed", error=type(exc).__name__)


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
