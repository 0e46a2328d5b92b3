"""The web app's API: enqueue a payout, read it back.

``enqueue_payout`` validates, stores the order (``received``) and then sends
``payouts.submit`` with only the order id. Repeating the call with the same data
returns the existing order; the same id with different data raises
:class:`DuplicatePayout`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from worker.celery_app import app
from worker.celeryconf import SUBMIT_TASK
from worker.errors import DuplicatePayout
from worker.payout import validate_payout
from worker.runtime import Runtime, get_runtime
from worker.store import Created, Order


def _store(rt: Runtime, data: Mapping[str, Any]) -> tuple[str, Created]:
    s = rt.settings
    payout = validate_payout(
        data, banks=s.bank_list, amount_min=s.amount_min_minor, amount_max=s.amount_max_minor
    )
    now = time.time()
    res = rt.store.create(payout, due_at=now + s.submit_redrive_s, now=now)
    if not res.created and res.fingerprint != payout.fingerprint():
        raise DuplicatePayout(payout.payout_cl_id)
    return payout.payout_cl_id, res


def store_payout(rt: Runtime, data: Mapping[str, Any]) -> tuple[str, bool]:
    """Validate and store; return (payout_cl_id, created). Sends nothing."""
    order_id, res = _store(rt, data)
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
) -> Order:
    """Validate, store and queue one payout; safe to call again with the same data."""
    rt = runtime or get_runtime()
    data = {
        "payout_cl_id": payout_cl_id,
        "amount": amount,
        "bank_name": bank_name,
        "name": name,
        "number": number,
        "notify_url": notify_url,
    }
    order_id, res = _store(rt, data)
    if res.needs_submit:
        app.send_task(SUBMIT_TASK, args=[order_id])
    if res.order is not None:
        return res.order  # just stored: no read-back (a quarter of the call's cost, bench)
    order = rt.store.get(order_id)
    assert order is not None
    return order


def get_payout(payout_cl_id: str, *, runtime: Runtime | None = None) -> Order | None:
    """The stored order with its history, or None."""
    return (runtime or get_runtime()).store.get(payout_cl_id)
