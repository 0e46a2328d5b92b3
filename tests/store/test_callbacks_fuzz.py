"""Fuzzing the callback receiver: never a crash, never a 5xx while Redis is up, and no
state change unless the notice's signature is valid.

``worker.callbacks.make_app(runtime)`` is called as a WSGI app directly with random
methods, paths, content types, lengths and bodies (bytes, JSON, form data, deep
nesting, oversized), and with random notices signed with the right key, a wrong key
or an algorithm the order was not created with, against orders in every state.
A 5xx is the answer only when the store is down (the gateway then retries).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.helpers import TEST_KEY, TEST_PLATFORM
from tests.strategies import HUGE, TEXT
from worker import keys, signing
from worker.callbacks import NOTIFY_PATH, make_app
from worker.gateway import record_from_json
from worker.harness.processes import free_port
from worker.payout import Payout
from worker.runtime import Runtime
from worker.states import OPEN, State

FUZZ = settings(
    derandomize=True,
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
AMOUNT = 5_000_000
S = State
#: one order per state, reached through allowed moves; "cb-md5" was created with MD5
ORDERS: dict[str, list[State]] = {
    "cb-received": [],
    "cb-submitting": [S.SUBMITTING],
    "cb-accepted": [S.SUBMITTING, S.ACCEPTED],
    "cb-md5": [S.SUBMITTING, S.ACCEPTED],
    "cb-unconfirmed": [S.SUBMITTING, S.UNCONFIRMED],
    "cb-succeeded": [S.SUBMITTING, S.ACCEPTED, S.SUCCEEDED],
    "cb-failed": [S.SUBMITTING, S.UNCONFIRMED, S.FAILED],
    "cb-rejected": [S.SUBMITTING, S.REJECTED],
    "cb-review": [S.SUBMITTING, S.UNCONFIRMED, S.REVIEW],
}
ALLOWED_ANSWERS = {200, 400, 401, 404, 405, 409, 413}


@pytest.fixture(scope="module")
def cb_rt(make_module_runtime: Any) -> Runtime:
    rt: Runtime = make_module_runtime(GATEWAY_ACCEPTED_SIGN_TYPES="HMAC-SHA256,MD5")
    return rt


def seed_orders(rt: Runtime) -> None:
    rt.redis.flushdb()
    now = time.time()
    for pid, path in ORDERS.items():
        rt.store.create(Payout(pid, AMOUNT, "BCA", "Rina", "1234567890"), due_at=now + 60)
        sign_type = signing.MD5 if pid == "cb-md5" else signing.HMAC_SHA256
        for target in path:
            fields: dict[str, Any] = {"sign_type": sign_type, "submit_attempts": 1}
            if target is S.ACCEPTED:
                fields["payout_id"] = f"SBXPOT-{pid}"
            rt.store.transition_or_raise(
                pid,
                target,
                reason="setup",
                fields=fields,
                due=now + 60 if target in OPEN else None,
            )


#: connection bookkeeping, not order state: a new pooled connection records the server's
#: identity (the loss-epoch guard), whatever request it serves
BOOKKEEPING = frozenset({keys.SERVER, keys.LOSS_EPOCH, keys.ACK_PROBE})


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every key's type and content (but the connection bookkeeping)."""
    out: dict[str, Any] = {}
    for key in sorted(client.scan_iter(count=1000)):
        if key in BOOKKEEPING:
            continue
        kind = client.type(key)
        if kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = client.xrange(key)
        elif kind == "string":
            out[key] = client.get(key)
        else:
            out[key] = kind
    return out


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    content_type: str | None
    body: bytes
    length: str | None
    #: signed with the right key (so it may legitimately change state)
    valid_sign: bool = False


