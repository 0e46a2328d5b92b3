"""Orders held by the sandbox gateway and the ledger of every create request.

Only what a gateway would answer with is kept: no beneficiary name or account number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

from worker.signing import HMAC_SHA256, sign

PENDING: Final = 1
PROCESSING: Final = 2
SUCCESS: Final = 3
CANCELLED: Final = 4
FAILED: Final = 5
FINAL_STATUSES: Final = frozenset({SUCCESS, CANCELLED, FAILED})

FAILURE_MESSAGES: Final = {
    CANCELLED: "Payout cancelled by the bank",
    FAILED: "Beneficiary account rejected the transfer",
}


@dataclass
class Order:
    """One payout the sandbox created."""

    seq: int
    payout_id: str
    payout_cl_id: str
    amount_minor: int
    fee_minor: int
    sign_type: str
    notify_url: str | None
    bank_name: str
    create_time: float
    update_time: float
    status: int = PENDING
    error_msg: str = ""
    success_time: float | None = None
    #: Absent from query answers until this time (the ``invisible`` fault).
    invisible_until: float = 0.0
    #: Final status forced by an ``outcome`` rule (1 or 2 mean "stays there").
    planned_status: int | None = None
    callback_attempts: list[dict[str, Any]] = field(default_factory=list)
    callback_acked: bool = False

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def visible(self, now: float) -> bool:
        return now >= self.invisible_until

    def set_status(self, status: int, error_msg: str | None = None) -> None:
        """Move to ``status`` now (the admin may move between any statuses)."""
        now = time.time()
        self.status = status
        self.update_time = max(now, self.create_time)
        if status in (CANCELLED, FAILED):
            self.error_msg = error_msg or FAILURE_MESSAGES[status]
        else:
            self.error_msg = error_msg or ""
        self.success_time = self.update_time if status == SUCCESS else None

    def ledger_entry(self) -> dict[str, Any]:
        """The admin ledger's view (no account data)."""
        return {
            "payout_cl_id": self.payout_cl_id,
            "payout_id": self.payout_id,
            "amount": self.amount_minor,
            "fee": self.fee_minor,
            "status": self.status,
            "error_msg": self.error_msg,
            "sign_type": self.sign_type,
            "bank_name": self.bank_name,
            "create_time": int(self.create_time),
            "update_time": int(self.update_time),
            "create_time_s": self.create_time,
            "update_time_s": self.update_time,
            "notify_url": self.notify_url,
            "callback_acked": self.callback_acked,
            "callback_attempts": list(self.callback_attempts),
        }


