"""Duplicate guard of the operator desk.

:func:`duplicate_of` keys a keyed hash (HMAC-SHA256 with ``DUPLICATE_KEY``) of bank +
account number + amount, never the number itself.
"""

from __future__ import annotations

import hashlib
import hmac

from worker import keys
from worker.logs import get_logger
from worker.payout import Payout
from worker.runtime import Runtime

log = get_logger("payouts.controls")


def beneficiary_digest(key: str, payout: Payout) -> str:
    """A keyed hash of bank + account number + amount: the number is never stored."""
    msg = "\x1f".join((payout.bank_name, payout.number, str(payout.amount))).encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()[:32]


def duplicate_of(rt: Runtime, payout: Payout) -> str | None:
    """The other order id enqueued for the same beneficiary and amount within the window."""
    s = rt.settings
    if s.duplicate_window_s <= 0 or s.duplicate_key is None:
        return None
    k = keys.duplicate(beneficiary_digest(s.duplicate_key.reveal(), payout))
    if rt.redis.set(k, payout.payout_cl_id, nx=True, px=int(s.duplicate_window_s * 1000)):
        return None
    other = rt.redis.get(k)
    if other is None or str(other) == payout.payout_cl_id:
        return None
    return str(other)