def call(app: Any, req: Request) -> tuple[int, bytes]:
    """Call the WSGI app as a server would; any exception out of it is a crash."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": req.method,
        "PATH_INFO": req.path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.input": io.BytesIO(req.body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
    }
    if req.content_type is not None:
        environ["CONTENT_TYPE"] = req.content_type
    if req.length is not None:
        environ["CONTENT_LENGTH"] = req.length
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        assert isinstance(status, str) and all(isinstance(h, tuple) for h in headers)
        seen.append(status)
        return lambda data: None

    chunks: Iterable[bytes] = app(environ, start_response)
    body = b"".join(chunks)
    assert len(seen) == 1, seen
    return int(seen[0].split()[0]), body


# -- strategies ----------------------------------------------------------------------

METHODS = st.one_of(
    st.just("POST"),
    st.just("POST"),
    st.sampled_from(["GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "post", ""]),
    TEXT,
)
PATHS = st.one_of(
    st.just(NOTIFY_PATH),
    st.just(NOTIFY_PATH),
    st.sampled_from(["/healthz", "/", "", NOTIFY_PATH + "/", "//payouts/notify", "/PAYOUTS/NOTIFY"]),
    TEXT,
)
CTYPES = st.one_of(
    st.none(),
    TEXT,
    st.sampled_from(
        [
            "application/json;charset=utf-8",
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin-1",
        ]
    ),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
DEPTHS = st.one_of(st.sampled_from([10, 999, 1000, 1001, 3000, 10_000]), st.integers(1, 12_000))
RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda d: json.dumps(d).encode(), JSON_VALUES),
    st.builds(lambda n: b"[" * n, DEPTHS),  # deep nesting
    st.builds(lambda n: b'{"a":' * n + b"1" + b"}" * n, DEPTHS),
    st.builds(lambda s: s.encode("utf-8", "surrogatepass"), HUGE),
    st.builds(
        lambda d: urlencode(d).encode(), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
    ),
    st.sampled_from(
        [
            b"",
            b"{}",
            b"null",
            b"[]",
            b'{"payout_cl_id":"cb-accepted"}',
            b'{"payout_cl_id":"cb-accepted","sign":"00"}',
            b"payout_cl_id=cb-accepted",
            b"a=1&&b",
            b"%ff=%fe",
            b'{"payout_cl_id":"cb-accepted","sign":"\\ud800"}',
            b'{"payout_cl_id":"cb-accepted","sign":"x","sign_type":"\\udfff"}',
            b'{"payout_cl_id":"cb-accepted","sign":"x","amount":NaN}',
        ]
    ),
)
STATUSES = st.one_of(
    st.sampled_from(["0", "1", "2", "3", "4", "5", "6", "", "03"]), st.integers(-1, 7), st.none()
)
SIGN_TYPES = st.sampled_from([signing.HMAC_SHA256, signing.MD5, None, "SHA1", "hmac-sha256", ""])


def length_of(body: bytes, mode: str) -> str | None:
    return {
        "exact": str(len(body)),
        "missing": None,
        "empty": "",
        "garbage": "12abc",
        "negative": "-1",
        "short": str(max(0, len(body) - 3)),
        "long": str(len(body) + 50),
        "huge": str(10**12),
        "unicode": "١٢",
    }[mode]


LENGTHS = st.sampled_from(
    ["exact"] * 6 + ["missing", "empty", "garbage", "negative", "short", "long", "huge", "unicode"]
)


def often(value: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``value`` four times in five, else something from ``other``."""
    return st.integers(0, 4).flatmap(lambda k: other if k == 0 else st.just(value))


@st.composite
def signed_notices(draw: st.DrawFn) -> tuple[bytes, str, bool]:
    """A notice signed as the gateway would (mostly with the right key and algorithm,
    sometimes not); JSON or form encoded. Returns (body, content type, right key)."""
    pid = draw(
        st.one_of(
            st.sampled_from(sorted(ORDERS)), st.sampled_from(sorted(ORDERS)), st.just("cb-unknown"), TEXT
        )
    )
    doc: dict[str, Any] = {
        "payout_cl_id": pid,
        "platform_id": draw(often(TEST_PLATFORM, st.sampled_from(["PF9999", "", None]))),
        "payout_id": draw(often(f"SBXPOT-{pid}", st.one_of(TEXT, st.none()))),
        "amount": draw(
            st.one_of(
                st.sampled_from(
                    [str(AMOUNT), f"{AMOUNT}.0000", AMOUNT, str(AMOUNT + 1), "", "abc", "sNaN", None]
                ),
                st.integers(),
                TEXT,
            )
        ),
        "status": draw(STATUSES),
        "fee": draw(st.sampled_from(["0", 0, "100", None])),
        "update_time": draw(st.one_of(st.integers(0, 2**40), st.none())),
    }
    if draw(st.integers(0, 3)) == 0:  # fields the docs do not list (docs/gateway.md §5: more may come)
        doc.update(draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=2)))
        doc["payout_cl_id"] = pid
    own = signing.MD5 if pid == "cb-md5" else signing.HMAC_SHA256
    sign_type = draw(often(own, SIGN_TYPES))
    if sign_type is None:
        doc.pop("sign_type", None)
    else:
        doc["sign_type"] = sign_type
    doc = {k: v for k, v in doc.items() if v is not None}
    right_key = draw(often(True, st.just(False)))
    form = draw(st.integers(0, 3)) == 0
    if form:
        doc = {k: v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}
    algo = (
        sign_type
        if sign_type in signing.SIGN_TYPES
        else (signing.MD5 if not sign_type else signing.HMAC_SHA256)
    )
    try:
        # sign the record exactly as the receiver will parse it (numbers as their text)
        as_parsed = dict(doc) if form else record_from_json(json.dumps(doc).encode())
        doc["sign"] = signing.sign(as_parsed, TEST_KEY if right_key else "wrong-key", algo)
    except (TypeError, ValueError):  # bools/floats have no signing text, surrogates no UTF-8
        doc["sign"] = draw(st.sampled_from(["", "0" * 64, "deadbeef"]))
        right_key = False
    if draw(st.integers(0, 9)) == 0:  # any text where the signature should be
        doc["sign"] = draw(st.one_of(TEXT, st.integers(), st.none(), JSON_VALUES))
        right_key = False
    if form:
        body = urlencode(doc, encoding="utf-8", errors="surrogatepass").encode()
        return body, "application/x-www-form-urlencoded", right_key
    return json.dumps(doc).encode(), "application/json;charset=utf-8", right_key


