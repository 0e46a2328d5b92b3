"""Order lifecycle (docs/gateway.md §6) and signed, retried callbacks (docs/gateway.md §5)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.sandbox.process import SandboxProcess, start_sandbox
from worker.sandbox.signature import HMAC_SHA256, MD5, verify

KEY = "sandbox-secret-key"
NOTIFICATION_FIELDS = {
    "payout_id",
    "payout_cl_id",
    "platform_id",
    "amount",
    "real_amount",
    "fee",
    "status",
    "create_time",
    "update_time",
    "sign",
}


@pytest.fixture(scope="module")
def slow_lifecycle() -> Iterator[SandboxProcess]:
    with start_sandbox(pending_s=0.4, processing_s=0.4, failure_ratio=0.0) as process:
        yield process


def test_order_goes_pending_processing_final(slow_lifecycle, api_for, poll):
    """A new order is 1, becomes 2 after pending_s, and 3 after processing_s."""
    api = api_for(slow_lifecycle.url)
    api.create_ok("l-1")
    seen: list[int] = []

    def final() -> bool:
        status = api.single("l-1").json()["data"]["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == 3

    poll(final, 5, "l-1 final")
    assert seen == [1, 2, 3]
    order = slow_lifecycle.admin.order("l-1")
    assert order["update_time_s"] - order["create_time_s"] >= 0.8


@pytest.mark.parametrize("status", [3, 4, 5])
def test_outcome_rule_drives_the_final_status(api, gw, status):
    """An outcome rule picks the final status; failures carry an error_msg."""
    gw.admin.set_faults([{"kind": "outcome", "status": status, "match": "^o-"}])
    api.create_ok("o-1")
    order = gw.admin.wait_order_status("o-1", [3, 4, 5])
    assert order["status"] == status
    assert bool(order["error_msg"]) == (status != 3)


def test_stuck_outcome_keeps_the_order_open(api, gw, poll):
    """outcome status 2 leaves the order processing for good (until forced)."""
    gw.admin.set_faults([{"kind": "outcome", "status": 2}])
    api.create_ok("stuck-1")
    api.create_ok("other-1", sign_type=HMAC_SHA256)
    gw.admin.wait_order_status("stuck-1", [2])
    gw.admin.wait_order_status("other-1", [2])
    poll(lambda: gw.admin.stats()["background_tasks"] == 0, 5, "lifecycles done")
    assert gw.admin.order("stuck-1")["status"] == 2


@pytest.fixture(scope="module")
def failing_half() -> Iterator[SandboxProcess]:
    with start_sandbox(pending_s=0.02, processing_s=0.02, failure_ratio=0.5, seed=11) as process:
        yield process


def test_failure_ratio_is_seeded_per_id(failing_half, api_for):
    """With failure_ratio 0.5 orders end in 3, 4 and 5; the same seed gives each id the same end."""
    api = api_for(failing_half.url)
    ids = [f"f-{i}" for i in range(30)]
    for cl_id in ids:
        api.create_ok(cl_id)
    ends = {cl_id: failing_half.admin.wait_order_status(cl_id, [3, 4, 5])["status"] for cl_id in ids}
    assert set(ends.values()) == {3, 4, 5}
    # replay: same seed, same ids -> same outcomes
    failing_half.admin.reset()
    for cl_id in reversed(ids):
        api.create_ok(cl_id)
    again = {cl_id: failing_half.admin.wait_order_status(cl_id, [3, 4, 5])["status"] for cl_id in ids}
    assert again == ends


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
def test_callback_is_signed_in_the_orders_algorithm(api, gw, receiver, poll, sign_type):
    """The final notification is JSON, carries the documented fields and verifies."""
    api.create_ok("cb-1", sign_type=sign_type, notify_url=receiver.url)
    [body] = receiver.wait_count(1, "cb-1")
    assert set(body) >= NOTIFICATION_FIELDS
    assert body["status"] == "3"
    assert body["amount"] == "5000000"
    assert "error_msg" not in body
    assert ("sign_type" in body) == (sign_type == HMAC_SHA256)
    assert verify(body, KEY, allowed={sign_type}, expected_type=sign_type)
    assert receiver.received[0]["content_type"].startswith("application/json")
    poll(lambda: gw.admin.order("cb-1")["callback_acked"], 5, "acknowledged")


def test_failed_order_callback_has_error_msg(api, gw, receiver):
    """A failed order's callback carries error_msg and a valid signature."""
    gw.admin.set_faults([{"kind": "outcome", "status": 4}])
    api.create_ok("cbf-1", notify_url=receiver.url)
    [body] = receiver.wait_count(1)
    assert body["status"] == "4"
    assert body["error_msg"]
    assert verify(body, KEY)


