"""Balance hold of the operator desk (D21).

A merchant-level refusal (``HOLD_CODES``: 0018 and the codes that refuse every order while
they last) puts the order back to ``received`` and pauses every bank automatically (source
"balance" or "merchant_code"): :func:`merchant_hold`. The sweep polls the gateway balance
(:func:`poll_balance`); a "balance" pause ends when the available balance covers the held
order, or when an operator resumes. Within an hour of a 0018, an order larger than the last
polled available balance is not sent (the balance endpoint alone never stops sending: it
may disagree with the create's own check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from worker import keys
from worker.desk.pausing import ALL, AUTO_RESUMABLE, pause, pauses, resume
from worker.logs import get_logger
from worker.runtime import Runtime
from worker.store import Order, stamp

log = get_logger("payouts.controls")


#: how long after a 0018 the polled balance gates sending
BALANCE_LOW_S: Final = 3600


def merchant_hold(rt: Runtime, order: Order, code: str, text: str) -> None:
    """A create refused with a merchant-level code: pause every bank with that reason (D21)."""
    source = "balance" if code == "0018" else "merchant_code"
    if source == "balance":
        # for the next hour the polled balance gates sending (an order above it waits)
        rt.redis.set(keys.BALANCE_LOW, stamp(time.time()), ex=BALANCE_LOW_S)
    pause(
        rt,
        reason=f"gateway {code}: {text}",
        by="worker",
        source=source,
        need=order.amount if source == "balance" else None,
    )


@dataclass(frozen=True)
class Balance:
    available: int
    total: int
    frozen: int
    at: float


def known_balance(rt: Runtime) -> Balance | None:
    raw = rt.redis.hgetall(keys.BALANCE)
    if not raw or "available" not in raw:
        return None
    return Balance(
        int(raw["available"]), int(raw.get("total", 0)), int(raw.get("frozen", 0)), float(raw.get("at", 0))
    )


def poll_balance(rt: Runtime, *, now: float | None = None, force: bool = False) -> Balance | None:
    """Read the gateway balance (at most once per interval across every process).

    Available = total_balance - total_frozen_balance. Ends a "balance" pause when the
    available balance covers the held order. Returns the balance read, or None when
    it was not this process's turn, polling is off, or the gateway did not answer.
    """
    s = rt.settings
    now = time.time() if now is None else now
    if s.balance_poll_s <= 0 or s.gateway is None:
        return None
    held = [p for p in pauses(rt) if p.source in AUTO_RESUMABLE]
    interval = min(s.balance_poll_s, s.pause_recheck_s) if held else s.balance_poll_s
    if not force and not rt.redis.set(keys.BALANCE_POLL, stamp(now), nx=True, px=int(interval * 1000)):
        return None
    result = rt.gateway.query_balance()
    if result is None:
        return None
    total, frozen = result
    bal = Balance(total - frozen, total, frozen, now)
    low = bool(rt.redis.exists(keys.BALANCE_LOW))
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hset(
        keys.BALANCE, mapping={"available": bal.available, "total": total, "frozen": frozen, "at": stamp(now)}
    )
    if low:  # within an hour of a 0018: the polled balance gates sending
        pipe.hset(keys.BALANCE, "limit", bal.available)
    else:
        pipe.hdel(keys.BALANCE, "limit")
    # a balance nobody refreshes (the endpoint failing) must not hold orders for ever
    pipe.expire(keys.BALANCE, int(max(60.0, 3 * s.balance_poll_s)))
    pipe.execute()
    for p in held:
        scope = None if p.scope == ALL else p.scope
        if bal.available >= (p.need or 1) and resume(rt, by="balance poller", bank=scope, only=p):
            log.warning("payouts.balance.restored", available=bal.available, need=p.need)
    return bal
