"""The guarantee checker is not vacuous: it passes a consistent run and catches each violation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from worker.harness.invariants import Expected, check_logs, check_orders, check_store


def _ledger(*entries: dict[str, Any], after: dict[str, int] | None = None) -> dict[str, Any]:
    requests = {e["payout_cl_id"]: {"before": 1, "after": 0, "total": 1} for e in entries}
    for pid, n in (after or {}).items():
        requests[pid] = {"before": 1, "after": n, "total": 1 + n}
    return {"orders": list(entries), "create_requests": requests, "totals": {}}


def _entry(pid: str, status: int, amount: int = 100, **kw: Any) -> dict[str, Any]:
    return {
        "payout_cl_id": pid,
        "payout_id": f"P-{pid}",
        "amount": amount,
        "status": status,
        "callback_attempts": [],
        **kw,
    }


def _rec(state: str, amount: int = 100, reason: str = "", **fields: str) -> dict[str, Any]:
    return {
        "fields": {"state": state, "amount": str(amount), "reason": reason, **fields},
        "history": [{"to": state, "reason": reason}],
    }


def test_checker_passes_a_consistent_run() -> None:
    """Agreeing states, amounts and payout ids give no violation."""
    expected = {i: Expected(100, "1234567890", "n") for i in ("a", "b", "c", "d")}
    stored = {
        "a": _rec("succeeded", payout_id="P-a"),
        "b": _rec("failed", payout_id="P-b"),
        "c": _rec("rejected"),
        "d": _rec("review", reason="not found at the gateway 16s after sending"),
    }
    verdict = check_orders(expected, stored, _ledger(_entry("a", 3), _entry("b", 5)))
    assert verdict.ok, verdict.violations
    assert verdict.figures["paid_minor_ours"] == verdict.figures["paid_minor_gateway"] == 100


@pytest.mark.parametrize(
    ("stored", "ledger", "needle"),
    [
        ({"a": _rec("succeeded", payout_id="P-a")}, _ledger(_entry("a", 3), after={"a": 1}), "created twice"),
        ({}, _ledger(), "lost: a: no record"),
        ({"a": _rec("unconfirmed")}, _ledger(_entry("a", 3)), "lost: a: still unconfirmed"),
        ({"a": _rec("review")}, _ledger(), "without a reason"),
        ({"a": _rec("succeeded", payout_id="P-a")}, _ledger(_entry("a", 4)), "wrong: a: succeeded here"),
        ({"a": _rec("failed", payout_id="P-a")}, _ledger(_entry("a", 3)), "wrong: a: failed here"),
        ({"a": _rec("rejected")}, _ledger(_entry("a", 3)), "rejected here, but the gateway created it"),
        ({"a": _rec("succeeded", payout_id="P-x")}, _ledger(_entry("a", 3)), "payout_id"),
        ({"a": _rec("succeeded", payout_id="P-a")}, _ledger(_entry("a", 3, amount=999)), "gateway amount"),
        (
            {"a": _rec("review", reason="conflict: succeeded but callback says status 4")},
            _ledger(_entry("a", 4)),
            "after a disagreement",
        ),
        ({"a": _rec("rejected")}, _ledger(_entry("zzz", 3)), "unknown payout at the gateway: zzz"),
        (
            {
                "a": {
                    "fields": {"state": "succeeded", "amount": "100", "payout_id": "P-a"},
                    "history": [{"to": "succeeded", "reason": "callback: status 3"}],
                }
            },
            _ledger(_entry("a", 3, callback_attempts=[{"http_status": 401, "acked": False}])),
            "forged callback applied",
        ),
        (
            {"a": _rec("succeeded", payout_id="P-a")},
            _ledger(_entry("a", 3, callback_attempts=[{"http_status": 401, "acked": True}])),
            "wrong key was acknowledged",
        ),
    ],
)
def test_checker_catches_each_violation(stored: Any, ledger: Any, needle: str) -> None:
    """Each broken guarantee is reported (the chaos run's green is not vacuous)."""
    verdict = check_orders({"a": Expected(100, "1234567890", "n")}, stored, ledger)
    assert not verdict.ok
    assert any(needle in v for v in verdict.violations), verdict.violations


def test_log_check_catches_leaks_and_unbound_events(tmp_path: Path) -> None:
    """Account numbers, names, keys, tokens and signatures in a log line are leaks; a payout.*
    JSON event without payout_cl_id is reported; masked numbers and other events pass."""
    log = tmp_path / "worker0.log"
    log.write_text(
        "\n".join(
            [
                '{"event": "payout.transition", "payout_cl_id": "a", "number": "******7890"}',
                '{"event": "payouts.sweep", "leased": 3}',
                '{"event": "payout.submit.missing"}',
                "debug number=123456789012",
                "name Penerima 000001 here",
                "key secret-key-xyz",
                "sign " + "ab" * 32,
                "2026-11-24 09:03:26 [info     ] payout.callback   applied=changed payout_cl_id=a",
            ]
        )
        + "\n"
    )
    verdict = check_logs(
        [log],
        numbers={"123456789012", "1234567890"},
        name_pattern=re.compile(r"Penerima [0-9]{6}"),
        secrets={"platform key": "secret-key-xyz"},
    )
    text = "\n".join(verdict.violations)
    assert "worker0.log:3: payout.submit.missing" in text
    for n, what in ((4, "account number"), (5, "beneficiary name"), (6, "platform key"), (7, "signature")):
        assert f"worker0.log:{n}: " in text and what in text
    assert "worker0.log:8: not JSON" in text
    assert "worker0.log:1:" not in text and "worker0.log:2:" not in text


def test_store_check_catches_a_lost_event_and_a_drifted_count() -> None:
    """An order whose final transition is missing from the events stream, a counts hash that
    disagrees with the records, and a review order missing from the review index are reported."""
    stored = {
        "a": {
            "fields": {"state": "succeeded"},
            "history": [{"from": "", "to": "received"}, {"from": "received", "to": "succeeded"}],
        },
        "b": {"fields": {"state": "review"}, "history": [{"from": "", "to": "review"}]},
    }
    events = [
        {"payout_cl_id": "a", "from": "", "to": "received"},
        {"payout_cl_id": "b", "from": "", "to": "review"},
    ]
    text = "\n".join(check_store(stored, events, {"succeeded": 2, "review": 1}, []).violations)
    assert "events stream: a:" in text and "counts hash" in text
    assert "review index: 0 extra, 1 missing" in text
    ok = check_store(
        stored,
        [*events, {"payout_cl_id": "a", "from": "received", "to": "succeeded"}],
        {"succeeded": 1, "review": 1, "failed": 0},
        ["b"],
    )
    assert ok.ok, ok.violations
