"""Reconciliation with a real worker and beat against the sandbox: every order ends final."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.helpers import Stack
from worker import keys
from worker.harness.processes import wait_for
from worker.producer import enqueue_payout, store_payout
from worker.reports import ReportResult, apply_report
from worker.sandbox.process import SandboxProcess
from worker.states import FINAL, State


def data(pid: str, amount: int = 5_000_000) -> dict[str, Any]:
    return {
        "payout_cl_id": pid,
        "amount": amount,
        "bank_name": "BCA",
        "name": "Putri",
        "number": "5566778899",
    }


def creates(gateway: SandboxProcess, pid: str) -> int:
    return int(gateway.admin.ledger()["create_requests"].get(pid, {}).get("total", 0))  # type: ignore[union-attr]


def full_stack(make_stack: Any, gateway: SandboxProcess, **env: Any) -> Stack:
    stack: Stack = make_stack(gateway.url, **env)
    stack.start_callbacks()
    stack.start_worker()
    stack.start_beat()
    return stack


def test_lost_submit_message_is_redriven(make_stack: Any, gateway: SandboxProcess) -> None:
    """An order stored but whose submit message never reached the broker is sent by the sweep."""
    stack = full_stack(make_stack, gateway, SUBMIT_REDRIVE_AFTER="1")
    store_payout(stack.rt, data("lostmsg-1"))  # stored; no message sent
    stack.wait_state("lostmsg-1", State.SUCCEEDED, timeout_s=30)
    assert creates(gateway, "lostmsg-1") == 1


def test_worker_killed_mid_call(make_stack: Any, gateway: SandboxProcess) -> None:
    """SIGKILL while the create is in flight: the sweep makes it unconfirmed, a query settles it."""
    # given: the gateway creates the order, then holds the answer
    gateway.admin.set_faults(
        [
            {
                "kind": "create_lost",
                "mode": "hang",
                "seconds": 30,  # type: ignore[union-attr]
                "match": "^killed-1$",
            }
        ]
    )
    stack: Stack = make_stack(gateway.url)
    stack.start_callbacks()
    first = stack.start_worker()
    enqueue_payout(**data("killed-1"), runtime=stack.rt)
    wait_for(lambda: creates(gateway, "killed-1") == 1, 20, what="the create request to arrive")
    assert stack.state("killed-1") is State.SUBMITTING
    # when
    first.kill()
    stack.start_worker()
    stack.start_beat()
    # then
    stack.wait_state("killed-1", State.SUCCEEDED, timeout_s=40)
    order = stack.rt.store.require("killed-1")
    assert "unconfirmed" in [h["to"] for h in order.history]
    assert creates(gateway, "killed-1") == 1


def test_callback_before_create_answer(make_stack: Any, gateway: SandboxProcess) -> None:
    """The final callback arrives while the create's answer is delayed; applied after, once."""
    gateway.admin.set_faults(
        [  # type: ignore[union-attr]
            {"kind": "create_lost", "mode": "hang", "seconds": 1.5, "then": "answer", "match": "^early-1$"},
        ]
    )
    stack = full_stack(make_stack, gateway)
    enqueue_payout(**data("early-1"), runtime=stack.rt)
    stack.wait_state("early-1", State.SUCCEEDED, timeout_s=30)
    order = stack.rt.store.require("early-1")
    assert [h["to"] for h in order.history] == ["received", "submitting", "accepted", "succeeded"]
    assert creates(gateway, "early-1") == 1


def test_query_faults_never_change_state(make_stack: Any, gateway: SandboxProcess) -> None:
    """Query 5xx/timeouts and an invisible order only reschedule; the order still ends right."""
    gateway.admin.set_faults(
        [  # type: ignore[union-attr]
            {"kind": "create_lost", "mode": "empty", "match": "^qf-"},
            {"kind": "query_5xx", "probability": 0.5},
            {"kind": "query_timeout", "seconds": 3, "probability": 0.2},
            {"kind": "invisible", "seconds": 2, "match": "^qf-"},
            {"kind": "callback", "mode": "never", "match": "^qf-"},
        ]
    )
    stack = full_stack(make_stack, gateway, UNCONFIRMED_GRACE="30")
    for n in range(5):
        enqueue_payout(**data(f"qf-{n}"), runtime=stack.rt)
    for n in range(5):
        stack.wait_state(f"qf-{n}", State.SUCCEEDED, timeout_s=60)
        assert creates(gateway, f"qf-{n}") == 1
        hist = [h["to"] for h in stack.rt.store.require(f"qf-{n}").history]
        assert hist[:3] == ["received", "submitting", "unconfirmed"] and "review" not in hist


