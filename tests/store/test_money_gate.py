"""One gate for money (issue 19): every rule enforced where the state changes, on the
store's clock (Redis ``TIME``), against a real Redis with the real Lua."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from worker import controls
from worker.moves import move
from worker.producer import store_payout
from worker.runtime import Runtime
from worker.states import State

NUMBER = "4455667788"


def data(pid: str, amount: int = 5_000_000, **extra: Any) -> dict[str, Any]:
    return {
        "payout_cl_id": pid,
        "amount": amount,
        "bank_name": "BCA",
        "name": "Wati",
        "number": NUMBER,
        **extra,
    }


def results_runtime(make_runtime: Any, **env: Any) -> tuple[Runtime, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    rt: Runtime = make_runtime(RESULT_TASK="webapp.payout_result", **env)
    rt.send_task = lambda name, payload: sent.append(payload)
    return rt, sent


# ------------------------------------------------------------------ the seam


def test_every_move_logs_one_transition_and_finals_are_delivered(make_runtime: Any) -> None:
    """Each applied move logs exactly one payout.transition (as many as history entries);
    a move into a final state is handed to result delivery by the seam itself."""
    # given an order held for approval
    rt, sent = results_runtime(make_runtime, APPROVAL_ABOVE="1000000")
    store_payout(rt, data("mg-seam"))
    # when a checker rejects it (controls -> the seam)
    with capture_logs() as logs:
        controls.reject(rt, "mg-seam", by="checker", note="no")
    # then one event, one published result, flag cleared
    moves = [e for e in logs if e["event"] == "payout.transition"]
    assert [(e["from"], e["to"]) for e in moves] == [("awaiting_approval", "rejected")]
    assert [p["state"] for p in sent] == ["rejected"]
    assert "result_pending" not in rt.store.require("mg-seam").fields


def test_refused_and_field_only_moves_log_nothing(make_runtime: Any) -> None:
    """A refused compare-and-set and a field-only update write no transition log."""
    # given
    rt, sent = results_runtime(make_runtime)
    store_payout(rt, data("mg-quiet", amount=10_000))
    # when
    with capture_logs() as logs:
        refused = move(rt, "mg-quiet", State.SUCCEEDED, reason="x")
        kept = move(rt, "mg-quiet", None, sources={State.RECEIVED}, reason="touch", fields={"k": "v"})
    # then
    assert refused is None and kept is State.RECEIVED
    assert [e for e in logs if e["event"] == "payout.transition"] == [] and sent == []
