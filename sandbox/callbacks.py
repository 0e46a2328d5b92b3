"""Notifications (docs/gateway.md §5): POST the signed final status to ``notify_url`` until acknowledged.

An attempt is acknowledged only by HTTP 200 with a JSON body whose ``error_code`` is
``"0000"``. Attempts follow ``callback_delays_s`` (the wait before each retry). Callback
fault rules change what is sent: ``delay``, ``never``, ``duplicate``, ``out_of_order``,
``wrong_key`` (see :mod:`worker.sandbox.faults`).

Settings (changeable at runtime): ``callbacks`` false sends nothing at all (checked before
every attempt, so pending retries stop too); ``callback_statuses`` names the final statuses
that are notified at all (``[3]``: successes only); ``callback_framing`` ``chunked`` sends
the body with ``Transfer-Encoding: chunked`` and no ``Content-Length``, in three chunks cut
at byte offsets (a multi-byte UTF-8 character may straddle two chunks). Every notification carries
the ``X-Payout-Sandbox: 1`` header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp

from .config import SANDBOX_HEADER
from .faults import FaultRule

if TYPE_CHECKING:
    from .orders import Order
    from .server import Sandbox

log = logging.getLogger("sandbox.callbacks")

_JSON = "application/json;charset=utf-8"
_FORM = "application/x-www-form-urlencoded;charset=utf-8"


class Notifier:
    """Sends notifications for orders that reached a final status."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.session: aiohttp.ClientSession | None = None
        self.stats = {
            "deliveries": 0,
            "attempts": 0,
            "acked": 0,
            "refused": 0,
            "gave_up": 0,
            "suppressed": 0,
        }

    async def open(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.sandbox.config.callback_timeout_s)
        connector = aiohttp.TCPConnector(limit=200)
        self.session = aiohttp.ClientSession(timeout=timeout, connector=connector)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def reset_stats(self) -> None:
        for name in self.stats:
            self.stats[name] = 0

    # ------------------------------------------------------------------ plan

    def on_final(self, order: Order) -> None:
        """Schedule the notification of ``order``'s current (final) status."""
        if not order.notify_url:
            return
        config = self.sandbox.config
        if not config.callbacks or order.status not in config.callback_statuses:
            self.stats["suppressed"] += 1
            return
        rules = self.sandbox.faults.pick_all("callback", payout_cl_id=order.payout_cl_id)
        self.sandbox.spawn(self._notify(order, {rule.mode or "": rule for rule in rules}))

    async def _notify(self, order: Order, rules: dict[str, FaultRule]) -> None:
        if "never" in rules:
            log.info("callback suppressed payout_cl_id=%s (fault never)", order.payout_cl_id)
            return
        if "delay" in rules:
            await asyncio.sleep(float(rules["delay"].get("seconds", 5.0)))
        key = None
        if "wrong_key" in rules:
            key = str(rules["wrong_key"].get("key", "")) or "not-the-" + "platform-key"
        body = self.sandbox.book.notification(order, key=key)
        duplicate = rules.get("duplicate")
        copies = int(duplicate.get("copies", 2)) if duplicate else 1
        if duplicate and duplicate.get("concurrent", False):
            await asyncio.gather(*(self._deliver(order, body) for _ in range(copies)))
        else:
            for _ in range(copies):
                await self._deliver(order, body)
        stale_rule = rules.get("out_of_order")
        if stale_rule is not None:
            stale = self.sandbox.book.notification(
                order,
                status=int(stale_rule.get("status", 2)),
                update_time=order.create_time,
                key=key,
            )
            await self._deliver(order, stale, stale=True)

    # --------------------------------------------------------------- deliver

    async def _deliver(self, order: Order, body: dict[str, Any], *, stale: bool = False) -> bool:
        """One notification, retried on the configured schedule until acknowledged."""
        assert order.notify_url is not None
        self.stats["deliveries"] += 1
        if self.sandbox.config.callback_format == "form":
            data, content_type = urlencode({k: str(v) for k, v in body.items()}).encode(), _FORM
        else:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            content_type = _JSON
        delays = (0.0, *self.sandbox.config.callback_delays_s)
        for attempt, delay in enumerate(delays, start=1):
            if delay:
                await asyncio.sleep(delay)
            if not self.sandbox.config.callbacks:
                self.stats["suppressed"] += 1
                return False
            acked, http_status, error = await self._post(order.notify_url, data, content_type)
            self.stats["attempts"] += 1
            self.stats["acked" if acked else "refused"] += 1
            order.callback_attempts.append(
                {
                    "at": time.time(),
                    "attempt": attempt,
                    "status": body["status"],
                    "stale": stale,
                    "http_status": http_status,
                    "acked": acked,
                    "error": error,
                }
            )
            if not self.sandbox.config.quiet:
                log.info(
                    "callback payout_cl_id=%s status=%s attempt=%d http=%s acked=%s%s",
                    order.payout_cl_id,
                    body["status"],
                    attempt,
                    http_status,
                    acked,
                    f" error={error}" if error else "",
                )
            if acked:
                if not stale:
                    order.callback_acked = True
                return True
        self.stats["gave_up"] += 1
        return False

    async def _post(self, url: str, data: bytes, content_type: str) -> tuple[bool, int | None, str | None]:
        if self.session is None:
            return False, None, "sandbox is shutting down"
        headers = {"Content-Type": content_type, SANDBOX_HEADER: "1"}
        payload: bytes | AsyncIterator[bytes] = data
        if self.sandbox.config.callback_framing == "chunked":
            payload = _chunks(data)
        try:
            async with self.session.post(url, data=payload, headers=headers) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return False, None, type(exc).__name__
        try:
            reply = json.loads(text)
        except ValueError:
            return False, status, "reply is not JSON"
        acked = status == 200 and isinstance(reply, dict) and reply.get("error_code") == "0000"
        return acked, status, None if acked else "not acknowledged"


async def _chunks(data: bytes, pieces: int = 3) -> AsyncIterator[bytes]:
    """``data`` in ``pieces`` chunks cut at byte offsets (aiohttp frames an async iterator
    as ``Transfer-Encoding: chunked``, without ``Content-Length``)."""
    size = max(1, -(-len(data) // pieces))
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)
