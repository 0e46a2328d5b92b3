"""The submit pipeline end to end: producer -> Redis -> real Celery worker -> sandbox over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import TEST_KEY, TEST_TOKEN, Stack, sandbox_config
from worker import keys
from worker.celery_app import app
from worker.errors import DuplicatePayout, InvalidPayout
from worker.harness.processes import free_port, wait_for
from worker.producer import enqueue_payout, get_payout
from worker.sandbox.process import SandboxProcess
from worker.states import State

ACCOUNT = "8800112233445566"


def enqueue(stack: Stack, pid: str, amount: int = 5_000_000, bank: str = "BCA") -> Any:
    return enqueue_payout(pid, amount, bank, "Siti Rahma", ACCOUNT, runtime=stack.rt)


def creates(gateway: SandboxProcess, pid: str) -> dict[str, int]:
    assert gateway.admin is not None
    return gateway.admin.ledger()["create_requests"].get(pid, {"before": 0, "after": 0})


def test_accepted_then_final_with_verified_signature(stack: Stack, gateway: SandboxProcess) -> None:
    """0000 -> accepted; the sandbox verified the HMAC signature; the callback makes it final."""
    # when
    order = enqueue(stack, "acc-1")
    # then
    assert order.state is State.RECEIVED
    stack.wait_state("acc-1", State.ACCEPTED, State.SUCCEEDED)
    stack.wait_state("acc-1", State.SUCCEEDED)
    final = get_payout("acc-1", runtime=stack.rt)
    assert final is not None and final.payout_id
    entry = gateway.admin.order("acc-1")  # type: ignore[union-attr]
    assert entry is not None and entry["sign_type"] == "HMAC-SHA256" and entry["status"] == 3
    assert entry["payout_id"] == final.payout_id
    assert creates(gateway, "acc-1") == {"before": 1, "after": 0, "total": 1}
    assert [h["to"] for h in final.history] == ["received", "submitting", "accepted", "succeeded"]


def test_md5_mode(make_stack: Any, gateway: SandboxProcess) -> None:
    """GATEWAY_SIGN_TYPE=MD5 signs the legacy way and the sandbox accepts it."""
    stack = make_stack(gateway.url, GATEWAY_SIGN_TYPE="MD5")
    stack.start_callbacks()
    stack.start_worker()
    enqueue(stack, "md5-1")
    stack.wait_state("md5-1", State.SUCCEEDED)
    assert gateway.admin.order("md5-1")["sign_type"] == "MD5"  # type: ignore[index,union-attr]


def test_documented_refusal_is_rejected(stack: Stack, gateway: SandboxProcess) -> None:
    """0012 unsupported bank -> rejected, final, out of the due-index."""
    enqueue(stack, "rej-1", bank="NOSUCHBANK")
    stack.wait_state("rej-1", State.REJECTED)
    order = get_payout("rej-1", runtime=stack.rt)
    assert order is not None and order.fields["reject_code"] == "0012"
    assert stack.redis.zscore(keys.DUE, "rej-1") is None
    assert gateway.admin.order("rej-1") is None  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["5xx", "empty", "garbled", "reset", "hang"])
def test_created_but_response_lost_is_unconfirmed_never_resent(
    stack: Stack, gateway: SandboxProcess, mode: str
) -> None:
    """The gateway created the order but the answer was lost: unconfirmed, then resolved by query."""
    # given: the answer to this order's create is lost
    rule: dict[str, Any] = {"kind": "create_lost", "mode": mode, "match": f"^lost-{mode}$"}
    if mode == "hang":
        rule["seconds"] = 4  # past GATEWAY_READ_TIMEOUT=2
    gateway.admin.set_faults([rule])  # type: ignore[union-attr]
    pid = f"lost-{mode}"
    # when
    enqueue(stack, pid)
    # then
    stack.wait_state(pid, State.UNCONFIRMED, State.ACCEPTED, State.SUCCEEDED)
    order = get_payout(pid, runtime=stack.rt)
    assert order is not None
    assert [h["to"] for h in order.history][:3] == ["received", "submitting", "unconfirmed"]
    # the sweep (run here by hand) checks it and the query finds it
    stack.start_beat()
    stack.wait_state(pid, State.SUCCEEDED)
    assert creates(gateway, pid)["total"] == 1


def test_5xx_before_create_unconfirmed_then_review_after_grace(
    make_stack: Any, gateway: SandboxProcess
) -> None:
    """5xx without creating: unconfirmed; not found through the grace period -> review."""
    stack = make_stack(gateway.url, UNCONFIRMED_GRACE="1.5")
    stack.start_callbacks()
    stack.start_worker()
    stack.start_beat()
    gateway.admin.set_faults([{"kind": "create_5xx_before", "match": "^gone-1$"}])  # type: ignore[union-attr]
    enqueue(stack, "gone-1")
    stack.wait_state("gone-1", State.REVIEW)
    order = get_payout("gone-1", runtime=stack.rt)
    assert order is not None and "not found" in order.reason
    assert creates(gateway, "gone-1")["total"] == 1  # the create was never sent again


def test_not_found_policy_resubmit(make_stack: Any, gateway: SandboxProcess) -> None:
    """NOT_FOUND_POLICY=resubmit: after the grace the same payout_cl_id is sent again, once."""
    stack = make_stack(
        gateway.url, UNCONFIRMED_GRACE="1.5", NOT_FOUND_POLICY="resubmit", SUBMIT_REDRIVE_AFTER="0.2"
    )
    stack.start_callbacks()
    stack.start_worker()
    stack.start_beat()
    gateway.admin.set_faults([{"kind": "create_5xx_before", "match": "^again-1$", "times": 1}])  # type: ignore[union-attr]
    enqueue(stack, "again-1")
    stack.wait_state("again-1", State.SUCCEEDED, timeout_s=30)
    assert creates(gateway, "again-1")["total"] == 2
    assert len([o for o in gateway.admin.ledger()["orders"] if o["payout_cl_id"] == "again-1"]) == 1  # type: ignore[union-attr]


def test_connection_refused_goes_back_to_received_and_retries(make_stack: Any) -> None:
    """The request provably never left: back to received, retried once the gateway is up."""
    port = free_port()
    stack = make_stack(f"http://127.0.0.1:{port}", SUBMIT_RETRY_MAX="1")
    stack.start_callbacks()
    stack.start_worker()
    enqueue(stack, "refused-1")

    def bounced() -> bool:
        o = get_payout("refused-1", runtime=stack.rt)
        return o is not None and o.state is State.RECEIVED and o.field_int("submit_attempts") >= 1

    wait_for(bounced, 20, what="the refused attempt to be recorded")
    order = get_payout("refused-1", runtime=stack.rt)
    assert order is not None and "not sent" in order.reason
    # when the gateway comes up, the sweep re-drives the order
    late = SandboxProcess(sandbox_config(port=port)).start()
    try:
        stack.start_beat()
        stack.wait_state("refused-1", State.ACCEPTED, State.SUCCEEDED, timeout_s=30)
        assert late.admin.ledger()["create_requests"]["refused-1"]["total"] == 1  # type: ignore[union-attr]
    finally:
        late.stop()


def test_duplicate_messages_send_once(stack: Stack, gateway: SandboxProcess) -> None:
    """Redelivered or duplicated submit messages are no-ops: one create request."""
    gateway.admin.set_faults([{"kind": "latency", "seconds": 0.3, "endpoints": ["create"]}])  # type: ignore[union-attr]
    order = enqueue(stack, "dup-1")
    for _ in range(10):
        app.send_task("payouts.submit", args=[order.payout_cl_id])
    stack.wait_state("dup-1", State.SUCCEEDED)
    assert creates(gateway, "dup-1") == {"before": 1, "after": 0, "total": 1}


def test_enqueue_idempotent_and_duplicate_refused(stack: Stack, gateway: SandboxProcess) -> None:
    """The same data twice returns the same order; other data under the id is refused; one create."""
    first = enqueue(stack, "idem-1")
    again = enqueue(stack, "idem-1")
    assert again.payout_cl_id == first.payout_cl_id and again.created_at == first.created_at
    with pytest.raises(DuplicatePayout):
        enqueue(stack, "idem-1", amount=6_000_000)
    stack.wait_state("idem-1", State.SUCCEEDED)
    assert creates(gateway, "idem-1")["total"] == 1


def test_invalid_payout_is_neither_stored_nor_sent(stack: Stack, gateway: SandboxProcess) -> None:
    """Bad input raises InvalidPayout naming the field; nothing is stored or queued."""
    with pytest.raises(InvalidPayout) as info:
        enqueue_payout("bad-1", 50.5, "BCA", "Siti", ACCOUNT, runtime=stack.rt)  # type: ignore[arg-type]
    assert info.value.fields == ["amount"]
    assert get_payout("bad-1", runtime=stack.rt) is None
    assert stack.redis.llen("payouts") == 0


def test_create_task_by_name(stack: Stack, gateway: SandboxProcess) -> None:
    """A web app without this package enqueues with send_task('payouts.create', kwargs=...)."""
    app.send_task(
        "payouts.create",
        kwargs={
            "payout_cl_id": "byname-1",
            "amount": 7_000_000,
            "bank_name": "BNI",
            "name": "Agus",
            "number": "1234567890",
        },
    )
    stack.wait_state("byname-1", State.SUCCEEDED)
    assert gateway.admin.order("byname-1")["amount"] in (7_000_000, "7000000")  # type: ignore[index,union-attr]


def test_logs_carry_order_id_and_no_secrets(stack: Stack, gateway: SandboxProcess) -> None:
    """Every worker log line about an order names it; no key, token, signature or number."""
    enqueue(stack, "log-1")
    stack.wait_state("log-1", State.SUCCEEDED)
    text = stack.logs()
    for secret in (TEST_KEY, TEST_TOKEN, ACCOUNT, "Siti Rahma"):
        assert secret not in text
    events = [e for e in stack.json_logs() if str(e.get("event", "")).startswith("payout.")]
    assert events, stack.log_tail()
    assert all(e.get("payout_cl_id") == "log-1" for e in events)
    transitions = [(e["from"], e["to"]) for e in events if e["event"] == "payout.transition"]
    assert ("received", "submitting") in transitions and ("submitting", "accepted") in transitions


def test_celery_message_carries_only_the_id(stack: Stack) -> None:
    """The queued message's body is the order id: no account number or name in the broker."""
    stack.workers[0].stop()
    enqueue(stack, "msg-1")
    raw = stack.redis.lrange("payouts", 0, -1)
    assert raw, "the submit message should be waiting in the queue"
    assert all(ACCOUNT not in m and "Siti" not in m for m in raw)
    assert any('[["msg-1"], {}' in m or "msg-1" in m for m in raw)