def test_two_beats_and_duplicate_callbacks(make_stack: Any, gateway: SandboxProcess) -> None:
    """Two beats at once, duplicated and reordered callbacks: each order created once, ends final."""
    gateway.admin.set_faults(
        [  # type: ignore[union-attr]
            {"kind": "callback", "mode": "duplicate", "copies": 3, "concurrent": True, "probability": 0.5},
            {"kind": "callback", "mode": "out_of_order", "probability": 0.5},
            {"kind": "create_lost", "mode": "5xx", "probability": 0.3},
        ]
    )
    stack = full_stack(make_stack, gateway)
    stack.start_beat()
    stack.start_worker()
    ids = [f"tb-{n}" for n in range(30)]
    for i in ids:
        enqueue_payout(**data(i), runtime=stack.rt)
    for i in ids:
        stack.wait_state(i, State.SUCCEEDED, timeout_s=60)
    ledger = gateway.admin.ledger()  # type: ignore[union-attr]
    assert all(ledger["create_requests"][i]["total"] == 1 for i in ids)
    assert stack.rt.store.counts()["review"] == 0


def test_batch_reconciliation_uses_window_queries(make_stack: Any, gateway: SandboxProcess) -> None:
    """Many due orders are reconciled with list queries over a time window, not one each."""
    gateway.admin.set_faults([{"kind": "callback", "mode": "never"}])  # type: ignore[union-attr]
    stack: Stack = make_stack(gateway.url, CHECK_INTERVAL_MIN="1", CHECK_INTERVAL_MAX="1")
    stack.start_callbacks()
    stack.start_worker()
    ids = [f"batch-{n}" for n in range(80)]
    for i in ids:
        enqueue_payout(**data(i), runtime=stack.rt)
    for i in ids:
        stack.wait_state(i, State.ACCEPTED, State.SUCCEEDED, timeout_s=30)
    wait_for(
        lambda: (
            gateway.admin.ledger()["orders"]
            and all(  # type: ignore[union-attr]
                o["status"] == 3 for o in gateway.admin.ledger()["orders"]
            )
        ),
        20,
        what="gateway final",
    )  # type: ignore[union-attr]
    before = gateway.admin.stats()["requests"]  # type: ignore[union-attr]
    stack.start_beat()
    for i in ids:
        stack.wait_state(i, State.SUCCEEDED, timeout_s=30)
    after = gateway.admin.stats()["requests"]  # type: ignore[union-attr]
    queries = sum(after.get(k, 0) - before.get(k, 0) for k in ("query_list", "query_single"))
    assert queries < len(ids) / 2, (before, after)


def test_rate_limit_shared_by_worker_processes(make_stack: Any, gateway: SandboxProcess) -> None:
    """GATEWAY_MAX_RPS holds across two worker processes: the gateway's limit never trips."""
    gateway.admin.set_faults([{"kind": "rate_limit", "rps": 6, "burst": 6, "endpoints": ["create"]}])  # type: ignore[union-attr]
    stack = full_stack(make_stack, gateway, GATEWAY_MAX_RPS="4")
    stack.start_worker()
    ids = [f"rl-{n}" for n in range(24)]
    t0 = time.monotonic()
    for i in ids:
        enqueue_payout(**data(i), runtime=stack.rt)
    for i in ids:
        stack.wait_state(i, State.ACCEPTED, State.SUCCEEDED, timeout_s=40)
    elapsed = time.monotonic() - t0
    fired = gateway.admin.stats()["faults_fired"]  # type: ignore[union-attr]
    assert fired.get("rate_limit", 0) == 0, fired
    assert elapsed >= (len(ids) - 4) / 4 * 0.9  # the bucket allowed a burst of 4, then 4/s


def test_429_backs_off_and_order_still_created_once(make_stack: Any, gateway: SandboxProcess) -> None:
    """A 429 from the gateway is 'not processed': back to received, retried, created once."""
    gateway.admin.set_faults([{"kind": "rate_limit", "rps": 2, "burst": 2, "endpoints": ["create"]}])  # type: ignore[union-attr]
    stack = full_stack(make_stack, gateway, SUBMIT_RETRY_MAX="1")
    ids = [f"429-{n}" for n in range(10)]
    for i in ids:
        enqueue_payout(**data(i), runtime=stack.rt)
    for i in ids:
        stack.wait_state(i, State.ACCEPTED, State.SUCCEEDED, timeout_s=60)
        assert gateway.admin.ledger()["create_requests"][i]["after"] == 0  # type: ignore[union-attr]
    assert gateway.admin.stats()["faults_fired"].get("rate_limit", 0) > 0  # type: ignore[union-attr]


