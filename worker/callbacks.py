"""The gateway's callback receiver: :func:`make_app` (WSGI), ``POST /payouts/notify``.

The web process (``worker.web``) serves it alone on the public listener.

Order of work: parse (JSON or form), find the order, verify the signature with
the algorithm the order was created with (never one the configuration does not
allow), check platform_id and amount, then apply through the same atomic
transition as queries. Answers:

* 200 ``{"error_code":"0000"}`` -- applied, or a duplicate (changes nothing);
* 400 -- malformed: a field name or value containing ``&`` or ``=`` (the string to sign
  does not bind field boundaries, so such a value could carry a folded field), a missing
  or non-numeric ``status``, a non-numeric time, a malformed amount (changes nothing);
* 401 ``0004`` -- a bad signature **or an unknown order**: the same answer, so order ids
  cannot be enumerated (changes nothing);
* 408 -- the body did not arrive within ``BODY_DEADLINE_S`` (a slow client; changes nothing);
* 409 -- the create's answer is not recorded yet: the gateway will retry;
* 503 -- the store is unreachable: the gateway will retry.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import redis
import structlog

from worker import signing
from worker.checks import apply_callback
from worker.gateway import record_from_json
from worker.logs import get_logger
from worker.payout import ID_RE
from worker.reports import ReportResult
from worker.runtime import Runtime, get_runtime

log = get_logger("payouts.callbacks")

NOTIFY_PATH = "/payouts/notify"
MAX_BODY = 64 * 1024
#: seconds a request body may take to arrive, from the first read (slow clients, issue 21)
BODY_DEADLINE_S = 10.0
StartResponse = Callable[..., Any]

_DIGITS = re.compile(r"[0-9]{1,20}")
_DECIMAL = re.compile(r"[0-9]{1,20}(\.[0-9]{1,8})?")
#: fields whose format is checked before anything else (docs/gateway.md §5); others must only be flat text
_TIME_FIELDS = ("create_time", "update_time", "success_time")
_AMOUNT_FIELDS = ("amount", "real_amount", "fee")
_UNKNOWN_OR_FORGED = (401, "0004", "signature verification failed")


class BodyError(Exception):
    """The request body cannot be read: ``status`` is the HTTP answer."""

    def __init__(self, status: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status


def _read_chunked(stream: Any, limit: int) -> bytes:
    """Decode a ``Transfer-Encoding: chunked`` body the server left encoded, bounded."""
    out = bytearray()
    while True:
        line = stream.readline(1026)
        if not line.endswith(b"\n"):
            raise BodyError("400 Bad Request", "malformed chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BodyError("400 Bad Request", "malformed chunked body") from None
        if size < 0 or len(out) + size > limit:
            raise BodyError("413 Payload Too Large", "body too large")
        if size == 0:
            for _ in range(64):  # trailers, up to the empty line
                trailer = stream.readline(1026)
                if trailer in (b"\r\n", b"\n", b""):
                    return bytes(out)
            raise BodyError("400 Bad Request", "malformed chunked body")
        data = stream.read(size)
        if len(data) != size or stream.read(2) not in (b"\r\n",):
            raise BodyError("400 Bad Request", "malformed chunked body")
        out += data


def read_body(environ: dict[str, Any], limit: int = MAX_BODY) -> bytes:
    """The request body, at most ``limit`` bytes, with or without ``Content-Length`` (D12).

    Without one: a server that de-chunks (gunicorn; ``wsgi.input_terminated``) is read to
    the end, bounded; a chunked body the server passed through (wsgiref) is decoded here.
    """
    stream = environ["wsgi.input"]
    raw = environ.get("CONTENT_LENGTH")
    if raw not in (None, ""):
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0 or length > limit:
            raise BodyError("413 Payload Too Large", "body too large")
        return stream.read(length) if length else b""
    if environ.get("wsgi.input_terminated"):
        data: bytes = stream.read(limit + 1)
        if len(data) > limit:
            raise BodyError("413 Payload Too Large", "body too large")
        return data
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return _read_chunked(stream, limit)
    return b""


def read_body_within(environ: dict[str, Any], deadline_s: float, limit: int = MAX_BODY) -> bytes:
    """:func:`read_body`, answered 408 unless the whole body arrives within ``deadline_s``.

    The deadline needs a cooperative server (gunicorn's gevent workers, what
    ``python -m worker.web`` runs): a ``gevent.Timeout`` interrupts the read however the
    client trickles its bytes. Under a server that did not patch sockets the body is read
    without a deadline (that server holds a thread per slow client: put a buffering proxy
    in front of it).
    """
    try:
        from gevent import Timeout, monkey
    except ImportError:  # the gevent extra is not installed: no cooperative deadline
        return read_body(environ, limit)
    if not monkey.is_module_patched("socket"):
        return read_body(environ, limit)
    late = BodyError("408 Request Timeout", f"the body did not arrive within {deadline_s:g} s")
    with Timeout(deadline_s, late):
        return read_body(environ, limit)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    return name[:32].encode("utf-8", "replace").decode("utf-8")


def notice_problem(notice: dict[str, Any]) -> str | None:
    """Why a notice's shape is refused before any lookup or state change (D14), or None."""
    for name, value in notice.items():
        if not isinstance(name, str) or "&" in name or "=" in name:
            return "field names must not contain & or ="
        # a lone surrogate (JSON "\ud800") cannot be signed: refused here, before the lookup,
        # for a known id and an unknown one alike, so it cannot tell them apart (D45)
        if not _encodable(name) or (isinstance(value, str) and not _encodable(value)):
            return f"{_printable(name)}: must be valid Unicode text (no lone surrogates)"
        if isinstance(value, bool) or not isinstance(value, (str, type(None))):
            return f"{_printable(name)}: must be text or a number"
        if isinstance(value, str) and ("&" in value or "=" in value):
            return f"{_printable(name)}: values must not contain & or ="
    status = notice.get("status")
    if not isinstance(status, str) or not _DIGITS.fullmatch(status):
        return "status: required, digits"
    for name in _TIME_FIELDS:
        v = notice.get(name)
        if v not in (None, "") and not (isinstance(v, str) and _DIGITS.fullmatch(v)):
            return f"{name}: must be digits (unix seconds)"
    for name in _AMOUNT_FIELDS:
        v = notice.get(name)
        if v not in (None, "") and not (isinstance(v, str) and _DECIMAL.fullmatch(v)):
            return f"{name}: must be a decimal number"
    return None


