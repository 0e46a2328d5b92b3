"""HTTP client for the payment gateway, and the classification of its answers.

``create_payout`` never retries by itself: one call sends the create request at
most once, and its answer is classified by :func:`classify_create` per DESIGN:
only a request that provably never left may be sent again.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from worker import signing
from worker.payout import Payout
from worker.settings import GatewaySettings

CREATE_PATH: Final = "/gateway/api/v2/payouts"
LIST_PATH: Final = "/gateway/api/v2/payouts"
SINGLE_PATH: Final = "/gateway/api/v2/payouts/{payout_cl_id}"
BALANCE_PATH: Final = "/gateway/api/v2/platforms/balance"
#: the sandbox gateway names itself in this response header (D6)
SANDBOX_HEADER: Final = "X-Payout-Sandbox"
LIST_LIMIT_MAX: Final = 500
#: ``limit`` of the one-order list lookup: large enough that a loosely matching filter
#: (``LIKE 'id%'``) or several payouts of one id still show the exact record, small enough
#: that an ignored filter costs one bounded page (SPEC §2a: max 500)
LOOKUP_LIMIT: Final = 50

#: Error codes that mean "the create request was refused; no payout exists".
#: Each entry gives the reason. Anything not listed here (0001 network delay,
#: 0014 duplicate, 0005/0006, unknown codes) is an unknown outcome -> unconfirmed.
NOT_CREATED: Final[dict[str, str]] = {
    "0002": "invalid request parameters",
    "0003": "service switched off",
    "0004": "signature verification failed",
    "0008": "bank card not found",
    "0009": "wrong service_id",
    "0010": "merchant not enabled for this service",
    "0012": "unsupported bank",
    "0015": "channel does not exist",
    "0016": "unknown fee-rate type",
    "0017": "failed to create payout record",
    "0018": "insufficient merchant balance",
    "0019": "platform_channel_id is required",
    "0020": "wrong API version",
    "0021": "body is not valid JSON",
    "0022": "unsupported Content-Type",
    "0023": "unsupported HTTP method",
    "0027": "host not allowed",
    "0028": "amount below the minimum",
    "0029": "amount above the maximum",
}
#: The gateway's "order not found" on the single-order query form.
NOT_FOUND_CODE: Final = "0050"
#: the reason of the NOT_SENT a stale claim gets (nothing was sent: the claim was too old)
STALE_CLAIM: Final = "not sent: the claim is older than SUBMIT_CLAIM_BUDGET"


class Outcome(StrEnum):
    #: 0000 with a payout_id
    ACCEPTED = "accepted"
    #: a documented "not created" code
    REJECTED = "rejected"
    #: the order may exist: timeout, 5xx, empty/garbled body, unknown code, 0014
    UNKNOWN = "unknown"
    #: the request provably never left (connection refused, connect timeout)
    NOT_SENT = "not_sent"
    #: HTTP 429: refused before processing; back off and send again later
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class CreateResult:
    outcome: Outcome
    reason: str
    code: str = ""
    payout_id: str | None = None
    http_status: int | None = None


def classify_create(status: int, body: bytes) -> CreateResult:
    """Map an HTTP answer to the create request onto an :class:`Outcome`."""
    if status == 429:
        return CreateResult(Outcome.RATE_LIMITED, "http 429", http_status=status)
    if status >= 500:
        return CreateResult(Outcome.UNKNOWN, f"http {status}", http_status=status)
    if not body.strip():
        return CreateResult(Outcome.UNKNOWN, f"empty body (http {status})", http_status=status)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return CreateResult(Outcome.UNKNOWN, f"garbled body (http {status})", http_status=status)
    if not isinstance(doc, dict):
        return CreateResult(Outcome.UNKNOWN, "body is not an object", http_status=status)
    code = str(doc.get("error_code", ""))
    if code == "0000":
        data = doc.get("data")
        payout_id = data.get("payout_id") if isinstance(data, dict) else None
        if isinstance(payout_id, (str, int)) and not isinstance(payout_id, bool) and str(payout_id).strip():
            return CreateResult(Outcome.ACCEPTED, "0000", code, str(payout_id).strip(), http_status=status)
        return CreateResult(Outcome.UNKNOWN, "0000 without payout_id", code, http_status=status)
    if code in NOT_CREATED and status < 500:
        return CreateResult(Outcome.REJECTED, NOT_CREATED[code], code, http_status=status)
    if code == "0014":
        return CreateResult(Outcome.UNKNOWN, "0014 duplicate order", code, http_status=status)
    return CreateResult(Outcome.UNKNOWN, f"unknown answer code {code[:8]!r}", code, http_status=status)


# -- "was any byte of the request written?" ---------------------------------------
#
# A failure before the first byte of the request is written (DNS, connect, the TLS
# handshake: urllib3 reports a handshake stall as a *read* timeout and a broken one as an
# SSLError) means the gateway cannot have the order, so it may be sent again (NOT_SENT).
# The gateway's connections mark, per thread, that they were used and when they first
# wrote; every write of http.client/urllib3 goes through ``send``.

_track = threading.local()


class _TrackedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _track.used = True
        super().connect()

    def send(self, data: Any) -> None:
        _track.used = True
        if self.sock is None:
            self.connect()  # a failure here: still nothing written
        _track.written = True
        super().send(data)


class _TrackedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _track.used = True
        super().connect()  # the TLS handshake happens here

    def send(self, data: Any) -> None:
        _track.used = True
        if self.sock is None:
            self.connect()
        _track.written = True
        super().send(data)


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackingAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


def _start_tracking() -> None:
    _track.used = False
    _track.written = False


def _nothing_written() -> bool:
    """True when our connection was used for this call and wrote no byte of it."""
    return bool(getattr(_track, "used", False)) and not getattr(_track, "written", True)


class QueryKind(StrEnum):
    FOUND = "found"
    NOT_FOUND = "not_found"
    ERROR = "error"


@dataclass(frozen=True)
class QueryResult:
    kind: QueryKind
    reason: str = ""
    status: str | None = None
    payout_id: str | None = None
    amount: str | None = None
    record: Mapping[str, Any] = field(default_factory=dict, repr=False)
    rate_limited: bool = False
    #: distinct payouts the gateway holds for this id (more than 1: created twice)
    payouts: int = 1


def _is_not_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was never established, so nothing was sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, NewConnectionError):
            return True
        nxt = getattr(cur, "reason", None)
        if nxt is None and cur.args and isinstance(cur.args[0], BaseException):
            nxt = cur.args[0]
        cur = nxt if isinstance(nxt, BaseException) else cur.__cause__
    return False


class DeadlineExceeded(requests.exceptions.Timeout):
    """The call's total deadline (``GATEWAY_TOTAL_TIMEOUT``) passed while reading the answer."""


