"""Order query (docs/gateway.md §2a list form, §2b single form, §3 auth) and the balance endpoint."""

from __future__ import annotations

import json
import time

import pytest

from worker.sandbox.signature import HMAC_SHA256, MD5, verify

KEY = "sandbox-secret-key"


@pytest.mark.parametrize("endpoint", ["list", "single", "balance"])
def test_authorization_errors(api, endpoint):
    """No Authorization header is 0005; a wrong token is 0006 'Invalid Authorization!'."""
    call = {
        "list": lambda token: api.list(token=token),
        "single": lambda token: api.single("x-1", token=token),
        "balance": lambda token: api.balance(token=token),
    }[endpoint]
    assert call(None).json()["error_code"] == "0005"
    assert call("Bearer sandbox-token").json() == {
        "error_code": "0006",
        "error_msg": "Invalid Authorization!",
    }


def test_list_filters_and_paging(api, gw):
    """Filters payout_cl_id / payout_id / create_time range; offset+limit page; total counts all."""
    # given
    ids = [f"q-{i}" for i in range(7)]
    payout_ids = {cl_id: api.create_ok(cl_id) for cl_id in ids}
    # when / then: default page holds all, in creation order
    answer = api.list().json()
    assert answer["error_code"] == "0000"
    assert answer["total"] == 7
    assert [r["payout_cl_id"] for r in answer["data"]] == ids
    # by payout_cl_id and payout_id
    one = api.list(payout_cl_id="q-3").json()
    assert one["total"] == 1
    assert one["data"][0]["payout_id"] == payout_ids["q-3"]
    assert api.list(payout_id=payout_ids["q-5"]).json()["data"][0]["payout_cl_id"] == "q-5"
    assert api.list(payout_cl_id="q-3", payout_id=payout_ids["q-5"]).json()["total"] == 0
    assert api.list(payout_cl_id="nope").json() == {"error_code": "0000", "data": [], "total": 0}
    # paging
    page = api.list(offset=2, limit=3).json()
    assert page["total"] == 7
    assert [r["payout_cl_id"] for r in page["data"]] == ids[2:5]
    assert api.list(offset=6, limit=3).json()["data"][0]["payout_cl_id"] == "q-6"
    assert api.list(offset=7).json()["data"] == []
    # time range
    created = {o["payout_cl_id"]: o["create_time"] for o in gw.admin.ledger()["orders"]}
    first = min(created.values())
    assert api.list(create_time__gte=first).json()["total"] == 7
    assert api.list(create_time__lte=first - 1).json()["total"] == 0
    assert api.list(create_time__gte=int(time.time()) + 10).json()["total"] == 0
    assert api.list(create_time__gte=first, create_time__lte=first + 100).json()["total"] == 7


@pytest.mark.parametrize(
    "params",
    [{"limit": 501}, {"limit": 0}, {"limit": "ten"}, {"offset": -1}, {"create_time__gte": "x"}],
)
def test_list_bad_parameters_are_0002(api, params):
    """limit above 500 (or otherwise malformed numbers) is 0002."""
    answer = api.list(**params).json()
    assert answer["error_code"] == "0002"
    assert answer["error_msg"]


def test_list_limit_500_is_allowed(api):
    """The list query accepts its documented maximum limit of 500."""
    assert api.list(limit=500).json()["error_code"] == "0000"


def test_list_defaults_to_25(api):
    """Without limit, a page holds 25 records."""
    for i in range(27):
        api.create_ok(f"d-{i:02d}")
    answer = api.list().json()
    assert answer["total"] == 27
    assert len(answer["data"]) == 25


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
def test_list_records_are_signed_with_the_orders_algorithm(api, gw, sign_type):
    """Each record's sign verifies over all its other fields; sign_type only for HMAC orders."""
    # given: a failed order, so memo is not empty
    gw.admin.add_fault({"kind": "outcome", "status": 5, "match": "^r-"})
    api.create_ok("r-1", sign_type=sign_type)
    gw.admin.wait_order_status("r-1", [5])
    # when
    response = api.list(payout_cl_id="r-1")
    record = json.loads(response.text, parse_int=str, parse_float=str)["data"][0]
    # then
    assert set(record) >= {
        "amount",
        "real_amount",
        "fee",
        "payout_id",
        "payout_cl_id",
        "platform_id",
        "platform_channel_id",
        "status",
        "memo",
        "create_time",
        "update_time",
        "sign",
    }
    assert record["status"] == "5"
    assert record["memo"]
    assert ("sign_type" in record) == (sign_type == HMAC_SHA256)
    assert verify(record, KEY, expected_type=sign_type)
    assert not verify({**record, "status": "3"}, KEY)
    assert not verify(record, "other-key")


def test_single_form(api, gw):
    """GET /payouts/{payout_cl_id}: the data object, success_time once paid; 0050 when unknown."""
    payout_id = api.create_ok("s-1")
    first = api.single("s-1").json()
    assert first["error_code"] == "0000"
    assert first["data"]["payout_id"] == payout_id
    assert first["data"]["status"] in (1, 2, 3)
    gw.admin.wait_order_status("s-1", [3])
    data = api.single("s-1").json()["data"]
    assert set(data) == {
        "payout_id",
        "payout_cl_id",
        "amount",
        "fee",
        "status",
        "error_msg",
        "create_time",
        "success_time",
    }
    assert data["status"] == 3
    assert data["amount"] == 5000000
    assert data["success_time"] >= data["create_time"]
    assert api.single("missing-1").json() == {"error_code": "0050", "error_msg": "查无订单!"}


def test_balance(api):
    """The balance answers platform_id, total_balance, total_frozen_balance."""
    data = api.balance().json()["data"]
    assert set(data) == {"platform_id", "total_balance", "total_frozen_balance"}
    assert data["platform_id"] == "PF0001"
