"""Operator commands through the ``payouts`` CLI, against the sandbox."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from sandbox.process import SandboxProcess
from tests.helpers import Stack
from worker.ops.cli import main
from worker.producer import store_payout
from worker.states import State


def data(pid: str) -> dict[str, Any]:
    return {
        "payout_cl_id": pid,
        "amount": 5_000_000,
        "bank_name": "BCA",
        "name": "Wati",
        "number": "4455667788",
    }


@pytest.fixture
def ops(make_stack: Any, gateway: SandboxProcess) -> Stack:
    stack: Stack = make_stack(gateway.url)
    return stack


def to_review(stack: Stack, pid: str) -> None:
    store_payout(stack.rt, data(pid))
    stack.rt.store.transition(
        pid, State.SUBMITTING, reason="setup", fields={"submitted_at": repr(time.time())}
    )
    stack.rt.store.transition(pid, State.UNCONFIRMED, reason="setup", due=time.time() + 60)
    stack.rt.store.transition(pid, State.REVIEW, reason="not found after grace")


def test_show_masks_personal_data(ops: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`payouts show` prints the order with the account number masked and no name; an unknown id exits 1."""
    store_payout(ops.rt, data("op-1"))
    assert main(["show", "op-1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "received" and out["number"] == "******7788" and out["name"] == "***"
    assert "4455667788" not in json.dumps(out) and "Wati" not in json.dumps(out)
    assert out["history"][0]["to"] == "received" and out["due_in_s"] > 0
    # times are ISO-8601 UTC, bookkeeping fields are left out, the text ends with one answer line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["created_at"])
    assert re.fullmatch(r"\d{4}-.*Z", out["history"][0]["at"]) and "fp" not in out
    assert main(["show", "op-1"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[-1] == "op-1: received" and any(ln.startswith("created_at ") for ln in text)
    assert "4455667788" not in "\n".join(text) and "Wati" not in "\n".join(text)
    assert main(["show", "nope"]) == 1


def test_list_and_stats(ops: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`payouts list --state` lists only that state; `payouts stats` counts per state, open and review."""
    store_payout(ops.rt, data("op-2"))
    to_review(ops, "op-3")
    assert main(["list", "--state", "review"]) == 0
    out = capsys.readouterr().out
    assert "op-3" in out and "op-2" not in out
    assert main(["stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["counts"]["received"] == 1 and stats["counts"]["review"] == 1
    assert stats["review"] == 1 and stats["open"] == 1


def test_resolve_only_from_review(ops: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`payouts resolve` refuses an order not in review and records the operator's note when it is."""
    store_payout(ops.rt, data("op-4"))
    assert main(["resolve", "op-4", "--state", "failed", "--note", "x"]) == 1
    to_review(ops, "op-5")
    assert (
        main(["resolve", "op-5", "--state", "failed", "--note", "bank confirmed no transfer", "--by", "dina"])
        == 0
    )
    order = ops.rt.store.require("op-5")
    assert order.state is State.FAILED and order.fields["resolution_note"].startswith("bank")
    # the actor and the action are in the history entry of the transition itself
    assert order.history[-1]["reason"] == "operator dina: bank confirmed no transfer"
    assert order.fields["resolved_by"] == "dina"


def test_resubmit_only_when_gateway_does_not_know(ops: Stack, gateway: SandboxProcess) -> None:
    # an order the gateway never saw: resubmit moves it back to received
    """`payouts resubmit` reopens an order the gateway never saw and refuses one the gateway has."""
    to_review(ops, "op-6")
    assert main(["resubmit", "op-6"]) == 0
    assert ops.state("op-6") is State.RECEIVED
    # an order the gateway has: refused
    ops.start_worker()
    store_payout(ops.rt, data("op-7"))
    from worker.celery_app import app

    app.send_task("payouts.submit", args=["op-7"])
    ops.wait_state("op-7", State.ACCEPTED)
    ops.rt.store.transition("op-7", State.REVIEW, reason="test: pretend a conflict")
    assert main(["resubmit", "op-7"]) == 1
    assert ops.state("op-7") is State.REVIEW


def test_check_and_reconcile(ops: Stack, gateway: SandboxProcess, capsys: pytest.CaptureFixture[str]) -> None:
    """`payouts check` applies the gateway's status now; `payouts reconcile` exits 1 on a mismatch."""
    ops.start_worker()
    store_payout(ops.rt, data("op-8"))
    from worker.celery_app import app

    app.send_task("payouts.submit", args=["op-8"])
    ops.wait_state("op-8", State.ACCEPTED)
    gateway.admin.wait_order_status("op-8", [3])  # type: ignore[union-attr]
    assert main(["check", "op-8"]) == 0
    assert ops.state("op-8") is State.SUCCEEDED
    capsys.readouterr()
    assert main(["reconcile"]) == 0
    assert "match" in capsys.readouterr().out
    # a final state the gateway disagrees with is reported and the exit code says so
    gateway.admin.force_status("op-8", 4)  # type: ignore[union-attr]
    assert main(["reconcile", "op-8"]) == 1
    assert "mismatch" in capsys.readouterr().out
