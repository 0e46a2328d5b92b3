"""Two rows for the demo's proof table: the kill switch and the balance hold, shown live.

The demo calls these while its stack runs (workers, beat, receiver, sandbox), each with a
few payouts of its own that it also counts in its ledger proof, so their final states are
checked like every other order::

    from worker.harness.control_proof import CONTROL_SETTINGS, prove_balance_hold, prove_pause

    overrides = {**demo_settings(...), **CONTROL_SETTINGS}
    ...
    rows = [prove_pause(rt, admin, pause_payouts), prove_balance_hold(rt, admin, hold_payouts)]
    out.checks += [Check(r.ok, r.text) for r in rows]

Each function enqueues its payouts itself (``enqueue_payout``), returns when the control
has been shown and lifted, and leaves the orders to finish normally.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from worker.desk import pausing
from worker.producer import enqueue_payout
from worker.runtime import Runtime
from worker.states import State

#: worker settings that make the controls quick enough for a demo (merge into its overrides)
CONTROL_SETTINGS: Final = {"PAUSE_RECHECK": "1", "BALANCE_POLL_INTERVAL": "1"}


@dataclass(frozen=True)
class ControlRow:
    ok: bool
    text: str


def _enqueue(rt: Runtime, payouts: Sequence[dict[str, Any]]) -> list[str]:
    for p in payouts:
        enqueue_payout(
            p["payout_cl_id"],
            p["amount"],
            p["bank_name"],
            p["name"],
            p["number"],
            p.get("notify_url"),
            runtime=rt,
        )
    return [p["payout_cl_id"] for p in payouts]


def _creates(admin: Any, ids: Sequence[str]) -> int:
    return sum(int(admin.create_requests(i)) for i in ids)


def _queries(admin: Any) -> int:
    req = admin.stats().get("requests", {})
    return int(req.get("query_list", 0)) + int(req.get("query_single", 0))


def prove_pause(
    rt: Runtime, admin: Any, payouts: Sequence[dict[str, Any]], *, hold_s: float = 3.0
) -> ControlRow:
    """Pause, enqueue ``payouts``, watch ``hold_s`` seconds: no create may reach the gateway
    and every order stays received while queries go on; then resume."""
    pausing.pause(rt, reason="demo: gateway incident drill", by="demo")
    try:
        queries0 = _queries(admin)
        ids = _enqueue(rt, payouts)
        time.sleep(hold_s)
        sent = _creates(admin, ids)
        waiting = sum(1 for i in ids if rt.store.state_of(i) is State.RECEIVED)
        queried = _queries(admin) - queries0
    finally:
        pausing.resume(rt, by="demo")
    ok = sent == 0 and waiting == len(ids)
    return ControlRow(
        ok,
        f"pause: {len(ids)} orders enqueued while paused, {sent} create requests in {hold_s:g}s, "
        f"{waiting}/{len(ids)} waiting as received, {queried} queries meanwhile; resumed",
    )


def prove_balance_hold(
    rt: Runtime, admin: Any, payouts: Sequence[dict[str, Any]], *, timeout_s: float = 30.0
) -> ControlRow:
    """Empty the gateway balance, enqueue ``payouts``: 0018 must pause sending (source
    balance) without rejecting any order; then top up and wait for the poller to resume."""
    admin.set_balance(0)
    ids: list[str] = []
    try:
        ids = _enqueue(rt, payouts)
        deadline = time.monotonic() + timeout_s
        while pausing.paused_for(rt, None) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        pause = pausing.paused_for(rt, None)
        time.sleep(2.0)  # requests that passed the gate before the pause land (latency faults)
        sent = _creates(admin, ids)
        time.sleep(2.0)
        sent_later = _creates(admin, ids)
    finally:
        admin.set_balance(None)  # unlimited again: the poller sees it and resumes
    t0 = time.monotonic()
    while pausing.paused_for(rt, None) is not None and time.monotonic() - t0 < timeout_s:
        time.sleep(0.2)
    resumed_s = time.monotonic() - t0
    rejected = sum(1 for i in ids if rt.store.state_of(i) is State.REJECTED)
    still = pausing.paused_for(rt, None)
    ok = (
        pause is not None
        and pause.source == "balance"
        and sent == sent_later
        and rejected == 0
        and still is None
    )
    how = "no pause" if pause is None else f"paused ({pause.source}: {pause.reason})"
    return ControlRow(
        ok,
        f"balance hold: balance 0 -> {how} after {sent} create requests, none sent for 2s after, "
        f"{rejected} rejected; topped up -> "
        + ("resumed by the balance poller" if still is None else "STILL PAUSED")
        + f" in {resumed_s:.1f}s",
    )
