"""The callback receiver over real HTTP: verify, apply once, refuse forgeries."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.helpers import TEST_KEY, TEST_PLATFORM, Stack, base_env
from worker import keys, signing
from worker.payout import Payout
from worker.runtime import build_runtime
from worker.settings import load_settings
from worker.states import State

AMOUNT = 5_000_000


@pytest.fixture
def receiver(make_stack: Any) -> Stack:
    """Only the callback receiver (no worker, no gateway needed)."""
    return make_stack("http://127.0.0.1:9").start_callbacks()


def order_in(stack: Stack, pid: str, state: State, sign_type: str = "HMAC-SHA256") -> None:
    """Set up an order in ``state`` through the store's own transitions."""
    store = stack.rt.store
    store.create(Payout(pid, AMOUNT, "BCA", "Dewi", "1234567890"), due_at=time.time() + 60)
    if state is State.RECEIVED:
        return
    store.transition(
        pid,
        State.SUBMITTING,
        reason="setup",
        fields={"sign_type": sign_type, "submitted_at": repr(time.time())},
    )
    if state is State.SUBMITTING:
        return
    via = State.ACCEPTED if state in (State.ACCEPTED, State.SUCCEEDED, State.FAILED) else state
    store.transition(pid, via, reason="setup", fields={"payout_id": f"POT-{pid}"}, due=time.time() + 60)
    if state in (State.SUCCEEDED, State.FAILED):
        store.transition(pid, state, reason="setup")


def notice(
    pid: str,
    status: int = 3,
    *,
    key: str = TEST_KEY,
    sign_type: str = "HMAC-SHA256",
    amount: Any = AMOUNT,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payout_id": f"POT-{pid}",
        "payout_cl_id": pid,
        "platform_id": TEST_PLATFORM,
        "amount": amount,
        "real_amount": amount,
        "fee": 0,
        "status": status,
        "create_time": 1795500000,
        "update_time": 1795500100,
        **extra,
    }
    if sign_type == "HMAC-SHA256":
        body["sign_type"] = sign_type
    body["sign"] = signing.sign(body, key, sign_type)
    return body


def post(stack: Stack, body: Any, **kw: Any) -> requests.Response:
    url = f"http://127.0.0.1:{stack.callback_port}/payouts/notify"
    if isinstance(body, dict) and not kw:
        return requests.post(url, json=body, timeout=5)
    return requests.post(url, data=body, timeout=5, **kw)


def history_len(stack: Stack, pid: str) -> int:
    return int(stack.redis.llen(keys.history(pid)))


def test_valid_notice_applies_final_status(receiver: Stack) -> None:
    """A verified callback with status 3 moves an accepted order to succeeded; it is acknowledged."""
    order_in(receiver, "cb-1", State.ACCEPTED)
    r = post(receiver, notice("cb-1", 3))
    assert (r.status_code, r.json()) == (200, {"error_code": "0000"})
    assert receiver.state("cb-1") is State.SUCCEEDED


@pytest.mark.parametrize("status", [4, 5])
def test_failed_statuses(receiver: Stack, status: int) -> None:
    """Statuses 4 and 5 in a verified callback make the order failed."""
    order_in(receiver, "cb-f", State.UNCONFIRMED)
    assert post(receiver, notice("cb-f", status)).status_code == 200
    assert receiver.state("cb-f") is State.FAILED


def test_duplicate_notice_acknowledged_and_changes_nothing(receiver: Stack) -> None:
    """A repeated callback is acknowledged (0000) and adds no history entry."""
    order_in(receiver, "cb-2", State.ACCEPTED)
    assert post(receiver, notice("cb-2", 3)).status_code == 200
    before = history_len(receiver, "cb-2")
    for _ in range(3):
        r = post(receiver, notice("cb-2", 3))
        assert (r.status_code, r.json()["error_code"]) == (200, "0000")
    assert history_len(receiver, "cb-2") == before
    assert receiver.state("cb-2") is State.SUCCEEDED


def test_stale_open_status_after_final_is_ignored(receiver: Stack) -> None:
    """An out-of-order 'processing' notice after the final one changes nothing."""
    order_in(receiver, "cb-3", State.SUCCEEDED)
    assert post(receiver, notice("cb-3", 2)).status_code == 200
    assert receiver.state("cb-3") is State.SUCCEEDED


def test_conflicting_final_goes_to_review(receiver: Stack) -> None:
    """A final state is never overwritten: success then 'failed' -> review with the conflict."""
    order_in(receiver, "cb-4", State.SUCCEEDED)
    assert post(receiver, notice("cb-4", 4)).status_code == 200
    order = receiver.rt.store.require("cb-4")
    assert order.state is State.REVIEW and "conflict" in order.reason
    assert order.fields["conflict_status"] == "4"