JSON_OR_FORM = st.sampled_from(
    ["application/json;charset=utf-8", "application/json", "application/x-www-form-urlencoded"]
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """A third signed notices, a third raw bodies to the right endpoint, a third anything."""
    mode = draw(st.sampled_from(["signed", "targeted", "wild"]))
    if mode == "signed":
        body, ctype, valid = draw(signed_notices())
        ctype = draw(often(ctype, CTYPES))
        method, path = draw(often("POST", METHODS)), draw(often(NOTIFY_PATH, PATHS))
        length = length_of(body, draw(often("exact", LENGTHS)))
        return Request(method, path, ctype, body, length, valid)
    body = draw(RAW_BODIES)
    if mode == "targeted":  # past the method, path and length checks, into the parser
        return Request("POST", NOTIFY_PATH, draw(st.one_of(JSON_OR_FORM, CTYPES)), body, str(len(body)))
    return Request(draw(METHODS), draw(PATHS), draw(CTYPES), body, length_of(body, draw(LENGTHS)))


# -- tests ---------------------------------------------------------------------------


def _json_post(body: bytes) -> Request:
    return Request("POST", NOTIFY_PATH, "application/json", body, str(len(body)))


@FUZZ
@given(req=requests())
# found by this test, pinned: deep nesting raised RecursionError out of the app (a 500);
# a lone surrogate where the signature goes raised UnicodeEncodeError in verify (a 500)
@example(req=_json_post(b"[" * 5000))
@example(req=_json_post(b'{"a":' * 1500 + b"1" + b"}" * 1500))
@example(req=_json_post(b'{"payout_cl_id":"cb-accepted","sign_type":"HMAC-SHA256","sign":"\\ud800"}'))
def test_receiver_never_crashes_nor_5xx(cb_rt: Runtime, req: Request) -> None:
    """Any request: a 2xx/4xx JSON answer; the store changes only for a validly signed notice."""
    # given
    seed_orders(cb_rt)
    before = snapshot(cb_rt.redis)
    # when
    status, body = call(make_app(cb_rt), req)
    # then
    assert status in ALLOWED_ANSWERS, (status, body)
    answer = json.loads(body)
    assert isinstance(answer, dict) and isinstance(answer.get("error_code"), str)
    assert (answer["error_code"] == "0000") == (status == 200)
    changed = snapshot(cb_rt.redis) != before
    event(f"http {status}{' changed the store' if changed else ''}")  # --hypothesis-show-statistics
    if not req.valid_sign:
        assert not changed, "state changed without a valid signature"


def signed(doc: dict[str, Any], key: str = TEST_KEY) -> bytes:
    doc = {**doc, "sign_type": signing.HMAC_SHA256}
    return json.dumps({**doc, "sign": signing.sign(doc, key)}).encode()


def post(body: bytes, ctype: str = "application/json;charset=utf-8") -> Request:
    return Request("POST", NOTIFY_PATH, ctype, body, str(len(body)), True)


def test_valid_notices_are_applied(cb_rt: Runtime) -> None:
    """Sanity for the fuzz above: a validly signed final notice is applied, a duplicate is a no-op."""
    # given
    seed_orders(cb_rt)
    app = make_app(cb_rt)
    notice = {
        "payout_cl_id": "cb-accepted",
        "platform_id": TEST_PLATFORM,
        "status": "3",
        "amount": str(AMOUNT),
        "payout_id": "SBXPOT-cb-accepted",
    }
    # when / then
    assert call(app, post(signed(notice)))[0] == 200
    assert cb_rt.store.state_of("cb-accepted") is S.SUCCEEDED
    before = snapshot(cb_rt.redis)
    assert call(app, post(signed(notice)))[0] == 200
    assert snapshot(cb_rt.redis) == before
    assert call(app, post(signed({**notice, "status": "4"}, key="wrong")))[0] == 401
    assert snapshot(cb_rt.redis) == before


def test_store_down_is_503(make_module_runtime: Any) -> None:
    """With Redis unreachable a well-formed notice gets 503 (the gateway retries); the rest
    (health, bad input, wrong path or method) is answered without the store."""
    # given: a runtime whose Redis port has no server
    rt: Runtime = make_module_runtime(f"redis://127.0.0.1:{free_port()}/0")
    app = make_app(rt)
    notice = {
        "payout_cl_id": "cb-accepted",
        "platform_id": TEST_PLATFORM,
        "status": "3",
        "amount": str(AMOUNT),
    }
    # when / then
    assert call(app, post(signed(notice)))[0] == 503
    assert (
        call(app, post(b"payout_cl_id=cb-accepted&status=3&sign=00", "application/x-www-form-urlencoded"))[0]
        == 503
    )
    assert call(app, Request("GET", "/healthz", None, b"", None))[0] == 200
    assert call(app, post(b"{not json"))[0] == 400
    assert call(app, post(b'{"sign":"x"}'))[0] == 400
    assert call(app, Request("GET", NOTIFY_PATH, None, b"", None))[0] == 405
    assert call(app, Request("POST", "/other", None, b"", None))[0] == 404
