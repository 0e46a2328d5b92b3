"""Orders held by the sandbox gateway and the ledger of every create request.

Only what a gateway would answer with is kept: no beneficiary name or account number.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Final

from .signature import HMAC_SHA256, MD5, sign

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
    #: 1 for the first payout of its ``payout_cl_id``, 2 for a second one (only when the
    #: duplicate check is off), ...
    nth: int = 1

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
            "nth": self.nth,
        }


class OrderBook:
    """Every payout created (by ``payout_id``, in creation order), the payouts of each
    ``payout_cl_id`` (several only when the duplicate check is off) and the per-id
    create-request counts."""

    def __init__(
        self, platform_id: str, platform_key: str, *, prefix: str, channel_id: str, style: str
    ) -> None:
        self.platform_id = platform_id
        self._key = platform_key
        self.prefix = prefix
        self.channel_id = channel_id
        self.style = style
        #: How list records are signed (``SandboxConfig.record_signature``).
        self.record_signature = "order"
        #: How notifications are signed (``SandboxConfig.callback_signature``).
        self.callback_signature = "order"
        #: ``SandboxConfig.sign_zero_values`` false: 0 and "0" are left out of signatures.
        self.drop_zero = False
        self.clear()

    def clear(self) -> None:
        #: payout_id -> order, in creation order: every payout the sandbox made.
        self.by_payout_id: dict[str, Order] = {}
        #: payout_cl_id -> its payouts, oldest first.
        self.by_cl_id: dict[str, list[Order]] = {}
        #: payout_cl_id -> {"before": n, "after": m, "total": n + m}: create requests
        #: received while no order existed with that id (whatever their answer, faults
        #: included), and received once it existed (duplicates).
        self.create_requests: dict[str, dict[str, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self.by_payout_id)

    def all(self) -> list[Order]:
        """Every payout, oldest first."""
        return list(self.by_payout_id.values())

    def first(self, payout_cl_id: str) -> Order | None:
        """The first payout created for ``payout_cl_id`` (``None`` when there is none)."""
        found = self.by_cl_id.get(payout_cl_id)
        return found[0] if found else None

    def of(self, payout_cl_id: str) -> list[Order]:
        """Every payout of ``payout_cl_id``, oldest first."""
        return list(self.by_cl_id.get(payout_cl_id, ()))

    # -------------------------------------------------------------- writing

    def count_create_request(self, payout_cl_id: str) -> None:
        counts = self.create_requests.setdefault(payout_cl_id, {"before": 0, "after": 0, "total": 0})
        counts["after" if payout_cl_id in self.by_cl_id else "before"] += 1
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
        """Create a payout (the caller has decided whether a repeated id may have one)."""
        self._seq += 1
        now = time.time()
        same_id = self.by_cl_id.setdefault(payout_cl_id, [])
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
            nth=len(same_id) + 1,
        )
        same_id.append(order)
        self.by_payout_id[order.payout_id] = order
        return order

    # ------------------------------------------------------------- rendering

    def _money(self, value: int) -> int | str:
        return str(value) if self.style == "string" else value

    def signed(self, fields: dict[str, Any], sign_type: str, key: str | None = None) -> dict[str, Any]:
        """``fields`` plus ``sign`` (and ``sign_type`` for HMAC orders)."""
        body = dict(fields)
        if sign_type == HMAC_SHA256:
            body["sign_type"] = HMAC_SHA256
        body["sign"] = sign(
            fields, key if key is not None else self._key, sign_type, drop_zero=self.drop_zero
        )
        return body

    def list_record(self, order: Order) -> dict[str, Any]:
        """A record of the list query form (docs/gateway.md §2a), signed in the order's algorithm."""
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
        mode = self.record_signature
        if mode == "order":
            return self.signed(fields, order.sign_type)
        if mode == "spec":
            return {**fields, "sign": sign(fields, self._key, order.sign_type, drop_zero=self.drop_zero)}
        if mode == "spec_md5":
            return {**fields, "sign": sign(fields, self._key, MD5, drop_zero=self.drop_zero)}
        # "unverifiable": 32 hex characters that depend on the record but on no merchant key
        text = "|".join(f"{k}={v}" for k, v in sorted(fields.items()))
        length = 64 if order.sign_type == HMAC_SHA256 else 32
        digest = hashlib.sha256(f"unverifiable|{text}".encode()).hexdigest()
        return {**fields, "sign": digest[:length]}

    def single_record(self, order: Order) -> dict[str, Any]:
        """The ``data`` of the single-order query form (docs/gateway.md §2b; unsigned)."""
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
        """The callback body (docs/gateway.md §5), optionally a stale copy or signed with ``key``."""
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
        if self.callback_signature == "order":
            return self.signed(fields, order.sign_type, key)
        # "spec" (D-NTF's field list: no sign_type) or "spec_md5" (and always MD5)
        algorithm = order.sign_type if self.callback_signature == "spec" else MD5
        secret = key if key is not None else self._key
        return {**fields, "sign": sign(fields, secret, algorithm, drop_zero=self.drop_zero)}

    def id_counts(self, payout_cl_id: str) -> dict[str, Any]:
        """How many payouts and create requests one ``payout_cl_id`` had (zeros if none)."""
        requests = self.create_requests.get(payout_cl_id, {"before": 0, "after": 0, "total": 0})
        payouts = self.of(payout_cl_id)
        return {
            "payout_cl_id": payout_cl_id,
            "payouts_created": len(payouts),
            "payout_ids": [o.payout_id for o in payouts],
            "create_requests": dict(requests),
        }

    def ledger(self) -> dict[str, Any]:
        """Every payout created, payouts and create requests per id, totals."""
        orders = self.all()
        before = sum(c["before"] for c in self.create_requests.values())
        after = sum(c["after"] for c in self.create_requests.values())
        by_status: dict[str, int] = {}
        for order in orders:
            by_status[str(order.status)] = by_status.get(str(order.status), 0) + 1
        payouts_per_id = {cl_id: len(found) for cl_id, found in self.by_cl_id.items()}
        return {
            "orders": [o.ledger_entry() for o in orders],
            "payouts_per_id": payouts_per_id,
            "create_requests": self.create_requests,
            "totals": {
                "orders": len(orders),
                "by_status": by_status,
                "create_requests": before + after,
                "before_created": before,
                "after_created": after,
                "ids_with_duplicates": sum(1 for c in self.create_requests.values() if c["after"]),
                "ids_created_twice": sum(1 for n in payouts_per_id.values() if n > 1),
                "extra_payouts": sum(n - 1 for n in payouts_per_id.values()),
            },
        }