def test_stuck_order_goes_to_review_after_max_age(make_stack: Any, gateway: SandboxProcess) -> None:
    """An order still open after MAX_ORDER_AGE goes to review with that reason."""
    gateway.admin.set_faults([{"kind": "outcome", "status": 2, "match": "^stuck-1$"}])  # type: ignore[union-attr]
    stack = full_stack(make_stack, gateway, MAX_ORDER_AGE="3")
    enqueue_payout(**data("stuck-1"), runtime=stack.rt)
    stack.wait_state("stuck-1", State.REVIEW, timeout_s=30)
    assert "MAX_ORDER_AGE" in stack.rt.store.require("stuck-1").reason


def test_events_stream_has_each_transition_once(make_stack: Any, gateway: SandboxProcess) -> None:
    """The events stream holds each transition of an order exactly once, in history order."""
    stack = full_stack(make_stack, gateway)
    enqueue_payout(**data("ev-1"), runtime=stack.rt)
    stack.wait_state("ev-1", State.SUCCEEDED)
    entries = [e for _, e in stack.redis.xrange(keys.EVENTS) if e["payout_cl_id"] == "ev-1"]
    history = stack.rt.store.require("ev-1").history
    assert [(e["from"], e["to"]) for e in entries] == [(h["from"], h["to"]) for h in history]
    assert entries[-1]["payout_id"]


def test_result_task_sent_on_final_state(make_stack: Any, gateway: SandboxProcess) -> None:
    """RESULT_TASK: one message per final state, on RESULT_QUEUE, with the documented payload."""
    stack = full_stack(make_stack, gateway, RESULT_TASK="webapp.payout_result")
    enqueue_payout(**data("res-1"), runtime=stack.rt)
    stack.wait_state("res-1", State.SUCCEEDED)
    raw = wait_for(lambda: stack.redis.lrange("payouts.results", 0, -1), 10, what="result message")
    assert len(raw) == 1
    msg = json.loads(raw[0])
    assert msg["headers"]["task"] == "webapp.payout_result"
    import base64

    body = json.loads(base64.b64decode(msg["body"]))
    assert body[1] == {
        "payout_cl_id": "res-1",
        "state": "succeeded",
        "amount": 5_000_000,
        "payout_id": body[1]["payout_id"],
        "reason": body[1]["reason"],
    }
    assert "5566778899" not in raw[0]


def test_unknown_status_alerts_then_review(make_stack: Any) -> None:
    """An undocumented gateway status keeps the order open, then sends it to review if it persists."""
    stack: Stack = make_stack("http://127.0.0.1:9", UNKNOWN_STATUS_REVIEW_AFTER="3")
    store_payout(stack.rt, data("unk-1"))
    stack.rt.store.transition("unk-1", State.SUBMITTING, reason="setup")
    stack.rt.store.transition("unk-1", State.ACCEPTED, reason="setup", due=time.time() + 60)
    results = []
    for _ in range(3):
        order = stack.rt.store.require("unk-1")
        results.append(
            apply_report(stack.rt, order, status="6", payout_id="P", amount="5000000", source="query")
        )
    assert results == [ReportResult.UNKNOWN_STATUS, ReportResult.UNKNOWN_STATUS, ReportResult.CONFLICT]
    assert stack.state("unk-1") is State.REVIEW


def test_final_states_are_all_final(make_stack: Any, gateway: SandboxProcess) -> None:
    """Failed payouts at the gateway end failed here (status 4 and 5)."""
    gateway.admin.set_faults(
        [  # type: ignore[union-attr]
            {"kind": "outcome", "status": 4, "match": "^fin-4$"},
            {"kind": "outcome", "status": 5, "match": "^fin-5$"},
        ]
    )
    stack = full_stack(make_stack, gateway)
    for i in ("fin-4", "fin-5"):
        enqueue_payout(**data(i), runtime=stack.rt)
    for i in ("fin-4", "fin-5"):
        assert stack.wait_state(i, *FINAL) is State.FAILED