def reply(start: StartResponse, status: str, code: str, msg: str = "") -> list[bytes]:
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
    problem = notice_problem(notice)
    if problem:
        log.warning("payout.callback.malformed", problem=problem)
        return 400, "0002", problem
    order = rt.store.get(pid, with_history=False)
    if order is None:
        # the same answer as a bad signature, after similar work: ids cannot be enumerated
        hmac.compare_digest(signing.sign(notice, gw.platform_key.reveal(), gw.sign_type), sign)
        log.warning("payout.callback.unknown_order")
        return _UNKNOWN_OR_FORGED
    expected = order.sign_type or gw.sign_type
    # a notice naming no sign_type (docs/gateway.md §5 D-NTF lists none) is checked with the order's own
    # algorithm; one naming another algorithm is refused (no MD5 downgrade)
    if not signing.verify(
        notice,
        gw.platform_key.reveal(),
        allowed=gw.accepted_sign_types,
        expected_type=expected,
        absent_type=expected,
    ):
        log.warning("payout.callback.forged", sign_type=str(notice.get("sign_type", ""))[:16])
        return _UNKNOWN_OR_FORGED
    if str(notice.get("platform_id", gw.platform_id)) != gw.platform_id:
        return 400, "0002", "platform_id mismatch"
    status = notice.get("status")
    # the same rules as a query (D43): age review, two payouts for one id, conflicting finals
    applied = apply_callback(
        rt,
        order,
        status=None if status is None else str(status),
        payout_id=None if notice.get("payout_id") is None else str(notice["payout_id"]),
        amount=None if notice.get("amount") is None else str(notice["amount"]),
    )
    log.info("payout.callback", applied=applied.value, status=str(status)[:8])
    if applied is ReportResult.NOT_READY:
        return 409, "0001", "order not ready; retry later"
    return 200, "0000", ""


WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def make_app(runtime: Runtime | None = None, *, body_deadline_s: float = BODY_DEADLINE_S) -> WSGIApp:
    """Build the WSGI app; ``runtime`` defaults to the process runtime (tests pass one).

    It never configures logging: its records go to stdlib ``logging`` (redacted by the
    library's own chain, worker/logs.py), so a host that mounts it keeps its own logging; the
    project's web process gets JSON lines from ``worker/gunicornconf.py``.
    """

    def application(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        structlog.contextvars.clear_contextvars()
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz" and method == "GET":
            return reply(start, "200 OK", "0000")
        if path != NOTIFY_PATH:
            return reply(start, "404 Not Found", "0002", "not found")
        if method != "POST":
            return reply(start, "405 Method Not Allowed", "0023", "POST only")
        try:
            body = read_body_within(environ, body_deadline_s)
        except BodyError as exc:
            return reply(start, exc.status, "0002", str(exc))
        try:
            notice = parse_notice(body, environ.get("CONTENT_TYPE", ""))
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
            return reply(start, "400 Bad Request", "0021", "body is not valid JSON or form data")
        try:
            rt = runtime or get_runtime()
            status, code, msg = handle_notice(rt, notice)
        except redis.exceptions.RedisError as exc:
            log.error("payout.callback.store_down", error=type(exc).__name__)
            return reply(start, "503 Service Unavailable", "0001", "store unavailable")
        finally:
            structlog.contextvars.clear_contextvars()
        phrase = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict"}[
            status
        ]
        return reply(start, f"{status} {phrase}", code, msg)

    return application