class OrderBook:
    """All orders by ``payout_cl_id`` and the per-id create-request counts."""

    def __init__(
        self, platform_id: str, platform_key: str, *, prefix: str, channel_id: str, style: str
    ) -> None:
        self.platform_id = platform_id
        self._key = platform_key
        self.prefix = prefix
        self.channel_id = channel_id
        self.style = style
        self.clear()

    def clear(self) -> None:
        self.orders: dict[str, Order] = {}
        self.by_payout_id: dict[str, Order] = {}
        #: payout_cl_id -> {"before": n, "after": m, "total": n + m}: create requests
        #: received while no order existed with that id (whatever their answer, faults
        #: included), and received once it existed (duplicates).
        self.create_requests: dict[str, dict[str, int]] = {}
        self._seq = 0

    # -------------------------------------------------------------- writing

    def count_create_request(self, payout_cl_id: str) -> None:
        counts = self.create_requests.setdefault(
            payout_cl_id, {"before": 0, "after": 0, "total": 0}
        )
        counts["after" if payout_cl_id in self.orders else "before"] += 1
        counts["total"] += 1

    def add(
        self,
        payout_cl_id: str,
        amount_minor: int,
        fee_minor: int,
        sign_type: str,
        notify_url: str | None,
        bank_name: str,
    ) -> Order:
        """Create the order (the caller has checked that the id is new)."""
        self._seq += 1
        now = time.time()
        order = Order(
            seq=self._seq,
            payout_id=f"{self.prefix}{self._seq:08d}",
            payout_cl_id=payout_cl_id,
            amount_minor=amount_minor,
            fee_minor=fee_minor,
            sign_type=sign_type,
            notify_url=notify_url,
            bank_name=bank_name,
            create_time=now,
            update_time=now,
        )
        self.orders[payout_cl_id] = order
        self.by_payout_id[order.payout_id] = order
        return order

    # ------------------------------------------------------------- rendering

    def _money(self, value: int) -> int | str:
        return str(value) if self.style == "string" else value

    def signed(
        self, fields: dict[str, Any], sign_type: str, key: str | None = None
    ) -> dict[str, Any]:
        """``fields`` plus ``sign`` (and ``sign_type`` for HMAC orders)."""
        body = dict(fields)
        if sign_type == HMAC_SHA256:
            body["sign_type"] = HMAC_SHA256
        body["sign"] = sign(fields, key if key is not None else self._key, sign_type)
        return body

    def list_record(self, order: Order) -> dict[str, Any]:
        """A record of the list query form (SPEC §2a), signed in the order's algorithm."""
        fields = {
            "amount": self._money(order.amount_minor),
            "real_amount": self._money(order.amount_minor),
            "fee": self._money(order.fee_minor),
            "payout_id": order.payout_id,
            "payout_cl_id": order.payout_cl_id,
            "platform_id": self.platform_id,
            "platform_channel_id": self.channel_id,
            "status": order.status,
            "memo": order.error_msg,
            "create_time": int(order.create_time),
            "update_time": int(order.update_time),
        }
        return self.signed(fields, order.sign_type)

    def single_record(self, order: Order) -> dict[str, Any]:
        """The ``data`` of the single-order query form (SPEC §2b; unsigned)."""
        return {
            "payout_id": order.payout_id,
            "payout_cl_id": order.payout_cl_id,
            "amount": self._money(order.amount_minor),
            "fee": self._money(order.fee_minor),
            "status": order.status,
            "error_msg": order.error_msg,
            "create_time": int(order.create_time),
            "success_time": int(order.success_time) if order.success_time is not None else None,
        }

    def notification(
        self,
        order: Order,
        *,
        status: int | None = None,
        update_time: float | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """The callback body (SPEC §5), optionally a stale copy or signed with ``key``."""
        status = order.status if status is None else status
        fields: dict[str, Any] = {
            "payout_id": order.payout_id,
            "payout_cl_id": order.payout_cl_id,
            "platform_id": self.platform_id,
            "amount": self._money(order.amount_minor),
            "real_amount": self._money(order.amount_minor),
            "fee": self._money(order.fee_minor),
            "status": status,
            "create_time": int(order.create_time),
            "update_time": int(order.update_time if update_time is None else update_time),
        }
        if status in (CANCELLED, FAILED):
            fields["error_msg"] = order.error_msg or FAILURE_MESSAGES[status]
        return self.signed(fields, order.sign_type, key)

    def ledger(self) -> dict[str, Any]:
        """Every order created, the create-request counts and totals."""
        orders = sorted(self.orders.values(), key=lambda o: o.seq)
        before = sum(c["before"] for c in self.create_requests.values())
        after = sum(c["after"] for c in self.create_requests.values())
        by_status: dict[str, int] = {}
        for order in orders:
            by_status[str(order.status)] = by_status.get(str(order.status), 0) + 1
        return {
            "orders": [o.ledger_entry() for o in orders],
            "create_requests": self.create_requests,
            "totals": {
                "orders": len(orders),
                "by_status": by_status,
                "create_requests": before + after,
                "before_created": before,
                "after_created": after,
                "ids_with_duplicates": sum(1 for c in self.create_requests.values() if c["after"]),
            },
        }
