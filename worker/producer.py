"""The web app's API: enqueue a payout, read it back.

``enqueue_payout`` validates, stores the order (``received``) and then sends
``payouts.submit`` with only the order id. Repeating the call with the same data
returns the existing order; the same id with different data raises
:class:`DuplicatePayout`, and so does any id whose order has expired (ids are never
reused: a tombstone per id outlives ``ORDER_RETENTION_DAYS``).

Once the order is stored, ``enqueue_payout`` never raises: if publishing the submit
message fails (a broker blip), the failure is logged and the order is returned; the
sweep re-drives it after ``SUBMIT_REDRIVE_AFTER``. A caller must never treat an
exception raised *after* the store as "not created" and retry under a new id: it
cannot get one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from worker.desk import approval, duplicates
from worker.errors import DuplicatePayout, FieldError, InvalidPayout
from worker.logs import get_logger
from worker.payout import validate_payout
from worker.runtime import Runtime, get_runtime
from worker.store import Created, Order

log = get_logger("payouts.producer")

#: options of an enqueue that are not payout fields (docs/gateway.md §1) and never sent to the gateway
OPTIONS = ("requested_by", "allow_duplicate")


def _store(
    rt: Runtime, data: Mapping[str, Any], *, requested_by: str | None = None, allow_duplicate: bool = False
) -> tuple[str, Created]:
    s = rt.settings
    if requested_by is not None and (
        not isinstance(requested_by, str) or not 0 < len(requested_by.strip()) <= 64
    ):
        raise InvalidPayout([FieldError("requested_by", "must be a name of 1-64 characters")])
    if not isinstance(allow_duplicate, bool):
        raise InvalidPayout([FieldError("allow_duplicate", "must be true or false")])
    payout = validate_payout(
        data, banks=s.bank_list, amount_min=s.amount_min_minor, amount_max=s.amount_max_minor
    )
    extra: dict[str, str] = {}
    if requested_by:
        extra["requested_by"] = requested_by.strip()
    dup = None if allow_duplicate else duplicates.duplicate_of(rt, payout)
    if dup:
        extra["dup_of"] = dup
    # created_at and the due time are on the Redis server's clock, never this host's (D36)
    res = rt.store.create(payout, due_at=time.time() + s.submit_redrive_s, extra=extra)
    if res.expired:
        raise DuplicatePayout(payout.payout_cl_id, expired=True)
    if not res.created and not rt.store.same_data(res.fingerprint, payout):
        raise DuplicatePayout(payout.payout_cl_id)
    if res.created and res.order is not None and approval.needs_approval(s, res.order):
        # held before any message is sent; the pre-send gate also stops it if this write is lost
        approval.route_unapproved(rt, res.order)
        stored = rt.store.get(payout.payout_cl_id)
        if stored is not None:
            res = Created(True, res.fingerprint, stored.state.value, stored)
    return payout.payout_cl_id, res


def store_payout(rt: Runtime, data: Mapping[str, Any]) -> tuple[str, bool]:
    """Validate and store; return (payout_cl_id, needs a submit message). Sends nothing.

    ``data`` may also carry the enqueue options ``requested_by`` and ``allow_duplicate``.
    """
    fields = {k: v for k, v in data.items() if k not in OPTIONS}
    order_id, res = _store(
        rt,
        fields,
        requested_by=data.get("requested_by"),
        allow_duplicate=data.get("allow_duplicate", False),
    )
    return order_id, res.needs_submit


def enqueue_payout(
    payout_cl_id: str,
    amount: int,
    bank_name: str,
    name: str,
    number: str,
    notify_url: str | None = None,
    *,
    runtime: Runtime | None = None,
    requested_by: str | None = None,
    allow_duplicate: bool = False,
) -> Order:
    """Validate, store and queue one payout; safe to call again with the same data.

    ``requested_by``: who asked for it (recorded; cannot approve it). ``allow_duplicate``:
    skip the duplicate-beneficiary guard (same bank, account and amount within
    ``DUPLICATE_WINDOW`` under another id is otherwise held for approval or review).
    """
    rt = runtime or get_runtime()
    data = {
        "payout_cl_id": payout_cl_id,
        "amount": amount,
        "bank_name": bank_name,
        "name": name,
        "number": number,
        "notify_url": notify_url,
    }
    order_id, res = _store(rt, data, requested_by=requested_by, allow_duplicate=allow_duplicate)
    if res.needs_submit:
        try:
            rt.dispatch.submit(order_id)
        except Exception as exc:  # stored: the sweep re-drives it; never raise now (D5)
            log.error(
                "payout.enqueue.publish_failed",
                payout_cl_id=order_id,
                error=type(exc).__name__,
                redrive_after_s=rt.settings.submit_redrive_s,
            )
    if res.order is not None:
        return res.order  # just stored: no read-back (a quarter of the call's cost, bench)
    order = rt.store.get(order_id)
    if order is None:  # expired between the two calls: the tombstone refuses it from now on
        raise DuplicatePayout(order_id, expired=True)
    return order


def get_payout(payout_cl_id: str, *, runtime: Runtime | None = None) -> Order | None:
    """The stored order with its history, or None."""
    return (runtime or get_runtime()).store.get(payout_cl_id)
