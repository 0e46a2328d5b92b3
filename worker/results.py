"""Results that always arrive (D9, D11): the optional ``RESULT_TASK`` message to the web app.

Delivery is at least once. Whether a result is owed is the store's data, not each process's
environment (D44): the workers write the switch :data:`worker.keys.RESULTS`
(:func:`write_switch`, at start and every sweep); while it is present, a move to a final
state writes ``result_pending=1`` in the same atomic transition and keeps the order in the
due-index (transition.lua), whichever process made the move (a console mounted in the web
app, an operator's CLI). :func:`deliver` publishes and then clears the flag, and the sweep
calls it again for every order whose flag is still set; when results are off, the sweep
clears the flags instead.
The web app must treat a repeated result for the same ``payout_cl_id`` and state as one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from worker import keys
from worker.errors import FieldError
from worker.logs import get_logger
from worker.states import FINAL
from worker.store import REMOVE, stamp

if TYPE_CHECKING:  # the runtime publishes through the app, whose start-up reads results (D64)
    from worker.runtime import Runtime

log = get_logger("payouts.results")

#: the state a by-name create refused for bad input is reported with
REFUSED = "refused"
#: the ``kind`` of the answer to a by-name create for an id that already exists with other
#: data (D39): it carries the stored order's real state, never a terminal state of its own
DUPLICATE_REQUEST = "duplicate_request"
#: the state a duplicate request reports when only the id's tombstone is left
EXPIRED = "expired"


def write_switch(client: Any, settings: Any) -> bool:
    """The workers' word on whether results are owed: present while RESULT_TASK is set."""
    if settings.result_task:
        client.set(keys.RESULTS, repr(float(settings.result_redeliver_s)))
        return True
    client.delete(keys.RESULTS)
    return False


def clear_owed(rt: Runtime, payout_cl_id: str, state: Any) -> None:
    """Results are off: a flag left from when they were on is cleared and the order
    unscheduled (it would otherwise be re-leased every lease until retention, D44)."""
    rt.store.transition(
        payout_cl_id,
        None,
        sources={state},
        reason="results off",
        due=REMOVE,
        expect=("result_pending", "1"),
        fields={"result_pending": None},
    )


def deliver(rt: Runtime, payout_cl_id: str) -> bool:
    """Publish the result of a final order and clear its pending flag; False if not sent.

    A publish error is logged and leaves the flag set: the sweep sends it again.
    """
    name = rt.settings.result_task
    if not name:
        return False
    order = rt.store.get(payout_cl_id, with_history=False)
    if order is None or order.state not in FINAL:
        return False
    payload = {
        "payout_cl_id": order.payout_cl_id,
        "state": order.state.value,
        "payout_id": order.payout_id,
        "amount": order.amount,
        "reason": order.reason or order.fields.get("last_gateway", ""),
    }
    try:
        rt.dispatch.result(name, payload)
    except Exception as exc:  # the broker is down: the sweep re-sends
        log.error("payout.result.publish_failed", error=type(exc).__name__)
        return False
    if order.fields.get("result_pending") == "1":
        rt.store.transition(
            payout_cl_id,
            None,
            sources={order.state},
            reason="result sent",
            due=REMOVE,
            expect=("result_pending", "1"),
            fields={"result_pending": None, "result_sent_at": stamp(time.time())},
        )
    return True


def _text(value: object, n: int) -> str:
    """Printable and encodable (a field name may hold a lone surrogate)."""
    return str(value)[:n].encode("utf-8", "backslashreplace").decode("utf-8")


def report_refused(rt: Runtime, payout_cl_id: str, problems: Sequence[FieldError] | str) -> None:
    """A by-name create was refused: tell the web app (event + RESULT_TASK ``refused``).

    Only field names and rules are sent, never the values (no personal data). Raises
    when the result cannot be published, so the caller can retry.
    """
    if isinstance(problems, str):
        errors: list[dict[str, str]] = [{"field": "payout_cl_id", "rule": _text(problems, 200)}]
    else:
        errors = [{"field": _text(p.field, 40), "rule": _text(p.rule, 200)} for p in problems]
    pid = _text(payout_cl_id, 32)
    text = "; ".join(f"{e['field']}: {e['rule']}" for e in errors)[:200]
    rt.redis.xadd(
        keys.EVENTS,
        {
            "payout_cl_id": pid,
            "from": "",
            "to": REFUSED,
            "reason": text,
            "at": stamp(time.time()),
            "payout_id": "",
        },
        maxlen=rt.settings.events_maxlen,
        approximate=True,
    )
    name = rt.settings.result_task
    if name:
        payload: dict[str, Any] = {
            "payout_cl_id": pid,
            "state": REFUSED,
            "payout_id": None,
            "amount": None,
            "reason": text,
            "errors": errors,
        }
        rt.dispatch.result(name, payload)


def report_duplicate(rt: Runtime, payout_cl_id: str) -> str:
    """A by-name create named an id that exists with other data, or whose order expired
    (D39): answer with what the store holds, under the distinct kind ``duplicate_request``.

    Never a terminal state this request did not reach: the result carries the stored
    order's real state (``expired`` when only the id's tombstone is left), its
    ``payout_id`` and amount; the event, when the order is held, says ``from == to`` (no
    state change). A web app that maps ``state`` to an outcome reads the truth; one that
    reads ``kind`` knows the request itself was not taken. Returns the state reported.
    Raises when the result cannot be published, so the caller can retry.
    """
    order = rt.store.get(payout_cl_id, with_history=False)
    state = order.state.value if order is not None else EXPIRED
    reason = "duplicate request: this payout_cl_id already exists with other data (not taken)"
    if order is None:
        reason = "duplicate request: this payout_cl_id was used before and its order has expired"
    if order is not None:
        rt.redis.xadd(
            keys.EVENTS,
            {
                "payout_cl_id": order.payout_cl_id,
                "from": state,
                "to": state,
                "reason": reason,
                "at": stamp(time.time()),
                "payout_id": order.payout_id or "",
                "kind": DUPLICATE_REQUEST,
            },
            maxlen=rt.settings.events_maxlen,
            approximate=True,
        )
    name = rt.settings.result_task
    if name:
        payload: dict[str, Any] = {
            "kind": DUPLICATE_REQUEST,
            "payout_cl_id": _text(payout_cl_id, 32),
            "state": state,
            "payout_id": order.payout_id if order is not None else None,
            "amount": order.amount if order is not None else None,
            "reason": reason,
        }
        rt.dispatch.result(name, payload)
    return state