@pytest.mark.parametrize(
    ("desc", "body", "code"),
    [
        ("wrong key", lambda: notice("cb-5", key="not-the-key"), 401),
        ("md5 downgrade", lambda: notice("cb-5", sign_type="MD5"), 401),
        ("tampered status", lambda: {**notice("cb-5", 4), "status": 3}, 401),
        ("no sign", lambda: {k: v for k, v in notice("cb-5").items() if k != "sign"}, 400),
        ("bad id", lambda: notice("../x"), 400),
        ("unknown order", lambda: notice("cb-unknown"), 401),  # the same answer as a bad signature
        ("nested value", lambda: {**notice("cb-5"), "x": {"a": 1}}, 400),
    ],
)
def test_forged_or_malformed_notices_change_nothing(receiver: Stack, desc: str, body: Any, code: int) -> None:
    """Forged, unsigned or malformed callbacks are refused with a 4xx and change neither state nor history."""
    order_in(receiver, "cb-5", State.ACCEPTED)
    before = history_len(receiver, "cb-5")
    r = post(receiver, body())
    assert r.status_code == code, desc
    assert r.json()["error_code"] != "0000"
    assert receiver.state("cb-5") is State.ACCEPTED
    assert history_len(receiver, "cb-5") == before


def test_amount_mismatch_goes_to_review(receiver: Stack) -> None:
    """A callback whose amount differs from ours sends the order to review, never to a final state."""
    order_in(receiver, "cb-6", State.ACCEPTED)
    assert post(receiver, notice("cb-6", 3, amount=AMOUNT + 100)).status_code == 200
    order = receiver.rt.store.require("cb-6")
    assert order.state is State.REVIEW and "amount mismatch" in order.reason


def test_amount_as_decimal_text_matches(receiver: Stack) -> None:
    """'5000000.0000' equals 5000000 minor units; the signature covers the text as sent."""
    order_in(receiver, "cb-7", State.ACCEPTED)
    raw = notice("cb-7", 3, amount="5000000.0000")
    assert post(receiver, raw).status_code == 200
    assert receiver.state("cb-7") is State.SUCCEEDED


def test_form_encoded_notice_accepted(receiver: Stack) -> None:
    """A form-encoded callback (one integrator's format) is verified and applied like JSON."""
    order_in(receiver, "cb-8", State.ACCEPTED)
    body = {k: str(v) for k, v in notice("cb-8", 3).items()}
    r = post(receiver, body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and receiver.state("cb-8") is State.SUCCEEDED


def test_md5_order_verified_with_md5_when_allowed(make_stack: Any) -> None:
    """An MD5 order's callback verifies only with MD5: an HMAC-signed one is refused (no algorithm switch)."""
    stack = make_stack("http://127.0.0.1:9", GATEWAY_SIGN_TYPE="MD5").start_callbacks()
    order_in(stack, "cb-9", State.ACCEPTED, sign_type="MD5")
    assert post(stack, notice("cb-9", 3, sign_type="HMAC-SHA256")).status_code == 401
    assert post(stack, notice("cb-9", 3, sign_type="MD5")).status_code == 200
    assert stack.state("cb-9") is State.SUCCEEDED


def test_notice_before_create_answer_asks_for_retry(receiver: Stack) -> None:
    """The callback beat the create's answer: 409 so the gateway retries; nothing changes."""
    order_in(receiver, "cb-10", State.SUBMITTING)
    r = post(receiver, notice("cb-10", 3))
    assert r.status_code == 409 and r.json()["error_code"] != "0000"
    assert receiver.state("cb-10") is State.SUBMITTING


def test_garbled_body_is_400(receiver: Stack) -> None:
    """A body that is not JSON is answered 400."""
    r = post(receiver, b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_store_down_answers_503(redis_url: str) -> None:
    """Redis unreachable: 503 so the gateway retries later."""
    from worker.callbacks import make_app

    settings = load_settings(base_env("redis://127.0.0.1:9/0"))
    rt = build_runtime(settings)
    app = make_app(rt)
    body = notice("cb-11", 3)
    import io
    import json as _json

    data = _json.dumps(body).encode()
    seen: list[str] = []
    out = app(
        {
            "PATH_INFO": "/payouts/notify",
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": str(len(data)),
            "CONTENT_TYPE": "application/json",
            "wsgi.input": io.BytesIO(data),
        },
        lambda status, headers: seen.append(status),
    )
    assert seen[0].startswith("503")
    assert _json.loads(b"".join(out))["error_code"] != "0000"
    rt.close()


def test_a_lone_surrogate_does_not_tell_known_ids_from_unknown(receiver: Stack) -> None:
    """D45: a body carrying a lone surrogate (JSON ``\\ud800``) gets the same answer for a
    known order and an unknown one (400, before any lookup), and changes nothing."""
    # given one known order
    order_in(receiver, "known-1", State.ACCEPTED)
    before = receiver.rt.store.get("known-1")

    def probe(pid: str) -> requests.Response:
        body = '{"payout_cl_id":"' + pid + '","status":"3","sign":"00","memo":"\\ud800"}'
        return post(receiver, body.encode(), headers={"Content-Type": "application/json"})

    # when the attacker probes a known and an unknown id, without any key
    known, unknown = probe("known-1"), probe("unknown-1")
    # then both answers are the same refusal, naming the field and the rule
    assert (known.status_code, known.text) == (unknown.status_code, unknown.text)
    assert known.status_code == 400 and "memo: must be valid Unicode text" in known.text
    after = receiver.rt.store.get("known-1")
    assert before is not None and after is not None and after.state is before.state is State.ACCEPTED
