"""Approval and pause through the console over WSGI (the functions of worker.desk)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.console.conftest import SECRET, Client
from worker import keys
from worker.console import audit
from worker.console.security import csrf_token
from worker.producer import enqueue_payout
from worker.runtime import Runtime
from worker.states import State


@pytest.fixture
def approval_rt(make_runtime: Callable[..., Runtime]) -> Runtime:
    """A runtime with approval on: orders at or above 10,000.00 IDR wait for a checker."""
    return make_runtime(APPROVAL_ABOVE="1000000")


@pytest.fixture
def desk(make_client: Callable[..., Client], approval_rt: Runtime) -> Client:
    return make_client(approval_rt)


def awaiting(rt: Runtime, pid: str, requested_by: str) -> str:
    enqueue_payout(
        pid, 5_000_000, "BCA", "Budi Santoso", "12345678901234", runtime=rt, requested_by=requested_by
    )
    assert rt.store.state_of(pid) is State.AWAITING_APPROVAL
    return pid


def form(user: str, pid: str | None = None, **extra: str) -> dict[str, Any]:
    out: dict[str, Any] = {"csrf": csrf_token(SECRET, user), "expect_state": "awaiting_approval"}
    if pid:
        out["payout_cl_id"] = pid
    out.update(extra)
    return out


def test_the_requester_cannot_approve_and_another_approver_can(desk: Client, approval_rt: Runtime) -> None:
    """Maker-checker on the server: no button for one's own request, its POST 403, audited; bob approves."""
    # given
    pid = awaiting(approval_rt, "ap-1", "alice")
    # when
    page = desk.get("/approvals", user="alice").body
    own = desk.post("/do/approve", user="alice", form=form("alice", pid))
    other = desk.post("/do/approve", user="bob", form=form("bob", pid, next="/approvals"))
    # then
    assert "your request" in page and 'value="ap-1" form="bulk"' not in page
    assert own.status == 403
    assert other.status == 303 and other.headers["Location"] == "/console/approvals"
    order = approval_rt.store.require(pid)
    assert order.state is State.RECEIVED and order.fields["approved_by"] == "bob"
    assert audit.count(approval_rt.redis, "approve", "refused") == 1
    assert audit.count(approval_rt.redis, "approve", "ok") == 1


def test_reject_needs_a_reason(desk: Client, approval_rt: Runtime) -> None:
    """Reject without a reason: 400 and still waiting; with one: rejected, reason and actor in the history."""
    pid = awaiting(approval_rt, "rj-1", "otto")
    bare = desk.post("/do/reject", user="bob", form=form("bob", pid, reason=" "))
    assert bare.status == 400 and "reason is required" in bare.body
    assert approval_rt.store.state_of(pid) is State.AWAITING_APPROVAL
    ok = desk.post("/do/reject", user="bob", form=form("bob", pid, reason="duplicate of invoice 8812"))
    assert ok.status == 303
    order = approval_rt.store.require(pid)
    assert order.state is State.REJECTED
    assert order.history[-1]["reason"].startswith("rejected by bob: duplicate of invoice 8812")


