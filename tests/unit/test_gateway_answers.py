"""What the gateway sends us and what we make of it, without Redis: failed creates
classified by whether a byte was written (D26), the list query's answers (D4, D8), callback
notices' shapes and framing (D12, D14), and the stale-claim refusal before the POST (D7)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import requests

from tests.helpers import TEST_KEY, TEST_PLATFORM, base_env
from worker import signing
from worker.callbacks import BodyError, notice_problem, read_body
from worker.gateway import LOOKUP_LIMIT, GatewayClient, Outcome, QueryKind, classify_failure
from worker.settings import load_settings
from worker.submission import claim_fresh

# -- D26: nothing written = not sent ---------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.SSLError("handshake failure"),
        requests.exceptions.ReadTimeout("Read timed out. (read timeout=1)"),  # a handshake stall
        requests.exceptions.ConnectionError("Connection aborted. reset by peer"),
    ],
)
def test_failure_before_any_byte_is_written_is_not_sent(exc: requests.exceptions.RequestException) -> None:
    """A TLS handshake stall (urllib3 says *read* timeout), an SSLError or a reset before the
    request was written: nothing was sent, so the order may be sent again."""
    # given / when
    result = classify_failure(exc, written=False)
    # then
    assert result.outcome is Outcome.NOT_SENT
    assert "before the request was written" in result.reason


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.SSLError("bad record mac"),
        requests.exceptions.ReadTimeout("Read timed out."),
        requests.exceptions.ConnectionError("Connection aborted."),
        requests.exceptions.ChunkedEncodingError("broken"),
    ],
)
def test_failure_after_the_request_was_written_is_unknown(exc: requests.exceptions.RequestException) -> None:
    """Once any byte of the request left, the outcome is unknown, whatever the exception."""
    # given / when
    result = classify_failure(exc, written=True)
    # then
    assert result.outcome is Outcome.UNKNOWN


def test_connect_timeout_stays_not_sent_even_if_untracked() -> None:
    """The old rule still holds as a floor: a connect timeout never sent anything."""
    # given / when
    result = classify_failure(requests.exceptions.ConnectTimeout("connect timeout"), written=True)
    # then
    assert result.outcome is Outcome.NOT_SENT


# -- D4 / D8: the list query ----------------------------------------------------------


class FakeResponse:
    def __init__(self, doc: Any, status: int = 200) -> None:
        self.status_code = status
        self.content = json.dumps(doc).encode()
        self.headers: dict[str, str] = {}


def client(monkeypatch: pytest.MonkeyPatch, doc: Any, **env: str) -> tuple[GatewayClient, list[Any]]:
    settings = load_settings(base_env("redis://127.0.0.1:1/0", **env))
    gw = GatewayClient(settings.require_gateway(), pool_size=1)
    calls: list[Any] = []

    def fake_get(url: str, **kw: Any) -> FakeResponse:
        calls.append(kw.get("params"))
        return FakeResponse(doc)

    monkeypatch.setattr(gw.session, "get", fake_get)
    return gw, calls


def record(
    pid: str, *, sign_type: str | None = None, algo: str = signing.HMAC_SHA256, **extra: Any
) -> dict[str, Any]:
    """A list record shaped exactly as docs/gateway.md §2a (no sign_type unless asked), signed in ``algo``."""
    rec: dict[str, Any] = {
        "amount": "5000000",
        "real_amount": "5000000",
        "fee": "0",
        "payout_id": f"POT-{pid}",
        "payout_cl_id": pid,
        "platform_id": TEST_PLATFORM,
        "platform_channel_id": "CH1",
        "status": "3",
        "memo": "",
        "create_time": "1700000000",
        "update_time": "1700000100",
        **extra,
    }
    if sign_type:
        rec["sign_type"] = sign_type
    rec["sign"] = signing.sign(rec, TEST_KEY, algo)
    return rec


def test_records_none_of_which_is_ours_are_an_error_not_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ignored filter answers other orders' records: that is "filter not honoured", never
    "not found" (which would let NOT_FOUND_POLICY=resubmit send a second create)."""
    # given
    gw, _ = client(monkeypatch, {"error_code": "0000", "data": [record("other-1")], "total": 1})
    # when
    result = gw.query_order("mine-1", sign_type=signing.HMAC_SHA256)
    # then
    assert result.kind is QueryKind.ERROR
    assert result.reason.startswith("filter not honoured")


