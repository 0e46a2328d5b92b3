"""Modes in which the sandbox disagrees with the worker's guesses (docs/gateway.md §11 UNCONFIRMED).

Each is set at start (``SandboxConfig`` field / CLI flag) or switched at runtime through
``PATCH /_sandbox/settings``; ``reset`` goes back to the start settings. Also: the
``X-Payout-Sandbox`` identity header and the runtime balance / insufficient-balance window.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.sandbox.conftest import FAST
from worker.sandbox.__main__ import build_parser, config_from_args
from worker.sandbox.client import SandboxAdminError
from worker.sandbox.config import SANDBOX_HEADER, SandboxConfig
from worker.sandbox.process import SandboxProcess, start_sandbox
from worker.sandbox.signature import HMAC_SHA256, MD5, sign, verify

KEY = "sandbox-secret-key"
#: The record fields of docs/gateway.md §2a, exactly.
SPEC_RECORD_FIELDS = {
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
DEFAULT_SETTINGS = {
    "duplicate_check": True,
    "record_signature": "order",
    "list_filter": "honour",
    "list_order": "oldest_first",
    "callbacks": True,
    "callback_framing": "content-length",
    "callback_statuses": [3, 4, 5],
    "callback_signature": "order",
    "sign_zero_values": True,
}


def _records(response: requests.Response) -> list[dict[str, str]]:
    """List records with every value as its sent text (docs/gateway.md §4.4)."""
    return json.loads(response.text, parse_int=str, parse_float=str)["data"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def disagreeing() -> Iterator[SandboxProcess]:
    """A sandbox started with every disagreeing mode that does not silence callbacks."""
    with start_sandbox(
        **FAST,
        duplicate_check=False,
        record_signature="spec",
        list_filter="ignore",
        list_order="newest_first",
        callback_framing="chunked",
        callback_statuses=[3],
        callback_signature="spec",
    ) as process:
        yield process


@pytest.fixture
def other(disagreeing: SandboxProcess) -> SandboxProcess:
    disagreeing.admin.reset()
    return disagreeing


# ------------------------------------------------------------------ settings admin


def test_defaults_are_todays_behaviour(gw):
    """Without settings, every mode is the one the worker was written against."""
    settings = gw.admin.settings()
    assert {k: settings[k] for k in DEFAULT_SETTINGS} == DEFAULT_SETTINGS
    assert SandboxConfig(**FAST).runtime_settings() == settings


def test_start_settings_show_in_settings_and_config(other):
    """Modes given at start are the running settings; reset keeps them (they are the start)."""
    settings = other.admin.settings()
    assert settings["duplicate_check"] is False
    assert settings["record_signature"] == "spec"
    assert settings["list_filter"] == "ignore"
    assert settings["callback_framing"] == "chunked"
    other.admin.set_duplicate_check(True)
    other.admin.reset()
    assert other.admin.settings()["duplicate_check"] is False


def test_runtime_change_then_reset_goes_back_to_start(gw):
    """PATCH changes a setting at once; reset restores the start value, keep_settings not."""
    # when
    changed = gw.admin.update_settings(duplicate_check=False, list_filter="prefix")
    # then
    assert changed["duplicate_check"] is False
    assert changed["list_filter"] == "prefix"
    assert gw.admin.config()["list_filter"] == "prefix"
    gw.admin.reset(keep_settings=True)
    assert gw.admin.settings()["list_filter"] == "prefix"
    gw.admin.reset()
    assert gw.admin.settings()["list_filter"] == "honour"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"duplicate_check": "no"}, "duplicate_check must be true or false"),
        ({"record_signature": "none"}, "record_signature must be one of"),
        ({"list_filter": "fuzzy"}, "list_filter must be one of"),
        ({"callback_framing": "gzip"}, "callback_framing must be one of"),
        ({"callbacks": 1}, "callbacks must be true or false"),
        ({"port": 1}, "not a runtime setting"),
        ({"platform_key": "x"}, "not a runtime setting"),
        ({"colour": "red"}, "not a runtime setting"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(gw, changes, message):
    """A bad or read-only setting is a 400 naming it; no setting changes (all or nothing)."""
    with pytest.raises(SandboxAdminError, match=message):
        gw.admin.update_settings(**{"list_order": "newest_first", **changes})
    assert gw.admin.settings() == {**gw.admin.settings(), **DEFAULT_SETTINGS}


def test_cli_flags_set_every_mode():
    """Each mode has a flag: --duplicate-check, --record-signature, --list-filter,
    --list-order, --callbacks, --callback-framing, --tls-port, --tls-dir."""
    args = build_parser().parse_args(
        [
            "--duplicate-check",
            "off",
            "--record-signature",
            "spec",
            "--list-filter",
            "ignore_all",
            "--list-order",
            "newest_first",
            "--callbacks",
            "off",
            "--callback-framing",
            "chunked",
            "--tls-port",
            "0",
            "--tls-dir",
            "/tmp/x",
            "--callback-statuses",
            "3",
            "--sign-zero-values",
            "off",
            "--callback-signature",
            "spec_md5",
        ]
    )
    config = config_from_args(args)
    assert config.duplicate_check is False
    assert config.record_signature == "spec"
    assert config.list_filter == "ignore_all"
    assert config.list_order == "newest_first"
    assert config.callbacks is False
    assert config.callback_framing == "chunked"
    assert (config.tls_port, config.tls_dir) == (0, "/tmp/x")
    assert config.callback_statuses == (3,)
    assert config.sign_zero_values is False
    assert config.callback_signature == "spec_md5"
    assert config_from_args(build_parser().parse_args([])).duplicate_check is True


# ------------------------------------------------------------------ duplicate check off


def test_duplicate_check_off_creates_a_second_payout(api, gw, receiver, poll):
    """Off: a second create with a used payout_cl_id gets 0000 and a new payout_id; the
    ledger counts two payouts and two create requests for the id; both are notified."""
    # given
    gw.admin.set_duplicate_check(False)
    # when
    first = api.create_ok("dup-1", notify_url=receiver.url)
    second = api.create_ok("dup-1", notify_url=receiver.url, amount="7000000")
    # then
    assert first != second
    counts = gw.admin.id_counts("dup-1")
    assert counts == {
        "payout_cl_id": "dup-1",
        "payouts_created": 2,
        "payout_ids": [first, second],
        "create_requests": {"before": 1, "after": 1, "total": 2},
    }
    assert gw.admin.payouts_created("dup-1") == 2
    assert gw.admin.create_requests("dup-1") == 2
    ledger = gw.admin.ledger()
    assert [(o["payout_cl_id"], o["payout_id"], o["nth"]) for o in ledger["orders"]] == [
        ("dup-1", first, 1),
        ("dup-1", second, 2),
    ]
    assert ledger["payouts_per_id"] == {"dup-1": 2}
    assert ledger["totals"]["ids_created_twice"] == 1
    assert ledger["totals"]["extra_payouts"] == 1
    # both payouts live their own life, are queryable and notified
    poll(lambda: len(receiver.bodies("dup-1")) == 2, 5, "two notifications")
    assert {b["payout_id"] for b in receiver.bodies("dup-1")} == {first, second}
    listed = api.list(payout_cl_id="dup-1").json()
    assert listed["total"] == 2
    assert [r["payout_id"] for r in listed["data"]] == [first, second]
    assert api.single("dup-1").json()["data"]["payout_id"] == first


def test_duplicate_check_back_on_answers_0014_again(api, gw):
    """Switching the check on again: the next repeat is 0014; the counts keep the history."""
    gw.admin.set_duplicate_check(False)
    api.create_ok("dup-2")
    api.create_ok("dup-2")
    # when
    gw.admin.set_duplicate_check(True)
    answer = api.create("dup-2").json()
    # then
    assert answer["error_code"] == "0014"
    assert gw.admin.id_counts("dup-2")["payouts_created"] == 2
    assert gw.admin.create_requests("dup-2") == 3


def test_duplicates_each_freeze_money(api, gw):
    """Each duplicate payout holds its own money: the balance falls twice."""
    gw.admin.set_balance(20_000_000)
    gw.admin.set_duplicate_check(False)
    gw.admin.set_faults([{"kind": "outcome", "status": 2}])  # keep both open
    api.create_ok("dup-m")
    api.create_ok("dup-m")
    data = api.balance().json()["data"]
    assert (data["total_balance"], data["total_frozen_balance"]) == (10_000_000, 10_000_000)


def test_force_status_reaches_every_duplicate_or_the_one_named(api, gw):
    """force_status without payout_id changes every payout of the id; with it, only that one."""
    gw.admin.set_duplicate_check(False)
    gw.admin.set_faults([{"kind": "outcome", "status": 2}])
    first = api.create_ok("dup-f")
    second = api.create_ok("dup-f")
    # when
    gw.admin.force_status("dup-f", 4, payout_id=second)
    # then
    statuses = {o["payout_id"]: o["status"] for o in gw.admin.ledger()["orders"]}
    assert statuses[second] == 4
    assert statuses[first] in (1, 2)
    gw.admin.force_status("dup-f", 5)
    assert {o["status"] for o in gw.admin.ledger()["orders"]} == {5}


def test_unknown_id_counts_are_zero(gw):
    """Asking about an id never seen is not an error: zero payouts, zero requests."""
    assert gw.admin.id_counts("never-seen") == {
        "payout_cl_id": "never-seen",
        "payouts_created": 0,
        "payout_ids": [],
        "create_requests": {"before": 0, "after": 0, "total": 0},
    }


def test_duplicate_check_off_at_start(other, api_for):
    """Started with duplicate_check=false, the sandbox creates again from the first request."""
    api = api_for(other.url)
    api.create_ok("s-dup")
    api.create_ok("s-dup")
    assert other.admin.payouts_created("s-dup") == 2


# ------------------------------------------------------------------ record signatures


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
def test_spec_records_have_no_sign_type_and_sign_over_every_other_field(api, gw, sign_type):
    """record_signature=spec: exactly the docs/gateway.md §2a fields; sign in the order's algorithm over
    every other field as sent. A verifier that reads a missing sign_type as MD5 fails on
    HMAC orders (and only on them)."""
    # given
    gw.admin.set_record_signature("spec")
    gw.admin.add_fault({"kind": "outcome", "status": 5})  # memo not empty
    api.create_ok("rec-1", sign_type=sign_type)
    gw.admin.wait_order_status("rec-1", [5])
    # when
    [record] = _records(api.list(payout_cl_id="rec-1"))
    # then
    assert set(record) == SPEC_RECORD_FIELDS
    fields = {k: v for k, v in record.items() if k != "sign"}
    assert record["sign"] == sign(fields, KEY, sign_type)
    assert len(record["sign"]) == (64 if sign_type == HMAC_SHA256 else 32)
    assert verify(record, KEY) is (sign_type == MD5)
    assert not verify({**record, "status": "3"}, KEY, expected_type=MD5)


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
def test_spec_md5_records_are_always_md5(api, gw, sign_type):
    """record_signature=spec_md5: no sign_type, the sign is MD5 whatever the order's algorithm."""
    gw.admin.set_record_signature("spec_md5")
    api.create_ok("rec-2", sign_type=sign_type)
    [record] = _records(api.list(payout_cl_id="rec-2"))
    assert "sign_type" not in record
    assert verify(record, KEY, expected_type=MD5)


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
def test_unverifiable_records_verify_under_no_algorithm(api, gw, sign_type):
    """record_signature=unverifiable: hex of the algorithm's length, reproducible by no key."""
    gw.admin.set_record_signature("unverifiable")
    api.create_ok("rec-3", sign_type=sign_type)
    [record] = _records(api.list(payout_cl_id="rec-3"))
    assert "sign_type" not in record
    assert len(record["sign"]) == (64 if sign_type == HMAC_SHA256 else 32)
    for algorithm in (MD5, HMAC_SHA256):
        assert not verify({**record, "sign_type": algorithm}, KEY)


