"""The pre-send gate of the operator desk: the one check before a create request leaves.

:func:`pre_send` answers None (send it) or a :class:`Hold` (a pause, the known balance, or
an approval still needed); :func:`hold` leaves the order waiting in ``received``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from worker import keys
from worker.desk.approval import needs_approval
from worker.desk.pausing import ALL, _parse, bank_scope
from worker.logs import get_logger
from worker.runtime import Runtime
from worker.states import State
from worker.store import Order

log = get_logger("payouts.controls")


@dataclass(frozen=True)
class Hold:
    """Why an order is not sent now: ``kind`` "pause", "balance" or "approval"."""

    kind: str
    reason: str


def pre_send(rt: Runtime, order: Order, *, balance: bool = True) -> Hold | None:
    """The one check before a create request leaves: None = send it.

    Asked before the claim (one round trip: the pauses and the known balance) and again
    right before the POST with ``balance=False`` (one HMGET: a pause set while the message
    was in flight is obeyed).
    """
    if needs_approval(rt.settings, order):
        return Hold("approval", "needs approval")
    bank = bank_scope(order.bank_name)
    # the scope in upper case (D53), and the code as written (a pause set before D53)
    scopes = [ALL, bank, order.bank_name]
    available = None
    if balance:
        pipe = rt.redis.pipeline(transaction=False)
        pipe.hmget(keys.PAUSE, scopes)
        pipe.hget(keys.BALANCE, "limit")
        (every, own, legacy), available = pipe.execute()
    else:
        every, own, legacy = rt.redis.hmget(keys.PAUSE, scopes)
    own = own if own is not None else legacy
    raw = every if every is not None else own
    if raw is not None:
        p = _parse(ALL if every is not None else bank, str(raw))
        return Hold("pause", f"held: paused ({p.source}): {p.reason}"[:200])
    if available is not None and order.amount > int(available):
        log.warning("payout.held.balance", amount=order.amount, available=int(available))
        return Hold("balance", "held: amount exceeds the known available balance")
    return None


def hold(rt: Runtime, order: Order, h: Hold) -> None:
    """Leave a ``received`` order waiting: a later due time and the reason, no state change."""
    fields: dict[str, object] = {}
    if order.fields.get("held") != h.reason:
        fields["held"] = h.reason
    rt.store.transition(
        order.payout_cl_id,
        None,
        sources={State.RECEIVED},
        reason="held",
        due=time.time() + rt.settings.pause_recheck_s,
        fields=fields,
    )
    rt.redis.hincrby(keys.HELD, h.kind, 1)