def test_two_tabs_approving_the_same_order_make_one_transition(desk: Client, approval_rt: Runtime) -> None:
    """Concurrent approvals of one order: one 303, the others 409; one transition out of awaiting_approval."""
    pid = awaiting(approval_rt, "ap-race", "otto")
    barrier = threading.Barrier(4)
    results: list[int] = []

    def tab(user: str) -> None:
        barrier.wait()
        results.append(desk.post("/do/approve", user=user, form=form(user, pid)).status)

    threads = [threading.Thread(target=tab, args=(u,)) for u in ("alice", "bob", "alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [303, 409, 409, 409]
    order = approval_rt.store.require(pid)
    assert sum(1 for h in order.history if h["from"] == "awaiting_approval") == 1


def test_bulk_approve_reports_each_order(desk: Client, approval_rt: Runtime) -> None:
    """Approve a selection: each on its own; the approver's own request and a moved one are listed as such."""
    # given
    a = awaiting(approval_rt, "bk-1", "otto")
    b = awaiting(approval_rt, "bk-2", "bob")  # bob's own request
    c = awaiting(approval_rt, "bk-3", "otto")
    desk.post("/do/reject", user="alice", form=form("alice", c, reason="wrong account"))
    # when
    r = desk.post(
        "/do/bulk_approve", user="bob", form=[*form("bob").items(), ("id", a), ("id", b), ("id", c)]
    )
    # then
    assert r.status == 200 and "1 of 3 approved" in r.body
    assert approval_rt.store.state_of(a) is State.RECEIVED
    assert approval_rt.store.state_of(b) is State.AWAITING_APPROVAL
    assert approval_rt.store.state_of(c) is State.REJECTED
    assert audit.count(approval_rt.redis, "approve", "refused") == 1
    assert audit.count(approval_rt.redis, "approve", "conflict") == 1


def test_pause_and_resume_from_the_console(desk: Client, approval_rt: Runtime) -> None:
    """Pause needs a reason and shows a banner on every page; resume ends it; both audited with the actor."""
    # given / when
    bare = desk.post("/do/pause", user="otto", form={"csrf": csrf_token(SECRET, "otto"), "reason": ""})
    viewer = desk.post("/do/pause", user="vera", form={"csrf": csrf_token(SECRET, "vera"), "reason": "x"})
    paused = desk.post(
        "/do/pause", user="otto", form={"csrf": csrf_token(SECRET, "otto"), "reason": "INC-12"}
    )
    # then
    assert bare.status == 400 and viewer.status == 403 and paused.status == 303
    assert approval_rt.redis.hexists(keys.PAUSE, "*")
    for p in ("/", "/review", "/approvals", "/pause", "/search"):
        assert "Paused:" in desk.get(p, user="vera").body
    # when resumed
    resumed = desk.post("/do/resume", user="otto", form={"csrf": csrf_token(SECRET, "otto"), "bank": ""})
    # then
    assert resumed.status == 303 and not approval_rt.redis.hexists(keys.PAUSE, "*")
    assert "Paused:" not in desk.get("/", user="vera").body
    ok = [e for _, e in approval_rt.redis.xrange(keys.CONSOLE_AUDIT) if e["result"] == "ok"]
    assert [(e["actor"], e["action"]) for e in ok] == [("otto", "pause"), ("otto", "resume")]


@pytest.mark.parametrize(
    ("typed", "order_bank"),
    [("bca", "bca"), ("BCA", "bca"), ("bca", "BCA"), ("BCA SYARIAH", "bca syariah"), ("A&B-1.X", "a&b-1.x")],
)
def test_a_console_bank_pause_holds_its_bank_whatever_the_case(
    desk: Client, approval_rt: Runtime, typed: str, order_bank: str
) -> None:
    """D53: a per-bank pause typed in the console accepts every code a payout may carry
    (spaces, '.', '&', '-') and holds that bank's orders in any letter case, in the pre-send
    gate and in the sweep's routing; another bank's orders still go."""
    from worker.desk import gate, pausing

    # given an order of the bank, and one of another bank
    enqueue_payout("d53-own", 100_000, order_bank, "Budi Santoso", "12345678901234", runtime=approval_rt)
    enqueue_payout("d53-other", 100_000, "BNI", "Budi Santoso", "12345678901234", runtime=approval_rt)
    own, other = approval_rt.store.require("d53-own"), approval_rt.store.require("d53-other")
    # when an operator pauses the bank as typed
    r = desk.post(
        "/do/pause", user="otto", form={"csrf": csrf_token(SECRET, "otto"), "bank": typed, "reason": "INC-53"}
    )
    # then the pause holds the bank's order and not the other one
    assert r.status == 303, r.body
    hold = gate.pre_send(approval_rt, own)
    assert hold is not None and hold.kind == "pause"
    assert gate.pre_send(approval_rt, other) is None
    assert pausing.paused_for(approval_rt, order_bank) is not None
    # and a resume typed in another case ends it
    resumed = desk.post(
        "/do/resume", user="otto", form={"csrf": csrf_token(SECRET, "otto"), "bank": typed.swapcase()}
    )
    assert resumed.status == 303 and gate.pre_send(approval_rt, own) is None


def test_a_malformed_console_bank_code_is_refused_naming_the_rule(desk: Client, approval_rt: Runtime) -> None:
    """D53: a code no payout could carry is refused (400, the rule named), nothing paused."""
    r = desk.post(
        "/do/pause", user="otto", form={"csrf": csrf_token(SECRET, "otto"), "bank": "B/CA", "reason": "x"}
    )
    assert r.status == 400 and "bank: must be a bank code" in r.body
    assert not approval_rt.redis.exists(keys.PAUSE)