def read_within(resp: requests.Response, deadline: float) -> requests.Response:
    """Read a streamed answer's body in chunks against ``deadline`` (monotonic): a
    trickling answer cannot hold a task past it (the threads pool enforces no Celery
    time limit, D19). The connect and each read stay bounded by their timeouts."""
    if getattr(resp, "_content_consumed", True):
        return resp  # already read (not streamed)
    chunks = []
    try:
        for chunk in resp.iter_content(65536):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise DeadlineExceeded("total deadline passed reading the answer")
    except BaseException:
        resp.close()  # a half-read connection is never reused
        raise
    resp._content = b"".join(chunks)
    resp._content_consumed = True
    return resp


def classify_failure(exc: requests.exceptions.RequestException, *, written: bool) -> CreateResult:
    """A create that raised: NOT_SENT only when provably no byte of it left (D26)."""
    name = type(exc).__name__
    if not written:
        return CreateResult(Outcome.NOT_SENT, f"not sent: {name} before the request was written")
    if isinstance(exc, requests.exceptions.ConnectionError) and _is_not_sent(exc):
        return CreateResult(Outcome.NOT_SENT, f"not sent: {name}")
    if isinstance(exc, (requests.exceptions.ReadTimeout, requests.exceptions.Timeout)):
        return CreateResult(Outcome.UNKNOWN, "read timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return CreateResult(Outcome.UNKNOWN, "connection lost")
    return CreateResult(Outcome.UNKNOWN, f"request error: {name}")


def record_from_json(body: bytes) -> Any:
    """Parse a body keeping numbers as their text, so signatures verify as sent."""
    return json.loads(body, parse_float=str, parse_int=str)


_REASON_CODE: Final = re.compile(r"(?<![0-9])[0-9]{4}(?![0-9])")
#: called after every request with (endpoint, outcome, error code or "", seconds): metrics
Observer = Callable[[str, str, str, float], None]


class GatewayClient:
    """One per process: a pooled ``requests.Session`` with no automatic retries."""

    def __init__(self, cfg: GatewaySettings, *, pool_size: int = 32, observe: Observer | None = None) -> None:
        self.cfg = cfg
        #: metrics hook (worker.metrics.count_gateway via the runtime); never raises
        self.observe = observe
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy/netrc lookups: ~30% less CPU per call
        adapter = _TrackingAdapter(
            pool_connections=4,
            pool_maxsize=max(4, pool_size),
            max_retries=Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0),
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if cfg.ca_file:
            self.session.verify = cfg.ca_file
        self.timeout = (cfg.connect_timeout_s, cfg.read_timeout_s)
        #: set once any answer carried the sandbox's header (D6)
        self.sandbox_seen = False

    def close(self) -> None:
        self.session.close()

    # -- create ---------------------------------------------------------------

    def build_create(
        self, payout: Payout, *, sign_type: str, notify_url: str | None, request_time: int
    ) -> dict[str, Any]:
        """The signed create body (SPEC §1). Contains secrets: never log it."""
        body: dict[str, Any] = {
            "platform_id": self.cfg.platform_id,
            "service_id": self.cfg.service_id,
            "payout_cl_id": payout.payout_cl_id,
            "amount": payout.amount,
            "currency": self.cfg.currency,
            "bank_name": payout.bank_name,
            "name": payout.name,
            "number": payout.number,
            "request_time": request_time,
        }
        if notify_url:
            body["notify_url"] = notify_url
        if sign_type == signing.HMAC_SHA256:
            body["sign_type"] = sign_type
        body["sign"] = signing.sign(body, self.cfg.platform_key.reveal(), sign_type)
        return body

    def _create_payout(
        self,
        payout: Payout,
        *,
        sign_type: str,
        notify_url: str | None,
        may_send: Callable[[], bool] | None = None,
    ) -> CreateResult:
        """Send the create request once and classify the answer. Never raises on I/O.

        ``may_send`` is asked immediately before the POST; False (the claim is too old)
        sends nothing and answers NOT_SENT.
        """
        body = self.build_create(
            payout, sign_type=sign_type, notify_url=notify_url, request_time=int(time.time())
        )
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if may_send is not None and not may_send():
            return CreateResult(Outcome.NOT_SENT, STALE_CLAIM)
        _start_tracking()
        deadline = time.monotonic() + self.cfg.total_timeout_s
        try:
            resp = self.session.post(
                self.cfg.base_url + CREATE_PATH,
                data=data,
                headers={"Content-Type": "application/json;charset=utf-8"},
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
            read_within(resp, deadline)
        except requests.exceptions.RequestException as exc:
            return classify_failure(exc, written=not _nothing_written())
        return classify_create(resp.status_code, resp.content)

    # -- query ----------------------------------------------------------------

    # -- the public calls: each one timed and counted (endpoint, outcome, code) --------

    def _observed(self, endpoint: str, outcome: str, code: str, started: float) -> None:
        if self.observe is not None:
            self.observe(endpoint, outcome, code, time.perf_counter() - started)

    def create_payout(
        self,
        payout: Payout,
        *,
        sign_type: str,
        notify_url: str | None,
        may_send: Callable[[], bool] | None = None,
    ) -> CreateResult:
        """Send the create request once and classify the answer (see ``_create_payout``)."""
        started = time.perf_counter()
        result = self._create_payout(payout, sign_type=sign_type, notify_url=notify_url, may_send=may_send)
        self._observed("create", result.outcome.value, result.code, started)
        return result

    def query_order(self, payout_cl_id: str, *, sign_type: str | None = None) -> QueryResult:
        """Look one order up (see ``_query_order``)."""
        started = time.perf_counter()
        result = self._query_order(payout_cl_id, sign_type=sign_type)
        found = _REASON_CODE.search(result.reason)
        outcome = "rate_limited" if result.rate_limited else result.kind.value
        self._observed("query", outcome, found.group(0) if found else "", started)
        return result

    def query_window(
        self,
        *,
        created_gte: int,
        created_lte: int,
        offset: int = 0,
        limit: int = LIST_LIMIT_MAX,
        sign_types: Mapping[str, str | None] | None = None,
    ) -> tuple[list[QueryResult], int] | None:
        """One page of the list query over a creation-time window (see ``_query_window``)."""
        started = time.perf_counter()
        page = self._query_window(
            created_gte=created_gte,
            created_lte=created_lte,
            offset=offset,
            limit=limit,
            sign_types=sign_types,
        )
        self._observed("list", "error" if page is None else "found", "", started)
        return page

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> requests.Response:
        deadline = time.monotonic() + self.cfg.total_timeout_s
        resp = self.session.get(
            self.cfg.base_url + path,
            params=params,
            headers={"Authorization": self.cfg.authorization.reveal()},
            timeout=self.timeout,
            allow_redirects=False,
            stream=True,
        )
        read_within(resp, deadline)
        if resp.headers.get(SANDBOX_HEADER):
            self.sandbox_seen = True
        return resp

    def query_balance(self) -> tuple[int, int] | None:
        """(total_balance, total_frozen_balance) in minor units (SPEC §3); None on any error.
        Counted like every gateway call (endpoint ``balance``)."""
        started = time.perf_counter()
        value, outcome, code = self._query_balance()
        self._observed("balance", outcome, code, started)
        return value

    def _query_balance(self) -> tuple[tuple[int, int] | None, str, str]:
        """(the balance or None, outcome label, error code) of one balance call."""
        try:
            resp = self._get(BALANCE_PATH)
            if resp.status_code == 429:
                return None, "rate_limited", ""
            doc = record_from_json(resp.content) if resp.status_code == 200 else None
        except (requests.exceptions.RequestException, ValueError, UnicodeDecodeError):
            return None, "error", ""
        if not isinstance(doc, dict):
            return None, "error", ""
        code = str(doc.get("error_code", ""))
        if code != "0000":
            return None, "error", code
        data = doc.get("data")
        if not isinstance(data, dict):
            return None, "error", code
        try:
            total = int(Decimal(str(data["total_balance"])))
            frozen = int(Decimal(str(data.get("total_frozen_balance") or 0)))
        except (KeyError, ArithmeticError, ValueError):
            return None, "error", code
        return (total, frozen), "found", code

    def balance_answer(self) -> tuple[str, Mapping[str, Any]]:
        """The balance endpoint's (error code, ``data``) as sent, for ``payouts doctor``: the
        code is "" when no JSON object came back. Counted (endpoint ``balance``)."""
        started = time.perf_counter()
        code, data = "", {}  # type: tuple[str, Mapping[str, Any]]
        try:
            resp = self._get(BALANCE_PATH)
            doc = record_from_json(resp.content)
        except (requests.exceptions.RequestException, ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            code = str(doc.get("error_code", ""))
            found = doc.get("data")
            data = found if isinstance(found, dict) else {}
        self._observed("balance", "found" if code == "0000" else "error", code, started)
        return code, data

    def recent_records(self, *, limit: int = 10) -> tuple[str, list[Mapping[str, Any]]]:
        """Up to ``limit`` records of the list query with no filter (any orders of this
        merchant, as sent: signed), for ``payouts doctor``; (error code or "", records)."""
        started = time.perf_counter()
        code, records = "", []  # type: tuple[str, list[Mapping[str, Any]]]
        try:
            resp = self._get(LIST_PATH, {"offset": 0, "limit": max(1, min(limit, LIST_LIMIT_MAX))})
            doc = record_from_json(resp.content)
        except (requests.exceptions.RequestException, ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            code = str(doc.get("error_code", ""))
            data = doc.get("data")
            records = [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []
        self._observed("list", "found" if code == "0000" else "error", code, started)
        return code, records

    def is_sandbox(self) -> bool | None:
        """Does the gateway say it is the sandbox? None when it does not answer."""
        try:
            self._get(BALANCE_PATH)
        except requests.exceptions.RequestException:
            return None
        return self.sandbox_seen

    def _verified(self, record: Mapping[str, Any], sign_type: str | None) -> bool:
        """A query record's signature, per ``GATEWAY_RECORD_SIGNATURE`` (SPEC §2a, §11.3).

        ``order`` (default): a record naming no ``sign_type`` (SPEC §2a lists none) is
        checked with the algorithm its order was created with; one naming a type must name
        that one. ``md5``: records are always MD5. ``off``: records are not checked (they
        come over the authenticated query; use only with https).
        """
        if "sign" not in record:
            return True  # the single-order form carries no signature (SPEC §2b)
        mode = self.cfg.record_signature
        if mode == "off":
            return True
        key = self.cfg.platform_key.reveal()
        if mode == "md5":
            if record.get("sign_type") not in (None, "", signing.MD5):
                return False
            return signing.verify(record, key, allowed={signing.MD5}, absent_type=signing.MD5)
        own = sign_type or self.cfg.sign_type
        return signing.verify(
            record, key, allowed=self.cfg.accepted_sign_types, expected_type=own, absent_type=own
        )

    def _query_order(self, payout_cl_id: str, *, sign_type: str | None = None) -> QueryResult:
        """Look one order up by payout_cl_id (list form, or the single form by setting).

        ``sign_type``: the algorithm the order was created with (verifies its record).
        In the list form, records none of which is ours are an ERROR ("filter not
        honoured"), never NOT_FOUND: only an empty ``data`` or ``0050`` is "not found".
        """
        try:
            if self.cfg.query_form == "single":
                resp = self._get(SINGLE_PATH.format(payout_cl_id=quote(payout_cl_id, safe="")))
            else:
                resp = self._get(LIST_PATH, {"payout_cl_id": payout_cl_id, "limit": LOOKUP_LIMIT})
        except requests.exceptions.RequestException as exc:
            return QueryResult(QueryKind.ERROR, f"query failed: {type(exc).__name__}")
        if resp.status_code == 429:
            return QueryResult(QueryKind.ERROR, "http 429", rate_limited=True)
        if resp.status_code >= 500 or not resp.content.strip():
            return QueryResult(QueryKind.ERROR, f"query http {resp.status_code}")
        try:
            doc = record_from_json(resp.content)
        except (ValueError, UnicodeDecodeError):
            return QueryResult(QueryKind.ERROR, "query garbled body")
        if not isinstance(doc, dict):
            return QueryResult(QueryKind.ERROR, "query body is not an object")
        code = str(doc.get("error_code", ""))
        if code == NOT_FOUND_CODE:
            return QueryResult(QueryKind.NOT_FOUND, "0050 not found")
        if code != "0000":
            return QueryResult(QueryKind.ERROR, f"query error code {code[:8]!r}")
        data = doc.get("data")
        if isinstance(data, list):
            if not data:
                return QueryResult(QueryKind.NOT_FOUND, "empty list")
            matches = [r for r in data if isinstance(r, dict) and r.get("payout_cl_id") == payout_cl_id]
            if not matches:
                return QueryResult(QueryKind.ERROR, "filter not honoured: records came back, none is ours")
            results = [self._result_of(r, sign_type) for r in matches]
            bad = [r for r in results if r.kind is not QueryKind.FOUND]
            if bad:
                return bad[0]
            pids = {r.payout_id for r in results}
            if len(matches) > 1 and len(pids) > 1:
                first = results[0]
                return QueryResult(
                    QueryKind.FOUND,
                    f"{len(pids)} payouts for this id",
                    status=first.status,
                    payout_id=first.payout_id,
                    amount=first.amount,
                    record=first.record,
                    payouts=len(pids),
                )
            return results[0]
        if isinstance(data, dict):
            if data.get("payout_cl_id") not in (None, payout_cl_id):
                return QueryResult(QueryKind.ERROR, "query answered another order")
            return self._result_of(data, sign_type)
        return QueryResult(QueryKind.ERROR, "query data missing")

    def _result_of(self, record: Mapping[str, Any], sign_type: str | None = None) -> QueryResult:
        if not self._verified(record, sign_type):
            return QueryResult(QueryKind.ERROR, "query record signature invalid")
        status = record.get("status")
        return QueryResult(
            QueryKind.FOUND,
            "found",
            status=None if status is None else str(status),
            payout_id=None if record.get("payout_id") is None else str(record["payout_id"]),
            amount=None if record.get("amount") is None else str(record["amount"]),
            record=record,
        )

    def _query_window(
        self,
        *,
        created_gte: int,
        created_lte: int,
        offset: int = 0,
        limit: int = LIST_LIMIT_MAX,
        sign_types: Mapping[str, str | None] | None = None,
    ) -> tuple[list[QueryResult], int] | None:
        """One page of the list query over a creation-time window; None on any error.

        With ``sign_types`` (our ids -> the algorithm each was created with), only those
        ids' records are verified; the others come back unverified as ERROR "not ours"
        (so the page length still counts every record, for paging).
        """
        params = {
            "create_time__gte": created_gte,
            "create_time__lte": created_lte,
            "offset": offset,
            "limit": min(limit, LIST_LIMIT_MAX),
        }
        try:
            resp = self._get(LIST_PATH, params)
            doc = record_from_json(resp.content) if resp.status_code == 200 else None
        except (requests.exceptions.RequestException, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or str(doc.get("error_code")) != "0000":
            return None
        data = doc.get("data")
        if not isinstance(data, list):
            return None
        records = [r for r in data if isinstance(r, dict)]
        if sign_types is None:
            results = [self._result_of(r) for r in records]
        else:
            results = [
                self._result_of(r, sign_types[str(r.get("payout_cl_id"))])
                if str(r.get("payout_cl_id")) in sign_types
                else QueryResult(QueryKind.ERROR, "not ours", record=r)
                for r in records
            ]
        try:
            total = int(doc.get("total", len(data)))
        except (TypeError, ValueError):
            total = len(data)
        return results, total
