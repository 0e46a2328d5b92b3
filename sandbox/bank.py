"""The simulated bank behind the sandbox gateway: orders, the merchant's money, and each
order's life from pending to a final status.

It knows nothing of HTTP: :mod:`worker.sandbox.api` turns requests into calls here and
answers into gateway codes. Orders move 1 (pending) -> 2 (processing) after ``pending_s``
-> 3, 4 or 5 after ``processing_s``; the outcome is drawn from a random stream seeded by
``seed`` and the ``payout_cl_id``, so the same id gets the same outcome in every run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from .config import UNLIMITED_BALANCE_DISPLAY_MINOR, SandboxConfig
from .faults import FaultBook
from .orders import CANCELLED, FAILED, FINAL_STATUSES, PENDING, PROCESSING, SUCCESS, Order, OrderBook

log = logging.getLogger("sandbox")


class Refusal(NamedTuple):
    """The bank would not open the payout: the gateway code and message to answer."""

    code: str
    message: str


class Bank:
    """The order book, the money (available, frozen per open order, the 0018 window) and
    the lifecycle of each order, with its notification when it ends."""

    def __init__(
        self,
        config: Callable[[], SandboxConfig],
        faults: FaultBook,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        on_final: Callable[[Order], None],
    ) -> None:
        #: the current settings (they change at runtime: always read them through this)
        self._config = config
        self._faults = faults
        self._spawn = spawn
        self._on_final = on_final
        cfg = config()
        self.book = OrderBook(
            cfg.platform_id,
            cfg.platform_key,
            prefix=cfg.payout_id_prefix,
            channel_id=cfg.platform_channel_id,
            style=cfg.number_style,
        )
        self.configure_book()
        #: payout_id -> the task driving that order's lifecycle
        self.lifecycles: dict[str, asyncio.Task[Any]] = {}
        self.reset_money()

    def configure_book(self) -> None:
        """Hand the settings the order book renders with to it."""
        cfg = self._config()
        self.book.record_signature = cfg.record_signature
        self.book.callback_signature = cfg.callback_signature
        self.book.style = cfg.number_style
        self.book.drop_zero = not cfg.sign_zero_values

    # ----------------------------------------------------------------- money

    def reset_money(self) -> None:
        self.set_balance(self._config().balance_minor)
        self.frozen_minor = 0
        #: payout_id -> money frozen for it until it is final.
        self.held: dict[str, int] = {}
        #: Creates answer 0018 until this ``time.time()`` (``inf``: until cleared).
        self.insufficient_until = 0.0

    def set_balance(self, balance_minor: int | None) -> None:
        """Set the available balance (``total_balance``); ``None`` is unlimited (no 0018).
        Money frozen by open orders is unchanged."""
        self.balance_limited = balance_minor is not None
        self.available_minor = UNLIMITED_BALANCE_DISPLAY_MINOR if balance_minor is None else balance_minor

    def insufficient_window(self, seconds: float | None) -> None:
        """Every create answers 0018 for ``seconds`` (``None``: until cleared; 0 clears)."""
        if seconds is None:
            self.insufficient_until = float("inf")
        else:
            self.insufficient_until = time.time() + seconds if seconds > 0 else 0.0

    def balance_view(self) -> dict[str, Any]:
        """The admin's view of the money: what the balance endpoint answers, and more."""
        now = time.time()
        until = self.insufficient_until
        return {
            "platform_id": self._config().platform_id,
            "unlimited": not self.balance_limited,
            "total_balance": self.available_minor,
            "total_frozen_balance": self.frozen_minor,
            "insufficient": now < until,
            "insufficient_until": None if until in (0.0, float("inf")) else until,
            "insufficient_remaining_s": (None if until == float("inf") else max(0.0, round(until - now, 3))),
        }

    # ---------------------------------------------------------------- orders

    def open_payout(
        self, payout_cl_id: str, amount: int, sign_type: str, notify_url: str | None, bank_name: str
    ) -> Order | Refusal:
        """Open a payout whose request passed the gateway's checks: refuse a repeated id
        (with the duplicate check on) or missing money, else freeze its cost and start it."""
        cfg = self._config()
        if cfg.duplicate_check and payout_cl_id in self.book.by_cl_id:
            return Refusal("0014", "Duplicate order number")
        cost = amount + cfg.fee_minor
        if time.time() < self.insufficient_until or (self.balance_limited and cost > self.available_minor):
            return Refusal("0018", "商户余额不足!")
        order = self.book.add(payout_cl_id, amount, cfg.fee_minor, sign_type, notify_url, bank_name)
        self.available_minor -= cost
        self.frozen_minor += cost
        self.held[order.payout_id] = cost
        outcome = self._faults.pick("outcome", payout_cl_id=payout_cl_id)
        if outcome is not None:
            order.planned_status = int(outcome.get("status", SUCCESS))
        invisible = self._faults.pick("invisible", payout_cl_id=payout_cl_id)
        if invisible is not None:
            order.invisible_until = order.create_time + float(invisible.get("seconds", 5.0))
        self.start_lifecycle(order)
        return order

    def clear(self) -> None:
        """Forget every order and go back to the start balance (lifecycles are the caller's
        to cancel: they run as its background tasks)."""
        self.lifecycles.clear()
        self.book.clear()
        self.reset_money()

    # ------------------------------------------------------------- lifecycle

    def start_lifecycle(self, order: Order) -> None:
        self.lifecycles[order.payout_id] = self._spawn(self._lifecycle(order))

    def stop_lifecycle(self, payout_id: str) -> None:
        task = self.lifecycles.pop(payout_id, None)
        if task is not None:
            task.cancel()

    def draw_outcome(self, order: Order) -> int:
        cfg = self._config()
        rng = random.Random(f"{cfg.seed}|outcome|{order.payout_cl_id}")
        if rng.random() < cfg.failure_ratio:
            return CANCELLED if rng.random() < 0.5 else FAILED
        return SUCCESS

    async def _lifecycle(self, order: Order) -> None:
        try:
            await asyncio.sleep(self._config().pending_s)
            if order.planned_status == PENDING:
                return
            order.set_status(PROCESSING)
            await asyncio.sleep(self._config().processing_s)
            if order.planned_status == PROCESSING:
                return
            self.finish(order, order.planned_status or self.draw_outcome(order))
        finally:
            if self.lifecycles.get(order.payout_id) is asyncio.current_task():
                del self.lifecycles[order.payout_id]

    def finish(self, order: Order, status: int, error_msg: str | None = None) -> None:
        """Move ``order`` to a final ``status``: release its money, send its notification."""
        order.set_status(status, error_msg)
        held = self.held.pop(order.payout_id, 0)
        self.frozen_minor -= held
        if status != SUCCESS:
            self.available_minor += held
        if not self._config().quiet:
            log.info("order payout_cl_id=%s status=%d", order.payout_cl_id, status)
        self._on_final(order)

    def force_status(
        self,
        payout_cl_id: str,
        status: int,
        error_msg: str | None,
        payout_id: str | None = None,
    ) -> Order | None:
        """Admin: set the status now; the automatic lifecycle of the order stops.

        Every payout of ``payout_cl_id`` (several only with the duplicate check off), or only
        the one whose ``payout_id`` is given. Returns the first one changed."""
        orders = [o for o in self.book.of(payout_cl_id) if payout_id in (None, o.payout_id)]
        for order in orders:
            self.stop_lifecycle(order.payout_id)
            if status in FINAL_STATUSES:
                self.finish(order, status, error_msg)
            else:
                order.set_status(status, error_msg)
        return orders[0] if orders else None