def test_default_records_keep_sign_type_on_hmac_orders(api, gw):
    """record_signature=order (default): HMAC records carry sign_type; switching back works."""
    gw.admin.set_record_signature("spec")
    gw.admin.set_record_signature("order")
    api.create_ok("rec-4", sign_type=HMAC_SHA256)
    [record] = _records(api.list(payout_cl_id="rec-4"))
    assert record["sign_type"] == HMAC_SHA256
    assert verify(record, KEY, expected_type=HMAC_SHA256)


def test_spec_records_at_start(other, api_for):
    """Started with record_signature=spec, HMAC records come without sign_type."""
    api = api_for(other.url)
    api.create_ok("s-rec", sign_type=HMAC_SHA256)
    [record] = [r for r in _records(api.list()) if r["payout_cl_id"] == "s-rec"]
    assert set(record) == SPEC_RECORD_FIELDS
    assert verify({**record, "sign_type": HMAC_SHA256}, KEY)


# ------------------------------------------------------------------ list filter


def _ids(response: requests.Response) -> list[str]:
    return [r["payout_cl_id"] for r in response.json()["data"]]


def test_list_filter_ignore_returns_other_orders(api, gw):
    """list_filter=ignore: payout_cl_id is ignored, so a lookup of one id (even an unknown
    one) answers other orders' records; limit, offset and the other filters still apply."""
    # given
    payout_ids = {cl_id: api.create_ok(cl_id) for cl_id in ("lf-a", "lf-b", "lf-c")}
    gw.admin.set_list_filter("ignore")
    # when / then
    assert _ids(api.list(payout_cl_id="lf-b")) == ["lf-a", "lf-b", "lf-c"]
    assert api.list(payout_cl_id="lf-b").json()["total"] == 3
    assert _ids(api.list(payout_cl_id="lf-b", limit=1)) == ["lf-a"]
    assert _ids(api.list(payout_cl_id="nope", offset=2)) == ["lf-c"]
    assert _ids(api.list(payout_cl_id="lf-a", payout_id=payout_ids["lf-c"])) == ["lf-c"]
    assert api.list(payout_cl_id="lf-a", create_time__lte=1).json()["total"] == 0


