"""The gateway's HTTP API as the sandbox answers it (docs/gateway.md §1-3): create, the
list and single-order queries, the balance; request faults (429, latency, lost answers).

Each handler validates the request the way the gateway does and answers its codes (HTTP 200
with ``{"error_code", "error_msg"}``); the money and the orders are the bank's
(:mod:`worker.sandbox.bank`), the counts and settings the sandbox's (:mod:`worker.sandbox.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from .bank import Bank, Refusal
from .faults import FaultRule
from .orders import Order
from .signature import MD5, verify

if TYPE_CHECKING:
    from .server import Sandbox

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


class GatewayApi:
    """The gateway endpoints of one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    @property
    def bank(self) -> Bank:
        """The simulated bank: orders and money."""
        return self.sandbox.bank

    # ---------------------------------------------------------------- faults

    async def apply_request_faults(
        self, endpoint: str, payout_cl_id: str | None
    ) -> web.StreamResponse | None:
        """Rate limit then latency, for any gateway endpoint. A response means: answer it."""
        if self.sandbox.faults.rate_limited(endpoint, payout_cl_id) is not None:
            self.sandbox.count_response(endpoint, "http_429")
            return web.Response(
                status=429,
                text="429 Too Many Requests",
                headers={"Retry-After": "1"},
            )
        rule = self.sandbox.faults.pick("latency", endpoint=endpoint, payout_cl_id=payout_cl_id)
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
                self.sandbox.count_response(endpoint, "closed_after_hang")
                return drop_connection(request, reset=False)
            self.sandbox.count_response(endpoint, "answered_after_hang")
            return answer
        if mode in ("5xx", "query_5xx", "create_5xx_before"):
            status = int(rule.get("status", 500))
            self.sandbox.count_response(endpoint, f"http_{status}")
            return web.Response(status=status, text=f"{status} Internal Server Error")
        if mode == "code":
            code = str(rule.get("code", "0017"))
            self.sandbox.count_response(endpoint, code)
            return gateway_error(code, "Failed to create payout record")
        if mode == "empty":
            self.sandbox.count_response(endpoint, "empty")
            return web.Response(status=200, body=b"", content_type="application/json")
        if mode == "garbled":
            self.sandbox.count_response(endpoint, "garbled")
            text = answer.text or ""
            return web.Response(
                status=200, text=text[: max(1, len(text) // 2)], content_type="application/json"
            )
        self.sandbox.count_response(endpoint, "reset")
        return drop_connection(request, reset=True)

    # -------------------------------------------------------------- handlers

    async def handle_create(self, request: web.Request) -> web.StreamResponse:
        endpoint = "create"
        self.sandbox.requests[endpoint] += 1
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
            self.bank.book.count_create_request(payout_cl_id)
        early = await self.apply_request_faults(endpoint, payout_cl_id)
        if early is not None:
            return early
        before = self.sandbox.faults.pick("create_5xx_before", payout_cl_id=payout_cl_id)
        if before is not None:
            return await self.lose_response(request, before, endpoint, gateway_json({}))
        if parse_error == "0022":
            answer = gateway_error("0022", "Unsupported Content-Type, use application/json")
        elif parse_error == "0021":
            answer = gateway_error("0021", "Request body is not valid JSON")
        else:
            answer = self.create(params)
        code = json.loads(answer.text or "{}").get("error_code", "?")
        if not self.sandbox.config.quiet:
            log.info("create payout_cl_id=%s error_code=%s", payout_cl_id, code)
        if code == "0000":
            lost = self.sandbox.faults.pick("create_lost", payout_cl_id=payout_cl_id)
            if lost is not None:
                return await self.lose_response(request, lost, endpoint, answer)
        self.sandbox.count_response(endpoint, code)
        return answer

    def create(self, params: dict[str, Any]) -> web.Response:  # noqa: C901 — the gateway's create checks in their documented order, one early return per code
        """Validate a parsed create body (every value as its sent text) and create the order."""
        cfg = self.sandbox.config
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
        opened = self.bank.open_payout(
            params["payout_cl_id"],
            amount,
            params.get("sign_type") or MD5,
            params.get("notify_url") or None,
            params["bank_name"],
        )
        if isinstance(opened, Refusal):
            return gateway_error(opened.code, opened.message)
        return gateway_json({"error_code": "0000", "data": {"payout_id": opened.payout_id}})

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
        if token != self.sandbox.config.authorization:
            return gateway_error("0006", "Invalid Authorization!")
        return None

    async def _query_faults(
        self, request: web.Request, endpoint: str, payout_cl_id: str | None
    ) -> tuple[web.StreamResponse | None, FaultRule | None]:
        self.sandbox.requests[endpoint] += 1
        early = await self.apply_request_faults(endpoint, payout_cl_id)
        if early is not None:
            return early, None
        rule = self.sandbox.faults.pick("query_5xx", endpoint=endpoint, payout_cl_id=payout_cl_id)
        if rule is None:
            rule = self.sandbox.faults.pick("query_timeout", endpoint=endpoint, payout_cl_id=payout_cl_id)
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
        self.sandbox.count_response(endpoint, payload.get("error_code", "?"))
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
        mode = self.sandbox.config.list_filter
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
            reverse=self.sandbox.config.list_order == "newest_first",
        )
        page = matches[offset : offset + limit]
        return gateway_json(
            {
                "error_code": "0000",
                "data": [self.bank.book.list_record(order) for order in page],
                "total": len(matches),
            }
        )

    def _list_candidates(self, cl_id: str | None, payout_id: str | None, mode: str) -> list[Order]:
        """The orders a list query looks at, before the visibility and time filters."""
        if cl_id and mode == "prefix":
            return [o for o in self.bank.book.all() if o.payout_cl_id.startswith(cl_id)]
        if cl_id and mode == "contains":
            return [o for o in self.bank.book.all() if cl_id in o.payout_cl_id]
        if cl_id:
            return self.bank.book.of(cl_id)
        if payout_id:
            found = self.bank.book.by_payout_id.get(payout_id)
            return [found] if found else []
        return self.bank.book.all()

    async def handle_single(self, request: web.Request) -> web.StreamResponse:
        endpoint = "query_single"
        payout_cl_id = request.match_info["payout_cl_id"]
        early, rule = await self._query_faults(request, endpoint, payout_cl_id)
        if early is not None:
            return early
        answer = self._authorize(request)
        if answer is None:
            now = time.time()
            visible = [o for o in self.bank.book.of(payout_cl_id) if o.visible(now)]
            order = visible[0] if visible else None
            if order is None:
                answer = gateway_error("0050", "查无订单!")
            else:
                answer = gateway_json({"error_code": "0000", "data": self.bank.book.single_record(order)})
        return await self._answer(request, endpoint, rule, answer)

    async def handle_balance(self, request: web.Request) -> web.StreamResponse:
        endpoint = "balance"
        self.sandbox.requests[endpoint] += 1
        early = await self.apply_request_faults(endpoint, None)
        if early is not None:
            return early
        answer = self._authorize(request) or gateway_json(
            {
                "error_code": "0000",
                "data": {
                    "platform_id": self.sandbox.config.platform_id,
                    "total_balance": self.bank.available_minor,
                    "total_frozen_balance": self.bank.frozen_minor,
                },
            }
        )
        return await self._answer(request, endpoint, None, answer)

    async def handle_wrong_method(self, request: web.Request) -> web.Response:
        self.sandbox.requests["wrong_method"] += 1
        return gateway_error("0023", f"Unsupported HTTP method {request.method}")


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