def test_only_an_empty_list_or_0050_is_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty data list and the single form's 0050 are the only "not found" answers."""
    # given
    gw, calls = client(monkeypatch, {"error_code": "0000", "data": [], "total": 0})
    gw50, _ = client(monkeypatch, {"error_code": "0050", "error_msg": "查无订单!"})
    # when / then
    assert gw.query_order("mine-1").kind is QueryKind.NOT_FOUND
    assert gw50.query_order("mine-1").kind is QueryKind.NOT_FOUND
    assert calls[0] == {"payout_cl_id": "mine-1", "limit": LOOKUP_LIMIT}


def test_loose_filter_still_finds_the_exact_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefix-matching filter returns px-10 before px-1: the exact record is used."""
    # given
    doc = {"error_code": "0000", "data": [record("px-10"), record("px-1", status="4")], "total": 2}
    gw, _ = client(monkeypatch, doc)
    # when
    result = gw.query_order("px-1", sign_type=signing.HMAC_SHA256)
    # then
    assert (result.kind, result.status, result.payout_id) == (QueryKind.FOUND, "4", "POT-px-1")


def test_two_payouts_of_one_id_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway without a duplicate check may hold two payouts of one id: counted, not hidden."""
    # given
    doc = {
        "error_code": "0000",
        "data": [record("dup-1"), record("dup-1", payout_id="POT-second")],
        "total": 2,
    }
    gw, _ = client(monkeypatch, doc)
    # when
    result = gw.query_order("dup-1", sign_type=signing.HMAC_SHA256)
    # then
    assert result.kind is QueryKind.FOUND and result.payouts == 2


def test_spec_shaped_hmac_record_verifies_with_the_orders_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/gateway.md §2a records carry no sign_type: an HMAC order's record verifies as HMAC (D8)."""
    # given
    gw, _ = client(monkeypatch, {"error_code": "0000", "data": [record("spec-1")], "total": 1})
    # when
    result = gw.query_order("spec-1", sign_type=signing.HMAC_SHA256)
    # then
    assert result.kind is QueryKind.FOUND and result.status == "3"


def test_md5_record_is_no_downgrade_for_an_hmac_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """An MD5-signed record (named or not) for an HMAC order is refused by default."""
    # given
    recs = [record("d-1", algo=signing.MD5), record("d-2", algo=signing.MD5, sign_type=signing.MD5)]
    for rec in recs:
        gw, _ = client(monkeypatch, {"error_code": "0000", "data": [rec], "total": 1})
        # when
        result = gw.query_order(rec["payout_cl_id"], sign_type=signing.HMAC_SHA256)
        # then
        assert result.kind is QueryKind.ERROR and "signature" in result.reason