def test_list_order_newest_first(api, gw):
    """list_order=newest_first with the filter ignored: limit=1 answers the newest order."""
    for cl_id in ("no-a", "no-b", "no-c"):
        api.create_ok(cl_id)
    gw.admin.set_list_filter("ignore", order="newest_first")
    assert _ids(api.list(payout_cl_id="no-a", limit=1)) == ["no-c"]
    assert _ids(api.list()) == ["no-c", "no-b", "no-a"]


def test_list_filter_ignore_all(api, gw):
    """list_filter=ignore_all: payout_cl_id, payout_id and the time range are all ignored."""
    payout_ids = [api.create_ok(cl_id) for cl_id in ("ia-a", "ia-b")]
    gw.admin.set_list_filter("ignore_all")
    answer = api.list(payout_id=payout_ids[1], create_time__lte=1, payout_cl_id="x").json()
    assert answer["total"] == 2
    assert _ids(api.list(payout_id=payout_ids[1], limit=1)) == ["ia-a"]


@pytest.mark.parametrize(
    ("mode", "query", "expected"),
    [
        ("prefix", "px-1", ["px-1", "px-10"]),
        ("contains", "-1", ["px-1", "px-10", "qx-1"]),
        ("honour", "px-1", ["px-1"]),
    ],
)
def test_list_filter_loose_matches(api, gw, mode, query, expected):
    """list_filter=prefix / contains: a lookup of px-1 also answers px-10 (and more)."""
    for cl_id in ("px-1", "px-10", "px-2", "qx-1"):
        api.create_ok(cl_id)
    gw.admin.set_list_filter(mode)
    assert _ids(api.list(payout_cl_id=query)) == expected


