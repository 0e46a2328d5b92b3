"""The gateway's callback receiver: ``worker.callbacks:app`` (WSGI), ``POST /payouts/notify``.

Order of work: parse (JSON or form), find the order, verify the signature with
the algorithm the order was created with (never one the configuration does not
allow), check platform_id and amount, then apply through the same atomic
transition as queries. Answers:

* 200 ``{"error_code":"0000"}`` -- applied, or a duplicate (changes nothing);
* 4xx with a non-0000 code -- forged, malformed or unknown order (changes nothing);
* 409 -- the create's answer is not recorded yet: the gateway will retry;
* 503 -- the store is unreachable: the gateway will retry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import redis
import structlog

from worker import signing
from worker.gateway import record_from_json
from worker.logs import configure_logging, get_logger
from worker.payout import ID_RE
from worker.reports import ReportResult, apply_report
from worker.runtime import Runtime, get_runtime

log = get_logger("payouts.callbacks")

NOTIFY_PATH = "/payouts/notify"
MAX_BODY = 64 * 1024
StartResponse = Callable[..., Any]


def _reply(start: StartResponse, status: str, code: str, msg: str = "") -> list[bytes]:
    body: dict[str, str] = {"error_code": code}
    if msg:
        body["error_msg"] = msg
    data = json.dumps(body).encode()
    start(status, [("Content-Type", "application/json;charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def parse_notice(body: bytes, content_type: str) -> dict[str, Any]:
    """Parse a JSON or form-encoded notice; values kept as the text that was signed."""
    if "json" in content_type or body.lstrip().startswith(b"{"):
        doc = record_from_json(body)
        if not isinstance(doc, dict):
            raise ValueError("body is not a JSON object")
        return doc
    pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    return dict(pairs)


def handle_notice(rt: Runtime, notice: dict[str, Any]) -> tuple[int, str, str]:
    """Verify and apply one notice; return (http status, error_code, message)."""
    gw = rt.settings.require_gateway()
    pid = notice.get("payout_cl_id")
    if not isinstance(pid, str) or not ID_RE.fullmatch(pid):
        return 400, "0002", "payout_cl_id missing or malformed"
    structlog.contextvars.bind_contextvars(payout_cl_id=pid)
    sign = notice.get("sign")
    # a signature is hex: anything else (e.g. a JSON "\ud800" escape) cannot match
    if not isinstance(sign, str) or not sign.isascii():
        return 400, "0002", "sign missing or malformed"
    if any(isinstance(v, (dict, list)) for v in notice.values()):
        return 400, "0002", "nested values are not accepted"
    order = rt.store.get(pid, with_history=False)
    if order is None:
        log.warning("payout.callback.unknown_order")
        return 404, "0050", "unknown order"
    expected = order.sign_type or gw.sign_type
    if not signing.verify(
        notice, gw.platform_key.reveal(), allowed=gw.accepted_sign_types, expected_type=expected
    ):
        log.warning("payout.callback.forged", sign_type=str(notice.get("sign_type", "MD5"))[:16])
        return 401, "0004", "signature verification failed"
    if str(notice.get("platform_id", gw.platform_id)) != gw.platform_id:
        return 400, "0002", "platform_id mismatch"
    status = notice.get("status")
    applied = apply_report(
        rt,
        order,
        status=None if status is None else str(status),
        payout_id=None if notice.get("payout_id") is None else str(notice["payout_id"]),
        amount=None if notice.get("amount") is None else str(notice["amount"]),
        source="callback",
    )
    log.info("payout.callback", applied=applied.value, status=str(status)[:8])
    if applied is ReportResult.NOT_READY:
        return 409, "0001", "order not ready; retry later"
    return 200, "0000", ""


def make_app(runtime: Runtime | None = None) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """Build the WSGI app; ``runtime`` defaults to the process runtime (tests pass one).

    Without a runtime (the production entry point, e.g. ``gunicorn worker.callbacks:app``)
    the first request also configures logging from the settings: no WSGI server calls
    :func:`configure_logging`, and structlog's default would print unredacted console text.
    """

    def application(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        if runtime is None:
            s = get_runtime().settings
            configure_logging(s.log_format, s.log_level)  # once per process; then a no-op
        structlog.contextvars.clear_contextvars()
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz" and method == "GET":
            return _reply(start, "200 OK", "0000")
        if path != NOTIFY_PATH:
            return _reply(start, "404 Not Found", "0002", "not found")
        if method != "POST":
            return _reply(start, "405 Method Not Allowed", "0023", "POST only")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            return _reply(start, "413 Payload Too Large", "0002", "body too large")
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            notice = parse_notice(body, environ.get("CONTENT_TYPE", ""))
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
            return _reply(start, "400 Bad Request", "0021", "body is not valid JSON or form data")
        try:
            rt = runtime or get_runtime()
            status, code, msg = handle_notice(rt, notice)
        except redis.exceptions.RedisError as exc:
            log.error("payout.callback.store_down", error=type(exc).__name__)
            return _reply(start, "503 Service Unavailable", "0001", "store unavailable")
        finally:
            structlog.contextvars.clear_contextvars()
        phrase = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict"}[
            status
        ]
        return _reply(start, f"{status} {phrase}", code, msg)

    return application


app = make_app()
