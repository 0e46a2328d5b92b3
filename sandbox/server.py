"""The sandbox gateway: an aiohttp server that behaves like the payout gateway of SPEC.md.

Gateway endpoints (SPEC §1-3)::

    POST /gateway/api/v2/payouts                  create (signed body)
    GET  /gateway/api/v2/payouts?<filters>        list query (Authorization header)
    GET  /gateway/api/v2/payouts/{payout_cl_id}   single query (Authorization header)
    GET  /gateway/api/v2/platforms/balance        balance (Authorization header)

Gateway error codes are answered with HTTP 200 and ``{"error_code", "error_msg"}``.
Admin endpoints live under ``/_sandbox/`` (see :mod:`sandbox.admin`). Faults are
described in :mod:`sandbox.faults`.

Orders move 1 (pending) -> 2 (processing) after ``pending_s`` -> 3, 4 or 5 after
``processing_s``; the outcome is drawn from a random stream seeded by ``seed`` and the
``payout_cl_id``, so the same id gets the same outcome in every run.

Modes that disagree with the worker's guesses (SPEC §11), set at start or through
``PATCH /_sandbox/settings``: ``duplicate_check`` (off: a repeated ``payout_cl_id`` makes a
second payout), ``record_signature``, ``list_filter`` / ``list_order``, ``callbacks``,
``callback_framing``, ``callback_statuses``, ``callback_signature``, ``sign_zero_values``; a TLS listener with
handshake faults (:mod:`sandbox.tls`). Every answer carries ``X-Payout-Sandbox: 1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import resource
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Final

from aiohttp import web

from sandbox.callbacks import Notifier
from sandbox.config import SANDBOX_HEADER, UNLIMITED_BALANCE_DISPLAY_MINOR, SandboxConfig
from sandbox.faults import FaultBook, FaultRule
from sandbox.orders import (
    CANCELLED,
    FAILED,
    FINAL_STATUSES,
    PENDING,
    PROCESSING,
    SUCCESS,
    Order,
    OrderBook,
)
from sandbox.signature import MD5, verify
from sandbox.tls import TlsListener, TlsSetup, server_context

__all__ = ["SANDBOX_HEADER", "Sandbox", "SandboxConfig", "create_app", "run", "serve"]

log = logging.getLogger("sandbox")

SERVICE_ID: Final = "SVC0004"
CURRENCY: Final = "idr"
REQUIRED: Final = (
    "platform_id",
    "service_id",
    "payout_cl_id",
    "amount",
    "currency",
    "bank_name",
    "name",
    "number",
    "request_time",
    "sign",
)
MAX_LIMIT: Final = 500
_DIGITS = re.compile(r"[0-9]{1,10}")
#: Longer than Integer(10) so that too-large amounts get 0029 rather than 0002.
_AMOUNT = re.compile(r"[0-9]{1,18}")
_PAYOUT_CL_ID = re.compile(r"[A-Za-z0-9_\-.]{1,64}")


def gateway_json(payload: Any, status: int = 200) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8")


def gateway_error(code: str, message: str) -> web.Response:
    return gateway_json({"error_code": code, "error_msg": message})


class Sandbox:
    """The state of one sandbox gateway: orders, ledger, faults, stats, background tasks."""

    def __init__(self, config: SandboxConfig) -> None:
        #: The settings given at start; ``reset`` goes back to them.
        self.start_config = config
        self.config = config
        #: Creates answer 0018 until this ``time.time()`` (``inf``: until cleared).
        self.insufficient_until = 0.0
        self.faults = FaultBook(config.seed)
        self.faults.replace(config.faults)
        self.book = OrderBook(
            config.platform_id,
            config.platform_key,
            prefix=config.payout_id_prefix,
            channel_id=config.platform_channel_id,
            style=config.number_style,
        )
        self._configure_book()
        self.notifier = Notifier(self)
        #: TLS listener: connections, handshakes, handshake_failed, faults by ``mode:how``.
        self.tls_stats: Counter[str] = Counter()
        #: The TLS listener's URL and certificate, once started (see :mod:`sandbox.tls`).
        self.tls_info: dict[str, Any] = {"enabled": False}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.lifecycles: dict[str, asyncio.Task[Any]] = {}
        self.started_at = time.time()
        self.reset_money()
        self.reset_stats()

    # ------------------------------------------------------------- plumbing

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, kept alive and cancelled on reset/shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
        self.lifecycles.clear()

    def reset_money(self) -> None:
        self.set_balance(self.config.balance_minor)
        self.frozen_minor = 0
        #: payout_id -> money frozen for it until it is final.
        self.held: dict[str, int] = {}
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
            "platform_id": self.config.platform_id,
            "unlimited": not self.balance_limited,
            "total_balance": self.available_minor,
            "total_frozen_balance": self.frozen_minor,
            "insufficient": now < until,
            "insufficient_until": None if until in (0.0, float("inf")) else until,
            "insufficient_remaining_s": (None if until == float("inf") else max(0.0, round(until - now, 3))),
        }

    def apply_settings(self, changes: dict[str, Any]) -> None:
        """Change runtime settings (validated first: a bad change changes nothing)."""
        self.config = self.config.with_runtime_changes(changes)
        self._configure_book()

    def _configure_book(self) -> None:
        """Hand the settings the order book renders with to it."""
        self.book.record_signature = self.config.record_signature
        self.book.callback_signature = self.config.callback_signature
        self.book.style = self.config.number_style
        self.book.drop_zero = not self.config.sign_zero_values

    def reset_stats(self) -> None:
        self.tls_stats.clear()
        self.requests: Counter[str] = Counter()
        self.responses: dict[str, Counter[str]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.notifier.reset_stats()

    def reset(self, *, keep_faults: bool = False, keep_settings: bool = False) -> None:
        """Forget every order, count and (unless ``keep_faults``) fault rule; go back to the
        start settings and balance (unless ``keep_settings``)."""
        if not keep_settings:
            self.config = self.start_config
            self._configure_book()
        self.cancel_tasks()
        self.book.clear()
        if keep_faults:
            self.faults.restart_counts()
        else:
            self.faults.clear()
        self.reset_money()
        self.reset_stats()

    def count_response(self, endpoint: str, outcome: str) -> None:
        self.responses.setdefault(endpoint, Counter())[outcome] += 1

    def stats(self) -> dict[str, Any]:
        by_status: Counter[str] = Counter(str(o.status) for o in self.book.all())
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "requests": dict(self.requests),
            "responses": {name: dict(counts) for name, counts in self.responses.items()},
            "faults_fired": dict(self.faults.fired),
            "callbacks": dict(self.notifier.stats),
            "orders": {"total": len(self.book), "by_status": dict(by_status)},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "background_tasks": len(self.tasks),
            "tls": dict(self.tls_stats),
        }

    # ------------------------------------------------------------ lifecycle

    def start_lifecycle(self, order: Order) -> None:
        self.lifecycles[order.payout_id] = self.spawn(self._lifecycle(order))

    def stop_lifecycle(self, payout_id: str) -> None:
        task = self.lifecycles.pop(payout_id, None)
        if task is not None:
            task.cancel()

    def draw_outcome(self, order: Order) -> int:
        rng = random.Random(f"{self.config.seed}|outcome|{order.payout_cl_id}")
        if rng.random() < self.config.failure_ratio:
            return CANCELLED if rng.random() < 0.5 else FAILED
        return SUCCESS

    async def _lifecycle(self, order: Order) -> None:
        try:
            await asyncio.sleep(self.config.pending_s)
            if order.planned_status == PENDING:
                return
            order.set_status(PROCESSING)
            await asyncio.sleep(self.config.processing_s)
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
        if not self.config.quiet:
            log.info("order payout_cl_id=%s status=%d", order.payout_cl_id, status)
        self.notifier.on_final(order)

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

    # ---------------------------------------------------------------- faults

    async def apply_request_faults(
        self, endpoint: str, payout_cl_id: str | None
    ) -> web.StreamResponse | None:
        """Rate limit then latency, for any gateway endpoint. A response means: answer it."""
        if self.faults.rate_limited(endpoint, payout_cl_id) is not None:
            self.count_response(endpoint, "http_429")
            return web.Response(
                status=429,
                text="429 Too Many Requests",
                headers={"Retry-After": "1"},
            )
        rule = self.faults.pick("latency", endpoint=endpoint, payout_cl_id=payout_cl_id)
        if rule is not None:
            await asyncio.sleep(rule.sample_latency_s())
        return None

    async def lose_response(
        self, request: web.Request, rule: FaultRule, endpoint: str, answer: web.Response
    ) -> web.StreamResponse:
        """Replace ``answer`` by the fault's broken one (hang, 5xx, empty, garbled, reset)."""
        mode = rule.mode if rule.kind == "create_lost" else rule.kind
        if mode in ("hang", "query_timeout"):
            await asyncio.sleep(float(rule.get("seconds", 30.0)))
            if rule.get("then", "answer") == "close":
                self.count_response(endpoint, "closed_after_hang")
                return drop_connection(request, reset=False)
            self.count_response(endpoint, "answered_after_hang")
            return answer
        if mode in ("5xx", "query_5xx", "create_5xx_before"):
            status = int(rule.get("status", 500))
            self.count_response(endpoint, f"http_{status}")
            return web.Response(status=status, text=f"{status} Internal Server Error")
        if mode == "code":
            code = str(rule.get("code", "0017"))
            self.count_response(endpoint, code)
            return gateway_error(code, "Failed to create payout record")
        if mode == "empty":
            self.count_response(endpoint, "empty")
            return web.Response(status=200, body=b"", content_type="application/json")
        if mode == "garbled":
            self.count_response(endpoint, "garbled")
            text = answer.text or ""
            return web.Response(
                status=200, text=text[: max(1, len(text) // 2)], content_type="application/json"
            )
        self.count_response(endpoint, "reset")
        return drop_connection(request, reset=True)

    # -------------------------------------------------------------- handlers

    async def handle_create(self, request: web.Request) -> web.StreamResponse:
        endpoint = "create"
        self.requests[endpoint] += 1
        raw = await request.read()
        params: Any = None
        parse_error: str | None = None
        if request.content_type != "application/json":
            parse_error = "0022"
        else:
            try:
                params = json.loads(raw.decode("utf-8"), parse_float=str, parse_int=str)
            except (UnicodeDecodeError, ValueError):
                parse_error = "0021"
            if params is not None and not isinstance(params, dict):
                parse_error = "0021"
        payout_cl_id = None
        if isinstance(params, dict) and isinstance(params.get("payout_cl_id"), str):
            payout_cl_id = params["payout_cl_id"]
        if payout_cl_id is not None:
            self.book.count_create_request(payout_cl_id)
        early = await self.apply_request_faults(endpoint, payout_cl_id)
        if early is not None:
            return early
        before = self.faults.pick("create_5xx_before", payout_cl_id=payout_cl_id)
        if before is not None:
            return await self.lose_response(request, before, endpoint, gateway_json({}))
        if parse_error == "0022":
            answer = gateway_error("0022", "Unsupported Content-Type, use application/json")
        elif parse_error == "0021":
            answer = gateway_error("0021", "Request body is not valid JSON")
        else:
            answer = self.create(params)
        code = json.loads(answer.text or "{}").get("error_code", "?")
        if not self.config.quiet:
            log.info("create payout_cl_id=%s error_code=%s", payout_cl_id, code)
        if code == "0000":
            lost = self.faults.pick("create_lost", payout_cl_id=payout_cl_id)
            if lost is not None:
                return await self.lose_response(request, lost, endpoint, answer)
        self.count_response(endpoint, code)
        return answer

    def create(self, params: dict[str, Any]) -> web.Response:
        """Validate a parsed create body (every value as its sent text) and create the order."""
        cfg = self.config
        # Who is calling and is it really them, before anything else is looked at.
        for name in ("platform_id", "sign"):
            if params.get(name) in (None, ""):
                return gateway_error("0002", f"Missing parameter: {name}")
        if params["platform_id"] != cfg.platform_id:
            return gateway_error("0002", "Invalid parameter: platform_id is not a known merchant")
        allowed = frozenset(cfg.sign_types)
        if not verify(params, cfg.platform_key, allowed=allowed, drop_zero=not cfg.sign_zero_values):
            return gateway_error("0004", "Signature verification failed!")
        for name in REQUIRED:
            value = params.get(name)
            if value is None or value == "":
                return gateway_error("0002", f"Missing parameter: {name}")
            if not isinstance(value, str):
                return gateway_error("0002", f"Invalid parameter: {name} must be a string or integer")
        for name in ("notify_url", "sign_type"):
            if params.get(name) is not None and not isinstance(params[name], str):
                return gateway_error("0002", f"Invalid parameter: {name} must be a string")
        if params["service_id"] != SERVICE_ID:
            return gateway_error("0009", "Wrong service_id")
        problem = self._field_problem(params)
        if problem is not None:
            return gateway_error("0002", f"Invalid parameter: {problem}")
        if params["bank_name"] not in cfg.banks:
            return gateway_error("0012", "不支援的银行!")
        amount = int(params["amount"])
        if amount < cfg.min_amount_minor:
            return gateway_error("0028", "Amount below the minimum limit")
        if amount > cfg.max_amount_minor:
            return gateway_error("0029", "Amount above the maximum limit")
        payout_cl_id = params["payout_cl_id"]
        if cfg.duplicate_check and payout_cl_id in self.book.by_cl_id:
            return gateway_error("0014", "Duplicate order number")
        cost = amount + cfg.fee_minor
        if time.time() < self.insufficient_until or (self.balance_limited and cost > self.available_minor):
            return gateway_error("0018", "商户余额不足!")
        order = self.book.add(
            payout_cl_id,
            amount,
            cfg.fee_minor,
            params.get("sign_type") or MD5,
            params.get("notify_url") or None,
            params["bank_name"],
        )
        self.available_minor -= cost
        self.frozen_minor += cost
        self.held[order.payout_id] = cost
        outcome = self.faults.pick("outcome", payout_cl_id=payout_cl_id)
        if outcome is not None:
            order.planned_status = int(outcome.get("status", SUCCESS))
        invisible = self.faults.pick("invisible", payout_cl_id=payout_cl_id)
        if invisible is not None:
            order.invisible_until = order.create_time + float(invisible.get("seconds", 5.0))
        self.start_lifecycle(order)
        return gateway_json({"error_code": "0000", "data": {"payout_id": order.payout_id}})

    @staticmethod
    def _field_problem(params: dict[str, Any]) -> str | None:
        if not _PAYOUT_CL_ID.fullmatch(params["payout_cl_id"]):
            return "payout_cl_id must be 1-64 letters, digits, '_', '-' or '.'"
        if not _AMOUNT.fullmatch(params["amount"]):
            return "amount must be a whole number of minor units"
        if params["currency"] != CURRENCY:
            return "currency must be 'idr'"
        if not _DIGITS.fullmatch(params["request_time"]):
            return "request_time must be unix seconds"
        if len(params["bank_name"]) > 16:
            return "bank_name is longer than 16 characters"
        if len(params["number"]) > 32:
            return "number is longer than 32 characters"
        notify_url = params.get("notify_url")
        if notify_url and (len(notify_url) > 256 or not notify_url.startswith(("http://", "https://"))):
            return "notify_url must be an http(s) URL of at most 256 characters"
        return None

    def _authorize(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("Authorization")
        if not token:
            return gateway_error("0005", "Authorization header is missing")
        if token != self.config.authorization:
            return gateway_error("0006", "Invalid Authorization!")
        return None

    async def _query_faults(
        self, request: web.Request, endpoint: str, payout_cl_id: str | None
    ) -> tuple[web.StreamResponse | None, FaultRule | None]:
        self.requests[endpoint] += 1
        early = await self.apply_request_faults(endpoint, payout_cl_id)
        if early is not None:
            return early, None
        rule = self.faults.pick("query_5xx", endpoint=endpoint, payout_cl_id=payout_cl_id)
        if rule is None:
            rule = self.faults.pick("query_timeout", endpoint=endpoint, payout_cl_id=payout_cl_id)
        return None, rule

    async def _answer(
        self,
        request: web.Request,
        endpoint: str,
        rule: FaultRule | None,
        answer: web.Response,
    ) -> web.StreamResponse:
        if rule is not None:
            return await self.lose_response(request, rule, endpoint, answer)
        payload = json.loads(answer.text or "{}")
        self.count_response(endpoint, payload.get("error_code", "?"))
        return answer

    async def handle_list(self, request: web.Request) -> web.StreamResponse:
        endpoint = "query_list"
        query = request.query
        early, rule = await self._query_faults(request, endpoint, query.get("payout_cl_id"))
        if early is not None:
            return early
        answer = self._authorize(request) or self.list_orders(query)
        return await self._answer(request, endpoint, rule, answer)

    def list_orders(self, query: Any) -> web.Response:
        numbers: dict[str, int | None] = {}
        for name, default in (
            ("offset", 0),
            ("limit", 25),
            ("create_time__gte", None),
            ("create_time__lte", None),
        ):
            text = query.get(name)
            if text is None or text == "":
                numbers[name] = default
            elif text.isdigit():
                numbers[name] = int(text)
            else:
                return gateway_error("0002", f"Invalid parameter: {name} must be an integer")
        limit, offset = numbers["limit"], numbers["offset"]
        assert limit is not None and offset is not None
        if not 1 <= limit <= MAX_LIMIT:
            return gateway_error("0002", f"Invalid parameter: limit must be in [1, {MAX_LIMIT}]")
        now = time.time()
        cl_id, payout_id = query.get("payout_cl_id"), query.get("payout_id")
        gte, lte = numbers["create_time__gte"], numbers["create_time__lte"]
        mode = self.config.list_filter
        if mode == "ignore_all":
            cl_id = payout_id = None
            gte = lte = None
        elif mode == "ignore":
            cl_id = None
        matches = [
            order
            for order in self._list_candidates(cl_id, payout_id, mode)
            if order.visible(now)
            and (not payout_id or order.payout_id == payout_id)
            and (gte is None or int(order.create_time) >= gte)
            and (lte is None or int(order.create_time) <= lte)
        ]
        matches.sort(
            key=lambda o: (int(o.create_time), o.seq),
            reverse=self.config.list_order == "newest_first",
        )
        page = matches[offset : offset + limit]
        return gateway_json(
            {
                "error_code": "0000",
                "data": [self.book.list_record(order) for order in page],
                "total": len(matches),
            }
        )

    def _list_candidates(self, cl_id: str | None, payout_id: str | None, mode: str) -> list[Order]:
        """The orders a list query looks at, before the visibility and time filters."""
        if cl_id and mode == "prefix":
            return [o for o in self.book.all() if o.payout_cl_id.startswith(cl_id)]
        if cl_id and mode == "contains":
            return [o for o in self.book.all() if cl_id in o.payout_cl_id]
        if cl_id:
            return self.book.of(cl_id)
        if payout_id:
            found = self.book.by_payout_id.get(payout_id)
            return [found] if found else []
        return self.book.all()

    async def handle_single(self, request: web.Request) -> web.StreamResponse:
        endpoint = "query_single"
        payout_cl_id = request.match_info["payout_cl_id"]
        early, rule = await self._query_faults(request, endpoint, payout_cl_id)
        if early is not None:
            return early
        answer = self._authorize(request)
        if answer is None:
            now = time.time()
            visible = [o for o in self.book.of(payout_cl_id) if o.visible(now)]
            order = visible[0] if visible else None
            if order is None:
                answer = gateway_error("0050", "查无订单!")
            else:
                answer = gateway_json({"error_code": "0000", "data": self.book.single_record(order)})
        return await self._answer(request, endpoint, rule, answer)

    async def handle_balance(self, request: web.Request) -> web.StreamResponse:
        endpoint = "balance"
        self.requests[endpoint] += 1
        early = await self.apply_request_faults(endpoint, None)
        if early is not None:
            return early
        answer = self._authorize(request) or gateway_json(
            {
                "error_code": "0000",
                "data": {
                    "platform_id": self.config.platform_id,
                    "total_balance": self.available_minor,
                    "total_frozen_balance": self.frozen_minor,
                },
            }
        )
        return await self._answer(request, endpoint, None, answer)

    async def handle_wrong_method(self, request: web.Request) -> web.Response:
        self.requests["wrong_method"] += 1
        return gateway_error("0023", f"Unsupported HTTP method {request.method}")


SANDBOX_KEY: Final = web.AppKey("sandbox", Sandbox)


def drop_connection(request: web.Request, *, reset: bool) -> web.StreamResponse:
    """Close the client's connection without an answer; ``reset`` sends a TCP RST."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if reset and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # Nothing can be written any more; aiohttp ignores a response to a closed transport.
    return web.Response(status=500)


@web.middleware
async def _track_in_flight(request: web.Request, handler: Any) -> web.StreamResponse:
    sandbox = request.app[SANDBOX_KEY]
    sandbox.in_flight += 1
    sandbox.max_in_flight = max(sandbox.max_in_flight, sandbox.in_flight)
    try:
        result: web.StreamResponse = await handler(request)
        return result
    finally:
        sandbox.in_flight -= 1


async def _identify(_: web.Request, response: web.StreamResponse) -> None:
    """Every answer says it comes from the sandbox (see ``SANDBOX_HEADER``)."""
    response.headers[SANDBOX_HEADER] = "1"


def create_app(config: SandboxConfig | None = None) -> web.Application:
    """The aiohttp application of a sandbox gateway (gateway and admin routes)."""
    from sandbox import admin

    sandbox = Sandbox(config or SandboxConfig())
    app = web.Application(middlewares=[_track_in_flight], client_max_size=1024 * 1024)
    app.on_response_prepare.append(_identify)
    app[SANDBOX_KEY] = sandbox
    payouts = "/gateway/api/v2/payouts"
    app.router.add_post(payouts, sandbox.handle_create)
    app.router.add_get(payouts, sandbox.handle_list, allow_head=False)
    app.router.add_get(payouts + "/{payout_cl_id}", sandbox.handle_single, allow_head=False)
    app.router.add_get("/gateway/api/v2/platforms/balance", sandbox.handle_balance, allow_head=False)
    for method in ("PUT", "PATCH", "DELETE"):
        app.router.add_route(method, payouts, sandbox.handle_wrong_method)
    admin.add_routes(app, sandbox)

    async def on_startup(_: web.Application) -> None:
        await sandbox.notifier.open()

    async def on_cleanup(_: web.Application) -> None:
        sandbox.cancel_tasks()
        await sandbox.notifier.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def _raise_fd_limit() -> None:
    """Many concurrent slow requests need many sockets: lift the soft limit to the hard one."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


async def serve(
    config: SandboxConfig,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM in the main thread).

    Prints ``sandbox listening on <url>`` once connections are accepted, and passes the
    URL to ``on_ready`` (handy to run the sandbox in a thread of a test process). With a
    TLS listener (``tls_port``), first prints
    ``sandbox tls listening on https://HOST:PORT cert <path>``.
    """
    _raise_fd_limit()
    app = create_app(config)
    sandbox = app[SANDBOX_KEY]
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=config.backlog, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    listener: TlsListener | None = None
    setup: TlsSetup | None = None
    if config.tls_port is not None:
        setup = TlsSetup(config.tls_dir, [config.host])
        assert runner.server is not None  # set by runner.setup()
        listener = TlsListener(
            sandbox.faults,
            runner.server,
            server_context(setup.cert, setup.key),
            sandbox.tls_stats,
            quiet=config.quiet,
        )
        tls_port = await listener.start(config.host, config.tls_port, config.backlog)
        tls_url = f"https://{_url_host(config.host)}:{tls_port}"
        sandbox.tls_info = setup.info(tls_url, tls_port)
        print(f"sandbox tls listening on {tls_url} cert {setup.cert}", flush=True)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    url = f"http://{_url_host(config.host)}:{port}"
    print(f"sandbox listening on {url}", flush=True)
    if on_ready is not None:
        on_ready(url)
    try:
        await stop.wait()
    finally:
        if listener is not None:
            await listener.close()
        await runner.cleanup()
        if setup is not None:
            setup.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run(config: SandboxConfig) -> None:
    """Serve ``config`` in this process until interrupted (one asyncio loop, no threads)."""
    logging.basicConfig(
        level=logging.WARNING if config.quiet else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