def test_list_filter_ignore_at_start(other, api_for):
    """Started with list_filter=ignore and newest_first, a lookup answers the newest order."""
    api = api_for(other.url)
    api.create_ok("s-a")
    api.create_ok("s-b")
    assert _ids(api.list(payout_cl_id="s-a", limit=1)) == ["s-b"]


# ------------------------------------------------------------------ callbacks


def test_chunked_callbacks_have_no_content_length(api, gw, receiver, poll):
    """callback_framing=chunked: Transfer-Encoding chunked, no Content-Length, three chunks
    (a multi-byte character may straddle two); the reassembled body verifies."""
    # given
    gw.admin.set_callback_framing("chunked")
    gw.admin.set_faults([{"kind": "outcome", "status": 2}])
    api.create_ok("ch-1", notify_url=receiver.url, sign_type=HMAC_SHA256)
    # when
    gw.admin.force_status("ch-1", 4, error_msg="账户已关闭: account closed")
    # then
    [body] = receiver.wait_count(1)
    received = receiver.received[0]
    headers = {k.lower(): v for k, v in received["headers"].items()}
    assert headers["transfer-encoding"].lower() == "chunked"
    assert "content-length" not in headers
    assert headers[SANDBOX_HEADER.lower()] == "1"
    assert len(received["chunk_sizes"]) == 3
    assert body["error_msg"] == "账户已关闭: account closed"
    assert verify(body, KEY, expected_type=HMAC_SHA256)
    poll(lambda: gw.admin.order("ch-1")["callback_acked"], 5, "acknowledged")


