"""Create payout (docs/gateway.md §1, §4, §7): signatures, validation codes, duplicates, ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.vectors import SPEC_EXAMPLE as SPEC_VECTOR
from tests.vectors import SPEC_KEY, SPEC_SIGN
from worker.sandbox.process import SandboxProcess, start_sandbox
from worker.sandbox.signature import HMAC_SHA256, MD5

SPEC_EXAMPLE = {**SPEC_VECTOR, "sign": SPEC_SIGN}


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256, None])
def test_signed_create_is_accepted_in_both_modes(api, gw, sign_type):
    """A correctly signed create answers 0000 with a payout_id; no sign_type means MD5."""
    # when
    answer = api.create("ok-1", sign_type=sign_type).json()
    # then
    assert answer == {"error_code": "0000", "data": {"payout_id": "SBXPOT00000001"}}
    order = gw.admin.order("ok-1")
    assert order["sign_type"] == (sign_type or MD5)


def test_numbers_may_be_sent_as_json_numbers(api, make_body):
    """amount and request_time as JSON numbers are signed and accepted as their text."""
    body = make_body("num-1", amount=5000000, request_time=1707220674)
    raw = json.dumps(body)
    assert '"amount": 5000000' in raw
    assert api.post_raw(raw).json()["error_code"] == "0000"


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
def test_bad_signatures_are_rejected_0004(api, gw, make_body, sign_type):
    """A wrong key, a tampered value or an unknown sign_type gets 0004 and creates nothing."""
    # wrong key
    assert api.create("bad-1", key="not-the-key", sign_type=sign_type).json() == {
        "error_code": "0004",
        "error_msg": "Signature verification failed!",
    }
    # a value changed after signing
    body = make_body("bad-2", sign_type=sign_type)
    body["amount"] = "5000001"
    assert api.post_raw(json.dumps(body)).json()["error_code"] == "0004"
    # HMAC signature announced as MD5 (and vice versa)
    body = make_body("bad-3", sign_type=sign_type)
    body["sign_type"] = MD5 if sign_type == HMAC_SHA256 else HMAC_SHA256
    assert api.post_raw(json.dumps(body)).json()["error_code"] == "0004"
    body = make_body("bad-4", sign_type=sign_type)
    body["sign_type"] = "SHA1"
    assert api.post_raw(json.dumps(body)).json()["error_code"] == "0004"
    assert gw.admin.ledger()["orders"] == []


@pytest.fixture(scope="module")
def spec_sandbox() -> Iterator[SandboxProcess]:
    with start_sandbox(platform_key=SPEC_KEY, sign_types=[MD5]) as process:
        yield process


def test_spec_4_4_example_signature_is_accepted(spec_sandbox, api_for):
    """The published MD5 example (docs/gateway.md §4.4) passes the signature check.

    The Chinese-edition example lacks currency and bank_name, so the answer is the
    next check's 0002 naming currency, not 0004; a one-character change gives 0004.
    """
    api = api_for(spec_sandbox.url)
    # when
    answer = api.post_raw(json.dumps(SPEC_EXAMPLE, ensure_ascii=False).encode()).json()
    # then
    assert answer == {"error_code": "0002", "error_msg": "Missing parameter: currency"}
    tampered = {**SPEC_EXAMPLE, "sign": "ac29e8a132edf819431227154c2586c6"}
    assert api.post_raw(json.dumps(tampered)).json()["error_code"] == "0004"


@pytest.fixture(scope="module")
def hmac_only() -> Iterator[SandboxProcess]:
    with start_sandbox(sign_types=[HMAC_SHA256]) as process:
        yield process


def test_md5_is_refused_when_only_hmac_is_allowed(hmac_only, api_for):
    """With sign_types=[HMAC-SHA256], a correct MD5 signature (explicit or implied) is 0004."""
    api = api_for(hmac_only.url)
    assert api.create("m-1", sign_type=MD5).json()["error_code"] == "0004"
    assert api.create("m-2", sign_type=None).json()["error_code"] == "0004"
    assert api.create("m-3", sign_type=HMAC_SHA256).json()["error_code"] == "0000"
    assert [o["payout_cl_id"] for o in hmac_only.admin.ledger()["orders"]] == ["m-3"]


@pytest.mark.parametrize(
    ("overrides", "code", "msg_part"),
    [
        ({"payout_cl_id": None}, "0002", "payout_cl_id"),
        ({"amount": None}, "0002", "amount"),
        ({"currency": None}, "0002", "currency"),
        ({"bank_name": None}, "0002", "bank_name"),
        ({"name": None}, "0002", "name"),
        ({"number": None}, "0002", "number"),
        ({"request_time": None}, "0002", "request_time"),
        ({"service_id": None}, "0002", "service_id"),
        ({"number": ""}, "0002", "number"),
        ({"amount": "5000000.0"}, "0002", "amount"),
        ({"amount": "-5000000"}, "0002", "amount"),
        ({"amount": "12345678901"}, "0029", "maximum"),
        ({"currency": "IDR"}, "0002", "currency"),
        ({"request_time": "yesterday"}, "0002", "request_time"),
        ({"notify_url": "ftp://x"}, "0002", "notify_url"),
        ({"platform_id": "PF9999"}, "0002", "platform_id"),
        ({"service_id": "SVC0001"}, "0009", ""),
        ({"bank_name": "HSBC"}, "0012", "不支援的银行!"),
        ({"amount": "999999"}, "0028", "minimum"),
        ({"amount": "10000000000"}, "0029", "maximum"),
        ({"amount": "1000000"}, "0000", ""),
        ({"amount": "9999999999"}, "0000", ""),
    ],
)
def test_field_validation_codes(api, gw, overrides, code, msg_part):
    """Each documented rule has its documented code and an error_msg; nothing is created."""
    # when
    answer = api.create("v-1", **overrides).json()
    # then
    assert answer["error_code"] == code, answer
    if code == "0000":
        assert "error_msg" not in answer
        return
    assert msg_part in answer["error_msg"]
    assert gw.admin.ledger()["orders"] == []


def test_missing_sign_is_0002(api, make_body):
    """A body without sign names the missing field."""
    body = make_body("s-1")
    del body["sign"]
    assert api.post_raw(json.dumps(body)).json() == {
        "error_code": "0002",
        "error_msg": "Missing parameter: sign",
    }


@pytest.mark.parametrize(
    ("data", "content_type", "code"),
    [
        (b"{not json", "application/json", "0021"),
        (b"[1, 2]", "application/json", "0021"),
        (b"\xff\xfe", "application/json", "0021"),
        (b"platform_id=PF0001", "application/x-www-form-urlencoded", "0022"),
        (b"{}", "text/plain", "0022"),
    ],
)
def test_body_format_errors(api, data, content_type, code):
    """Bad JSON is 0021, another content type is 0022."""
    answer = api.post_raw(data, content_type=content_type).json()
    assert answer["error_code"] == code
    assert answer["error_msg"]


def test_wrong_method_is_0023(api):
    """PUT/DELETE on the payouts path answer 0023."""
    answer = api.http.delete(api.url + "/gateway/api/v2/payouts", timeout=5).json()
    assert answer["error_code"] == "0023"


def test_duplicate_payout_cl_id_is_0014_and_counted(api, gw):
    """A second create with the same payout_cl_id gets 0014; the ledger counts it as 'after'."""
    # given: a rejected attempt, then the creating one
    assert api.create("dup-1", bank_name="HSBC").json()["error_code"] == "0012"
    payout_id = api.create_ok("dup-1")
    # when
    first = api.create("dup-1").json()
    second = api.create("dup-1", amount="7000000").json()
    # then
    assert first == second == {"error_code": "0014", "error_msg": "Duplicate order number"}
    ledger = gw.admin.ledger()
    assert [o["payout_id"] for o in ledger["orders"]] == [payout_id]
    assert ledger["create_requests"]["dup-1"] == {"before": 2, "after": 2, "total": 4}
    assert ledger["totals"]["orders"] == 1
    assert ledger["totals"]["after_created"] == 2
    assert ledger["totals"]["ids_with_duplicates"] == 1


def test_payout_ids_are_sequential(api):
    """payout_id is SBXPOT + an 8-digit sequence."""
    assert [api.create_ok(f"seq-{i}") for i in range(3)] == [
        "SBXPOT00000001",
        "SBXPOT00000002",
        "SBXPOT00000003",
    ]


@pytest.fixture(scope="module")
def small_balance() -> Iterator[SandboxProcess]:
    with start_sandbox(
        balance_minor=12_000_000, fee_minor=500_000, pending_s=0.05, processing_s=0.05, seed=3
    ) as process:
        yield process


def test_insufficient_balance_is_0018_and_failed_orders_release_money(small_balance, api_for):
    """With a balance, a payout that does not fit gets 0018; a failed one gives money back."""
    api = api_for(small_balance.url)
    admin = small_balance.admin
    admin.set_faults([{"kind": "outcome", "status": 4, "match": "^fail-"}])
    # when: 5.5M held, 5.5M held, the third does not fit
    api.create_ok("fail-1", amount="5000000")
    api.create_ok("b-2", amount="5000000")
    third = api.create("b-3", amount="5000000").json()
    # then
    assert third == {"error_code": "0018", "error_msg": "商户余额不足!"}
    balance = api.balance().json()["data"]
    assert balance["platform_id"] == "PF0001"
    assert balance["total_balance"] == 1_000_000
    assert balance["total_frozen_balance"] == 11_000_000
    admin.wait_order_status("fail-1", [4], timeout_s=5)
    admin.wait_order_status("b-2", [3], timeout_s=5)
    balance = api.balance().json()["data"]
    assert balance == {
        "platform_id": "PF0001",
        "total_balance": 6_500_000,
        "total_frozen_balance": 0,
    }
    assert api.create("b-3", amount="5000000").json()["error_code"] == "0000"