@pytest.mark.parametrize("refusal", ["http500", "body", "text"])
def test_callback_is_retried_until_acknowledged(api, gw, receiver, poll, refusal):
    """Only HTTP 200 with {"error_code":"0000"} stops the retries."""
    receiver.refuse_first, receiver.refusal = 3, refusal
    api.create_ok("cbr-1", notify_url=receiver.url)
    bodies = receiver.wait_count(4)
    assert all(b == bodies[0] for b in bodies)
    entry = poll(lambda: (e := gw.admin.order("cbr-1"))["callback_acked"] and e, 5, "ack")
    assert [a["acked"] for a in entry["callback_attempts"]] == [False, False, False, True]
    stats = gw.admin.stats()["callbacks"]
    assert stats["attempts"] == 4
    assert stats["acked"] == 1


def test_callback_gives_up_after_the_schedule(api, gw, receiver, poll):
    """With every reply refused, attempts stop after 1 + len(callback_delays_s)."""
    receiver.refuse_first = 1000
    api.create_ok("cbg-1", notify_url=receiver.url)
    poll(lambda: gw.admin.stats()["callbacks"]["gave_up"] == 1, 5, "give up")
    assert len(receiver.bodies()) == 1 + 6
    assert gw.admin.order("cbg-1")["callback_acked"] is False


def test_callback_to_an_unreachable_url_is_recorded(api, gw, poll):
    """A refused connection is a failed attempt, not a crash."""
    api.create_ok("cbu-1", notify_url="http://127.0.0.1:9/notify")
    poll(lambda: gw.admin.stats()["callbacks"]["gave_up"] == 1, 5, "give up")
    attempts = gw.admin.order("cbu-1")["callback_attempts"]
    assert attempts[0]["error"] and attempts[0]["http_status"] is None


def test_force_status_sends_a_callback(api, gw, receiver):
    """The admin can force a status; a final one is notified, and the lifecycle stops."""
    gw.admin.set_faults([{"kind": "outcome", "status": 2}])
    api.create_ok("fs-1", notify_url=receiver.url)
    gw.admin.wait_order_status("fs-1", [2])
    # when
    entry = gw.admin.force_status("fs-1", 5, error_msg="Account closed")
    # then
    assert entry["status"] == 5
    [body] = receiver.wait_count(1)
    assert body["status"] == "5"
    assert body["error_msg"] == "Account closed"
    assert api.single("fs-1").json()["data"]["status"] == 5


def test_force_status_interrupts_the_lifecycle(api, gw, poll):
    """Forcing 2 right away keeps the order at 2 (no automatic final status)."""
    gw.admin.set_faults([{"kind": "outcome", "status": 2, "match": "^never$"}])
    api.create_ok("fi-1")
    gw.admin.force_status("fi-1", 2)
    poll(lambda: gw.admin.stats()["background_tasks"] == 0, 5, "lifecycles done")
    assert gw.admin.order("fi-1")["status"] == 2


def test_force_status_errors(gw):
    """Forcing the status of an unknown order or to an invalid status is refused."""
    from worker.sandbox.client import SandboxAdminError

    with pytest.raises(SandboxAdminError, match="404"):
        gw.admin.force_status("nope", 3)
    with pytest.raises(SandboxAdminError, match="status must be"):
        gw.admin.force_status("nope", 9)


@pytest.fixture(scope="module")
def styled() -> Iterator[SandboxProcess]:
    with start_sandbox(
        pending_s=0.02,
        processing_s=0.02,
        failure_ratio=0.0,
        number_style="string",
        callback_format="form",
        fee_minor=250_000,
    ) as process:
        yield process


def test_string_numbers_and_form_callbacks(styled, api_for, receiver, poll):
    """number_style=string writes money as digit strings; callback_format=form sends a form
    body; both still verify, since the signature is over the text sent."""
    from urllib.parse import parse_qsl

    api = api_for(styled.url)
    api.create_ok("st-1", notify_url=receiver.url, sign_type=HMAC_SHA256)
    styled.admin.wait_order_status("st-1", [3])
    record = api.list(payout_cl_id="st-1").json()["data"][0]
    assert record["amount"] == "5000000"
    assert record["fee"] == "250000"
    assert verify(record, KEY, expected_type=HMAC_SHA256)
    assert api.single("st-1").json()["data"]["amount"] == "5000000"
    # the callback
    poll(lambda: receiver.received, 5, "a form callback")
    received = receiver.received[0]
    assert received["content_type"].startswith("application/x-www-form-urlencoded")
    form = dict(parse_qsl(received["raw"]))
    assert form["status"] == "3"
    assert form["sign_type"] == HMAC_SHA256
    assert verify(form, KEY, expected_type=HMAC_SHA256)