def test_default_callbacks_have_content_length(api, gw, receiver):
    """Default framing: Content-Length, no Transfer-Encoding; the identity header is sent."""
    api.create_ok("cl-1", notify_url=receiver.url)
    receiver.wait_count(1)
    headers = {k.lower(): v for k, v in receiver.received[0]["headers"].items()}
    assert int(headers["content-length"]) == len(receiver.received[0]["raw"].encode())
    assert "transfer-encoding" not in headers
    assert headers[SANDBOX_HEADER.lower()] == "1"


def test_chunked_callbacks_at_start(other, api_for, receiver):
    """Started with callback_framing=chunked (and callback_signature=spec: an HMAC order's
    notification has no sign_type)."""
    api = api_for(other.url)
    api.create_ok("s-ch", notify_url=receiver.url, sign_type=HMAC_SHA256)
    [body] = receiver.wait_count(1)
    assert receiver.received[0]["headers"].get("Transfer-Encoding", "").lower() == "chunked"
    assert "sign_type" not in body
    assert verify({**body, "sign_type": HMAC_SHA256}, KEY)


@pytest.mark.parametrize(
    ("mode", "sign_type", "verifies_as"),
    [
        ("spec", HMAC_SHA256, HMAC_SHA256),
        ("spec", MD5, MD5),
        ("spec_md5", HMAC_SHA256, MD5),
        ("order", HMAC_SHA256, HMAC_SHA256),
    ],
)
def test_callback_signature_modes(api, gw, receiver, mode, sign_type, verifies_as):
    """callback_signature=spec: D-NTF's fields, no sign_type, the order's algorithm;
    spec_md5: no sign_type, always MD5; order (default): sign_type on HMAC orders."""
    gw.admin.set_callback_signature(mode)
    api.create_ok("cs-1", notify_url=receiver.url, sign_type=sign_type)
    [body] = receiver.wait_count(1)
    assert ("sign_type" in body) == (mode == "order" and sign_type == HMAC_SHA256)
    assert verify({**body, "sign_type": verifies_as}, KEY)
    assert verify(body, KEY) is (verifies_as == MD5 or "sign_type" in body)


def test_callbacks_off_sends_nothing_even_when_turned_on_again(api, gw, receiver, poll):
    """callbacks=false: no notification; an order that finished meanwhile is never notified,
    orders finishing after callbacks are on again are."""
    # given
    gw.admin.set_callbacks(False)
    api.create_ok("off-1", notify_url=receiver.url)
    gw.admin.wait_order_status("off-1", [3])
    poll(lambda: gw.admin.stats()["background_tasks"] == 0, 5, "tasks done")
    # when
    gw.admin.set_callbacks(True)
    api.create_ok("on-1", notify_url=receiver.url)
    # then
    receiver.wait_count(1, "on-1")
    poll(lambda: gw.admin.stats()["background_tasks"] == 0, 5, "tasks done")
    assert receiver.bodies("off-1") == []
    assert gw.admin.stats()["callbacks"]["suppressed"] == 1
    assert gw.admin.order("off-1")["callback_attempts"] == []


def test_callbacks_off_stops_pending_retries(api, gw, receiver, poll):
    """Turning callbacks off while a notification is being retried stops its retries."""
    # given: every attempt refused
    receiver.refuse_first = 1000
    api.create_ok("off-2", notify_url=receiver.url)
    receiver.wait_count(1, "off-2")
    # when
    gw.admin.set_callbacks(False)
    # then
    poll(lambda: gw.admin.stats()["background_tasks"] == 0, 5, "retries stopped")
    callbacks = gw.admin.stats()["callbacks"]
    assert callbacks["suppressed"] == 1
    assert callbacks["gave_up"] == 0
    assert len(receiver.bodies("off-2")) < 1 + len(FAST["callback_delays_s"])


@pytest.fixture(scope="module")
def silent() -> Iterator[SandboxProcess]:
    with start_sandbox(**FAST, callbacks=False, sign_zero_values=False) as process:
        yield process


def test_callbacks_off_at_start(silent, api_for, receiver, poll):
    """Started with callbacks=false: orders finish, nothing is posted."""
    api = api_for(silent.url)
    api.create_ok("s-off", notify_url=receiver.url)
    silent.admin.wait_order_status("s-off", [3])
    poll(lambda: silent.admin.stats()["background_tasks"] == 0, 5, "tasks done")
    assert receiver.received == []
    assert silent.admin.settings()["callbacks"] is False