def test_record_signature_setting_md5_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEWAY_RECORD_SIGNATURE=md5 checks records as MD5; off does not check them."""
    # given
    md5_rec = record("m-1", algo=signing.MD5)
    gw_md5, _ = client(
        monkeypatch, {"error_code": "0000", "data": [md5_rec], "total": 1}, GATEWAY_RECORD_SIGNATURE="md5"
    )
    forged = {**record("m-2"), "sign": "0" * 64}
    gw_off, _ = client(
        monkeypatch, {"error_code": "0000", "data": [forged], "total": 1}, GATEWAY_RECORD_SIGNATURE="off"
    )
    gw_order, _ = client(monkeypatch, {"error_code": "0000", "data": [forged], "total": 1})
    # when / then
    assert gw_md5.query_order("m-1", sign_type=signing.HMAC_SHA256).kind is QueryKind.FOUND
    assert gw_off.query_order("m-2", sign_type=signing.HMAC_SHA256).kind is QueryKind.FOUND
    assert gw_order.query_order("m-2", sign_type=signing.HMAC_SHA256).kind is QueryKind.ERROR


# -- D14: callback shapes -------------------------------------------------------------


def genuine() -> dict[str, Any]:
    notice = {
        "payout_id": "POT1",
        "payout_cl_id": "fold-1",
        "platform_id": TEST_PLATFORM,
        "amount": "5000000",
        "real_amount": "5000000",
        "fee": "0",
        "status": "3",
        "create_time": "1700000000",
        "update_time": "1700000100",
        "sign_type": signing.HMAC_SHA256,
    }
    notice["sign"] = signing.sign(notice, TEST_KEY, signing.HMAC_SHA256)
    return notice


def test_field_fold_verifies_but_is_refused_by_shape() -> None:
    """Folding ``status`` into ``real_amount`` keeps the string to sign byte-identical (the
    signature verifies), so the shape check is what refuses it."""
    # given: status dropped and folded into the preceding field
    forged = genuine()
    del forged["status"]
    forged["real_amount"] = "5000000&status=3"
    # when / then
    assert signing.verify(forged, TEST_KEY)  # the attack is real
    assert notice_problem(forged) is not None
    assert notice_problem(genuine()) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "3a"),
        ("status", None),
        ("create_time", "1700000000&fee=1"),
        ("update_time", "soon"),
        ("amount", "5000000=1"),
        ("amount", "5e6"),
        ("real_amount", "-1"),
        ("fee", "1,5"),
        ("error_msg", "a&b"),
    ],
)
def test_malformed_fields_are_refused(field: str, value: Any) -> None:
    """Non-numeric status or times, malformed amounts and & or = in any value are refused."""
    # given
    notice = genuine()
    if value is None:
        del notice[field]
    else:
        notice[field] = value
    # when / then
    assert notice_problem(notice) is not None


def test_field_names_with_separators_are_refused() -> None:
    """A folded *name* (``amount=5000000&status``) is refused too."""
    # given
    notice = genuine()
    notice["amount=5000000&status"] = "3"
    # when / then
    assert notice_problem(notice) == "field names must not contain & or ="


# -- D12: callback framing ------------------------------------------------------------


def chunked(body: bytes, cuts: tuple[int, ...] = (5, 17)) -> bytes:
    parts, last = [], 0
    for c in (*cuts, len(body)):
        parts.append(body[last:c])
        last = c
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return out + b"0\r\n\r\n"


def test_chunked_body_without_content_length_is_read() -> None:
    """A chunked body the server passed through (wsgiref) is decoded, UTF-8 split included."""
    # given
    body = json.dumps({"payout_cl_id": "c-1", "name": "Dewi Ayu"}, ensure_ascii=False).encode()
    environ = {"wsgi.input": io.BytesIO(chunked(body)), "HTTP_TRANSFER_ENCODING": "chunked"}
    # when / then
    assert read_body(environ) == body


def test_terminated_input_is_read_to_the_end_bounded() -> None:
    """A server that de-chunks (gunicorn, ``wsgi.input_terminated``) is read to the end, bounded."""
    # given
    ok = {"wsgi.input": io.BytesIO(b"x" * 100), "wsgi.input_terminated": True}
    big = {"wsgi.input": io.BytesIO(b"x" * 101), "wsgi.input_terminated": True}
    # when / then
    assert read_body(ok, limit=100) == b"x" * 100
    with pytest.raises(BodyError) as err:
        read_body(big, limit=100)
    assert err.value.status.startswith("413")


def test_oversized_or_broken_chunks_are_refused() -> None:
    """Chunks beyond the limit answer 413; a broken chunk size 400."""
    # given
    big = {"wsgi.input": io.BytesIO(chunked(b"y" * 200)), "HTTP_TRANSFER_ENCODING": "chunked"}
    broken = {"wsgi.input": io.BytesIO(b"zz\r\nabc\r\n"), "HTTP_TRANSFER_ENCODING": "chunked"}
    # when / then
    with pytest.raises(BodyError) as err:
        read_body(big, limit=100)
    assert err.value.status.startswith("413")
    with pytest.raises(BodyError) as err:
        read_body(broken)
    assert err.value.status.startswith("400")


# -- D7: the claim budget -------------------------------------------------------------


def test_a_claim_older_than_the_budget_may_not_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check asked right before the POST says no once either clock passed the budget
    (the boot clock also counts a suspended host)."""
    # given
    clocks = iter([(100.0, 50.0), (101.0, 51.0), (100.5, 57.0), (110.0, 52.0)])
    monkeypatch.setattr("worker.submission._clock", lambda: next(clocks))
    fresh = claim_fresh(5.0)
    # when / then
    assert fresh() is True  # 1 s later
    assert fresh() is False  # the boot clock moved 7 s (suspended)
    assert fresh() is False  # the wall clock moved 10 s


def test_create_refuses_to_send_on_a_stale_claim() -> None:
    """create_payout asks ``may_send`` immediately before the POST: False sends nothing."""
    # given: a gateway URL nothing listens on (a POST would fail differently)
    settings = load_settings(base_env("redis://127.0.0.1:1/0"))
    gw = GatewayClient(settings.require_gateway(), pool_size=1)
    from worker.payout import Payout

    # when
    result = gw.create_payout(
        Payout("stale-1", 5_000_000, "BCA", "Dewi", "1234567890"),
        sign_type=signing.HMAC_SHA256,
        notify_url=None,
        may_send=lambda: False,
    )
    # then
    assert result.outcome is Outcome.NOT_SENT and "SUBMIT_CLAIM_BUDGET" in result.reason