# ------------------------------------------------------------------ identity header


@pytest.mark.parametrize(
    "call",
    [
        "create_ok",
        "create_error",
        "list",
        "single_missing",
        "balance_no_auth",
        "unknown_path",
        "wrong_method",
        "admin_health",
        "admin_bad_request",
        "fault_5xx",
        "fault_empty",
        "fault_garbled",
        "rate_limited",
    ],
)
def test_every_answer_carries_the_sandbox_header(api, gw, call):
    """X-Payout-Sandbox: 1 on every answer: success, gateway errors, 404, admin, faults."""
    admin = gw.url + "/_sandbox/"
    rules = {
        "fault_5xx": {"kind": "create_lost", "mode": "5xx"},
        "fault_empty": {"kind": "create_lost", "mode": "empty"},
        "fault_garbled": {"kind": "create_lost", "mode": "garbled"},
        "rate_limited": {"kind": "rate_limit", "rps": 0.001, "burst": 1},
    }
    if call in rules:
        gw.admin.set_faults([rules[call]])
    response = {
        "create_ok": lambda: api.create("h-1"),
        "create_error": lambda: api.create("h-1", bank_name="HSBC"),
        "list": lambda: api.list(),
        "single_missing": lambda: api.single("nope"),
        "balance_no_auth": lambda: api.balance(token=None),
        "unknown_path": lambda: api.http.get(gw.url + "/nothing/here", timeout=5),
        "wrong_method": lambda: api.http.delete(gw.url + "/gateway/api/v2/payouts", timeout=5),
        "admin_health": lambda: api.http.get(admin + "health", timeout=5),
        "admin_bad_request": lambda: api.http.patch(admin + "settings", data="[", timeout=5),
        "fault_5xx": lambda: api.create("h-1"),
        "fault_empty": lambda: api.create("h-1"),
        "fault_garbled": lambda: api.create("h-1"),
        "rate_limited": lambda: [api.create("h-1"), api.create("h-2")][-1],
    }[call]()
    if call == "rate_limited":
        assert response.status_code == 429
    assert response.headers[SANDBOX_HEADER] == "1"


# ------------------------------------------------------------------ balance


def test_balance_set_at_runtime_is_what_the_balance_endpoint_answers(api, gw):
    """PUT /_sandbox/balance sets total_balance; creates freeze money; 0018 when it does not
    fit; null is unlimited again."""
    # when
    view = gw.admin.set_balance(12_000_000)
    # then
    assert view["total_balance"] == 12_000_000
    assert view["unlimited"] is False
    assert api.balance().json()["data"] == {
        "platform_id": "PF0001",
        "total_balance": 12_000_000,
        "total_frozen_balance": 0,
    }
    gw.admin.set_faults([{"kind": "outcome", "status": 2}])
    api.create_ok("bal-1", amount="5000000")
    data = api.balance().json()["data"]
    assert (data["total_balance"], data["total_frozen_balance"]) == (7_000_000, 5_000_000)
    assert api.create("bal-2", amount="8000000").json() == {
        "error_code": "0018",
        "error_msg": "商户余额不足!",
    }
    assert gw.admin.set_balance(None)["unlimited"] is True
    assert api.create("bal-2", amount="8000000").json()["error_code"] == "0000"


def test_insufficient_window_until_cleared(api, gw):
    """POST /_sandbox/balance/insufficient: every create is 0018 (nothing created, the request
    still counted) until DELETE ends the window."""
    # given
    view = gw.admin.insufficient_balance()
    assert view["insufficient"] is True
    assert view["insufficient_until"] is None
    # when
    answers = [api.create("win-1").json()["error_code"] for _ in range(3)]
    # then
    assert answers == ["0018"] * 3
    assert gw.admin.id_counts("win-1")["payouts_created"] == 0
    assert gw.admin.create_requests("win-1") == 3
    assert gw.admin.clear_insufficient_balance()["insufficient"] is False
    assert api.create("win-1").json()["error_code"] == "0000"


def test_insufficient_window_for_some_seconds(api, gw, poll):
    """With seconds, the window ends by itself."""
    view = gw.admin.insufficient_balance(0.4)
    assert 0 < view["insufficient_remaining_s"] <= 0.4
    assert api.create("win-2").json()["error_code"] == "0018"
    poll(lambda: api.create("win-2").json()["error_code"] == "0000", 5, "window over")
    assert gw.admin.balance()["insufficient"] is False


def test_reset_restores_the_start_balance(gw):
    """reset forgets a runtime balance and window (back to the start: unlimited here)."""
    gw.admin.set_balance(5)
    gw.admin.insufficient_balance()
    gw.admin.reset()
    view = gw.admin.balance()
    assert view["unlimited"] is True
    assert view["insufficient"] is False


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("balance", {"balance_minor": -1}),
        ("balance", {"balance_minor": "100"}),
        ("balance", {"balance": 100}),
        ("balance/insufficient", {"seconds": -1}),
        ("balance/insufficient", {"seconds": "5"}),
    ],
)
def test_bad_balance_requests_are_400(gw, path, body):
    """Malformed balance admin requests are answered 400."""
    method = "PUT" if path == "balance" else "POST"
    with pytest.raises(SandboxAdminError, match="400"):
        gw.admin._call(method, path, body)


# ------------------------------------------------------------------ success-only callbacks


def test_callback_statuses_success_only(api, gw, receiver, poll):
    """callback_statuses=[3]: failed orders are never notified (docs/gateway.md §5: do not rely on
    failure callbacks); successful ones are."""
    # given
    gw.admin.update_settings(callback_statuses=[3])
    gw.admin.set_faults([{"kind": "outcome", "status": 4, "match": "^fail-"}])
    # when
    api.create_ok("fail-1", notify_url=receiver.url)
    api.create_ok("ok-1", notify_url=receiver.url)
    # then
    receiver.wait_count(1, "ok-1")
    gw.admin.wait_order_status("fail-1", [4])
    poll(lambda: gw.admin.stats()["background_tasks"] == 0, 5, "tasks done")
    assert receiver.bodies("fail-1") == []
    assert gw.admin.stats()["callbacks"]["suppressed"] == 1


def test_callback_statuses_at_start(other, api_for, receiver, poll):
    """Started with callback_statuses=[3]: a forced failure sends nothing."""
    api = api_for(other.url)
    other.admin.set_faults([{"kind": "outcome", "status": 2}])
    api.create_ok("s-f", notify_url=receiver.url)
    other.admin.wait_order_status("s-f", [2])
    other.admin.force_status("s-f", 5)
    poll(lambda: other.admin.stats()["background_tasks"] == 0, 5, "tasks done")
    assert receiver.received == []


# ------------------------------------------------------------------ zero values in signatures


def test_sign_zero_values_off_leaves_zero_out_of_callback_signatures(api, gw, receiver):
    """sign_zero_values=false: a callback with fee=0 is signed without fee (PHP empty()), so
    it fails the recommended verification (docs/gateway.md §4.1) that keeps 0."""
    # given
    gw.admin.update_settings(sign_zero_values=False)
    # when
    api.create_ok("z-1", notify_url=receiver.url, sign_type=HMAC_SHA256)
    [body] = receiver.wait_count(1)
    # then
    assert body["fee"] == "0"
    assert not verify(body, KEY)
    assert verify(body, KEY, drop_zero=True)
    [record] = _records(api.list(payout_cl_id="z-1"))
    assert not verify(record, KEY)
    assert verify(record, KEY, drop_zero=True)


def test_sign_zero_values_off_checks_creates_the_same_way(api, gw, make_body):
    """The create check drops 0 too: a zero field signed the documented way is 0004."""
    gw.admin.update_settings(sign_zero_values=False)
    kept = make_body("z-2", extra="0")
    assert api.post_raw(json.dumps(kept)).json()["error_code"] == "0004"
    dropped = {k: v for k, v in kept.items() if k != "sign"}
    dropped["sign"] = sign(dropped, KEY, MD5, drop_zero=True)
    assert api.post_raw(json.dumps(dropped)).json()["error_code"] == "0000"


def test_sign_zero_values_off_at_start(silent, api_for):
    """Started with sign_zero_values=false: records with fee=0 are signed without it."""
    api = api_for(silent.url)
    api.create_ok("s-z")
    [record] = _records(api.list(payout_cl_id="s-z"))
    assert record["fee"] == "0"
    assert verify(record, KEY, drop_zero=True)
    assert not verify(record, KEY)
