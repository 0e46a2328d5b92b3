"""One gate for money (issue 19): every rule enforced where the state changes, on the
store's clock (Redis ``TIME``), against a real Redis with the real Lua."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from worker import keys
from worker import moves as moves_module
from worker import submission as submission_module
from worker.checks import apply_callback, check_window, is_due_for_check
from worker.desk import approval, order_actions, reads
from worker.errors import ApprovalRefused, DuplicatePayout, LossEpochPending, OverrideRequired
from worker.gateway import CreateResult, Outcome, QueryKind, QueryResult
from worker.moves import move
from worker.producer import store_payout
from worker.reports import ReportResult
from worker.runtime import Runtime
from worker.states import State
from worker.store import NOW
from worker.submission import SubmitStatus, submit_order
from worker.sweep import sweep_due

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


class Logged:
    """Stands in for a module's structlog logger (a cached logger escapes capture_logs)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _log(self, level: str) -> Any:
        return lambda event, **kw: self.events.append({"event": event, "log_level": level, **kw})

    def __getattr__(self, level: str) -> Any:
        return self._log(level)


class _ResultsRecorded:
    """The runtime's dispatcher with its results recorded here (submits go on as before)."""

    def __init__(self, inner: Any, sent: list[dict[str, Any]]) -> None:
        self.inner, self.sent = inner, sent

    def submit(self, payout_cl_id: str) -> None:
        self.inner.submit(payout_cl_id)

    def result(self, name: str, payload: Any) -> None:
        self.sent.append(dict(payload))


def results_runtime(make_runtime: Any, **env: Any) -> tuple[Runtime, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    rt: Runtime = make_runtime(RESULT_TASK="webapp.payout_result", **env)
    rt.dispatch = _ResultsRecorded(rt.dispatch, sent)
    return rt, sent


# ------------------------------------------------------------------ the seam


def test_every_move_logs_one_transition_and_finals_are_delivered(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each applied move logs exactly one payout.transition (as many as history entries);
    a move into a final state is handed to result delivery by the seam itself."""
    # given an order held for approval
    rt, sent = results_runtime(make_runtime, APPROVAL_ABOVE="1000000")
    store_payout(rt, data("mg-seam"))
    logged = Logged()
    monkeypatch.setattr(moves_module, "log", logged)
    # when a checker rejects it (controls -> the seam)
    approval.reject(rt, "mg-seam", by="checker", note="no")
    # then one event, one published result, flag cleared
    moves = [e for e in logged.events if e["event"] == "payout.transition"]
    assert [(e["from"], e["to"]) for e in moves] == [("awaiting_approval", "rejected")]
    assert [p["state"] for p in sent] == ["rejected"]
    assert "result_pending" not in rt.store.require("mg-seam").fields


def test_refused_and_field_only_moves_log_nothing(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused compare-and-set and a field-only update write no transition log."""
    # given
    rt, sent = results_runtime(make_runtime)
    store_payout(rt, data("mg-quiet", amount=10_000))
    logged = Logged()
    monkeypatch.setattr(moves_module, "log", logged)
    # when
    refused = move(rt, "mg-quiet", State.SUCCEEDED, reason="x")
    kept = move(rt, "mg-quiet", None, sources={State.RECEIVED}, reason="touch", fields={"k": "v"})
    # then
    assert refused is None and kept is State.RECEIVED
    assert logged.events == [] and sent == []


# ------------------------------------------------------------------ the loss-epoch guard


def _other_server(rt: Runtime) -> None:
    """What a restart or failover looks like to the store: another recorded identity."""
    rt.redis.set(keys.SERVER, "0" * 40 + ":" + "1" * 40)


def test_claim_detects_a_new_server_without_a_new_connection(make_runtime: Any) -> None:
    """D37: the claim itself compares the server's identity with the recorded one and records
    the loss epoch atomically, so a connection kept open across a failover (a proxy) cannot
    claim an order stored before it; an order stored after the epoch is claimable."""
    # given: an order stored, then the server "changes" under an open connection
    rt = make_runtime()
    store_payout(rt, data("mg-ep1", amount=10_000))
    rt.redis.get(keys.SERVER)  # the pooled connection is open and checked
    _other_server(rt)
    # when: the next claim runs on the same connection
    with pytest.raises(LossEpochPending) as refused:
        rt.store.claim("mg-ep1", reason="claimed", due=time.time() + 30, fields={})
    # then: the epoch was recorded by the claim, and the order stays received
    assert refused.value.epoch_no == "1" and rt.store.loss_epoch()[0] == 1
    assert rt.store.state_of("mg-ep1") is State.RECEIVED
    store_payout(rt, data("mg-ep2", amount=10_000))
    assert rt.store.claim("mg-ep2", reason="claimed", due=time.time() + 30, fields={}) == 1


def test_caller_clocks_play_no_part(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """D36/D35: a producer and a worker whose clocks run an hour fast store created_at and
    submitted_at on the Redis server's clock; the order still predates a later epoch, and
    the sweep (on the server's clock) does not find the fresh claim stale."""
    # given: this host's clock an hour fast for the producer and the claim
    rt = make_runtime()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    store_payout(rt, data("mg-skew", amount=10_000))
    order = rt.store.require("mg-skew")
    server = rt.store.server_time()
    assert abs(order.created_at - server) < 2 and order.fields["ep"] == "0"
    # the re-drive time is relative: due about SUBMIT_REDRIVE after the server's now
    assert order.due_at is not None and order.due_at - server < rt.settings.submit_redrive_s + 2
    assert (
        rt.store.claim("mg-skew", reason="claimed", due=time.time() + 30, fields={"submitted_at": NOW}) == 1
    )
    claimed = rt.store.require("mg-skew")
    assert claimed.submitted_at is not None and abs(claimed.submitted_at - server) < 2
    monkeypatch.setattr(time, "time", real)
    # when: the sweep runs on the server's clock
    out = sweep_due(rt)
    # then: not stale, not moved
    assert out.unconfirmed == [] and rt.store.state_of("mg-skew") is State.SUBMITTING
    # and after a restart the order (created_at an hour "ahead") is still guarded
    move(rt, "mg-skew", State.RECEIVED, sources={State.SUBMITTING}, reason="test: back", quiet=True)
    _other_server(rt)
    with pytest.raises(LossEpochPending):
        rt.store.claim("mg-skew", reason="claimed", due=time.time() + 30, fields={})


# ------------------------------------------------------------------ final means final


def _rejected_duplicate(rt: Runtime) -> None:
    """WD-2 held as a suspected duplicate of WD-1, then rejected by a checker (D38's R6)."""
    store_payout(rt, data("mg-wd1", amount=10_000, requested_by="maker"))
    store_payout(rt, data("mg-wd2", amount=10_000, requested_by="maker"))
    assert rt.store.require("mg-wd2").fields["dup_of"] == "mg-wd1"
    approval.reject(rt, "mg-wd2", by="checker", note="duplicate of mg-wd1")


def test_published_final_is_never_sendable_without_two_people(make_runtime: Any) -> None:
    """D38: a checker-rejected duplicate is refused by the store's transition itself, whatever
    the entry point (resubmit, a console, a direct move): no override, the same person twice,
    or one name only; dup_of stays. Two different people move it, recorded in the history."""
    # given
    rt = make_runtime(APPROVAL_ABOVE="100000000", DUPLICATE_KEY="k" * 32, DUPLICATE_WINDOW="3600")
    _rejected_duplicate(rt)
    # when / then: every attempt without a second person is refused, nothing changes
    for fields in ({}, {"override_by": "maker"}, {"override_by": "maker", "override_approved_by": "maker"}):
        with pytest.raises(OverrideRequired):
            move(rt, "mg-wd2", State.RECEIVED, sources={State.REJECTED}, reason="resubmit", fields=fields)
    with pytest.raises(OverrideRequired):
        order_actions.resubmit(rt, "mg-wd2", by="maker")
    with pytest.raises(OverrideRequired):
        order_actions.resubmit(rt, "mg-wd2", by="maker", force=True, note="sure", approved_by="maker")
    order = rt.store.require("mg-wd2")
    assert order.state is State.REJECTED and order.fields["dup_of"] == "mg-wd1"
    # when: two people override it
    prev = move(
        rt,
        "mg-wd2",
        State.RECEIVED,
        sources={State.REJECTED},
        reason="override",
        fields={"override_by": "maker", "override_approved_by": "boss"},
    )
    # then
    assert prev is State.REJECTED
    reopened = rt.store.require("mg-wd2")
    assert reopened.fields["override_approved_by"] == "boss" and reopened.history[-1]["reason"] == "override"


def test_expired_approval_cannot_be_approved(make_runtime: Any) -> None:
    """D52: the approve step itself checks the approval deadline (the Redis server's clock),
    so a stale order cannot be approved while the sweep is down; it stays awaiting_approval."""
    # given: an order whose approval deadline has passed (no sweep ran)
    rt = make_runtime(APPROVAL_ABOVE="1000000", APPROVAL_TTL="60")
    store_payout(rt, data("mg-late", requested_by="maker"))
    rt.redis.hset(keys.order("mg-late"), "approval_until", f"{rt.store.server_time() - 1:.3f}")
    # when / then
    with pytest.raises(ApprovalRefused, match="deadline"):
        approval.approve(rt, "mg-late", by="checker")
    assert rt.store.state_of("mg-late") is State.AWAITING_APPROVAL


def test_results_owed_is_the_stores_word(make_runtime: Any) -> None:
    """D44: a process without RESULT_TASK (a console in the web app) that makes an order final
    still flags its result while the workers' switch is on; with the switch off the sweep
    clears a left-over flag and unschedules the order."""
    # given: the workers publish results (switch on); this process has no RESULT_TASK
    rt = make_runtime(APPROVAL_ABOVE="1000000")
    rt.redis.set(keys.RESULTS, "15.0")
    store_payout(rt, data("mg-owed", requested_by="maker"))
    # when
    approval.reject(rt, "mg-owed", by="checker", note="no")
    # then: owed, and due for the sweep's re-send
    order = rt.store.require("mg-owed")
    assert order.result_pending and order.due_at is not None
    # when: the workers turn results off (the sweep writes the switch from its settings)
    out = sweep_due(rt, now=rt.store.server_time() + 60)
    # then
    order = rt.store.require("mg-owed")
    assert not rt.redis.exists(keys.RESULTS) and out.results == 0
    assert not order.result_pending and order.due_at is None


# ------------------------------------------------------------------ evidence survives


class AnswerAfterLoss:
    """A gateway whose create is answered 0000 after ``lose`` ran (the store loses something
    while the POST is out); queries say "not found" (a lagging list)."""

    def __init__(self, rt: Runtime, lose: Any) -> None:
        self.cfg, self.lose, self.creates = rt.settings.require_gateway(), lose, 0

    def create_payout(self, *_: Any, **__: Any) -> Any:
        self.creates += 1
        self.lose()
        return CreateResult(Outcome.ACCEPTED, "ok", "0000", "PO-LOST")

    def query_order(self, *_: Any, **__: Any) -> Any:
        return QueryResult(QueryKind.NOT_FOUND, "empty list")

    def close(self) -> None:
        pass


def test_answer_for_a_lost_order_retires_the_id(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """D40: the store lost the whole order (and its tombstone) while the create was out; the
    answer re-writes the tombstone, parks the payout_id under the id, and a re-enqueue of the
    same id is refused: it is never sent again."""
    # given
    rt = make_runtime()
    store_payout(rt, data("mg-lost", amount=10_000))

    def lose() -> None:
        rt.redis.delete(keys.order("mg-lost"), keys.history("mg-lost"))
        rt.redis.hdel(keys.IDS, "mg-lost")

    gw = AnswerAfterLoss(rt, lose)
    rt._gateway = gw  # type: ignore[assignment]
    logged = Logged()
    monkeypatch.setattr(submission_module, "log", logged)
    # when
    submit_order(rt, "mg-lost")
    # then
    parked = json.loads(rt.redis.hget(keys.LOST, "mg-lost"))
    assert parked["payout_id"] == "PO-LOST" and rt.redis.hexists(keys.IDS, "mg-lost")
    lost = [e for e in logged.events if e["event"] == "payout.answer_for_lost_order"]
    assert [(e["log_level"], e["payout_id"]) for e in lost] == [("error", "PO-LOST")]
    with pytest.raises(DuplicatePayout):
        store_payout(rt, data("mg-lost", amount=10_000))
    assert gw.creates == 1 and rt.store.get("mg-lost") is None
    assert reads.stats(rt)["lost_answers"] == 1  # shown to the operator


def test_answer_for_a_lost_claim_records_the_create(make_runtime: Any) -> None:
    """D40: the claim was lost (the order is received again) when the create's answer comes:
    the order moves to unconfirmed with the payout_id; the next submit sends nothing."""
    # given
    rt = make_runtime()
    store_payout(rt, data("mg-claim", amount=10_000))

    def lose() -> None:
        move(rt, "mg-claim", State.RECEIVED, sources={State.SUBMITTING}, reason="test: lost", quiet=True)

    gw = AnswerAfterLoss(rt, lose)
    rt._gateway = gw  # type: ignore[assignment]
    # when
    submit_order(rt, "mg-claim")
    # then
    order = rt.store.require("mg-claim")
    assert order.state is State.UNCONFIRMED and order.payout_id == "PO-LOST"
    assert submit_order(rt, "mg-claim") is SubmitStatus.NOT_RECEIVED and gw.creates == 1


# ------------------------------------------------------------------ one report path


class PagedGateway:
    """A list query answering fixed pages (records of our ids and others'); single queries fail."""

    def __init__(self, rt: Runtime, pages: list[list[QueryResult]], total: int) -> None:
        self.cfg, self.pages, self.total, self.calls = rt.settings.require_gateway(), pages, total, 0

    def query_window(self, *, offset: int = 0, **_: Any) -> Any:
        self.calls += 1
        return (self.pages[self.calls - 1] if self.calls <= len(self.pages) else []), self.total

    def query_order(self, *_: Any, **__: Any) -> Any:
        return QueryResult(QueryKind.ERROR, "not used")

    def close(self) -> None:
        pass


def _accepted(rt: Runtime, pid: str, payout_id: str) -> None:
    store_payout(rt, data(pid, amount=10_000))
    rt.store.claim(pid, reason="claimed", due=time.time() + 30, fields={"submitted_at": NOW})
    move(rt, pid, State.ACCEPTED, reason="0000", fields={"payout_id": payout_id}, due=time.time() + 60)


def record(pid: str, payout_id: str, status: str = "1") -> QueryResult:
    rec = {"payout_cl_id": pid, "payout_id": payout_id, "status": status}
    return QueryResult(
        QueryKind.FOUND, "found", status=status, payout_id=payout_id, amount="10000", record=rec
    )


def test_batch_counts_records_per_id_across_pages(make_runtime: Any) -> None:
    """D43: two payouts for one id on different pages of a window send it to review (not the
    first record applied); a window not read to its end within CHECK_BATCH_PAGES hands its
    ids to single checks (returned), never "due now" again for another batch."""
    # given: b-1 appears twice (page 1 and page 2); b-2 once; the window has more pages
    rt = make_runtime(CHECK_BATCH_PAGES="2")
    for pid in ("b-1", "b-2"):
        _accepted(rt, pid, f"PO-{pid}")
    pages = [[record("b-1", "PO-b-1"), record("x", "PO-x")], [record("b-1", "PO-9"), record("b-2", "PO-b-2")]]
    rt._gateway = PagedGateway(rt, pages, total=4)  # type: ignore[assignment]
    # when: the whole window fits in two pages
    rest = check_window(rt, ["b-1", "b-2"])
    # then
    assert rest == [] and rt.store.state_of("b-1") is State.REVIEW
    assert rt.store.state_of("b-2") is State.ACCEPTED
    # given: a window larger than the page budget (a gateway ignoring the time filter)
    _accepted(rt, "b-3", "PO-b-3")
    gw = PagedGateway(rt, [[record("y", "PO-y")], [record("z", "PO-z")]], total=10_000)
    rt._gateway = gw  # type: ignore[assignment]
    # when
    rest = check_window(rt, ["b-2", "b-3"])
    # then: the page budget held, and both go to single checks (their lease still stands)
    assert gw.calls == 2 and sorted(rest) == ["b-2", "b-3"]
    order = rt.store.get("b-3", with_history=False)
    assert order is not None and is_due_for_check(order, rt.store.server_time())


def test_callbacks_follow_the_query_rules(make_runtime: Any) -> None:
    """D43: a verified callback goes through the same rules as a query: an order past
    MAX_ORDER_AGE reported still open goes to review; a callback naming another payout_id
    than ours (two payouts for one id) goes to review; a final report is applied."""
    # given
    rt = make_runtime(MAX_ORDER_AGE="60")
    for pid in ("cb-old", "cb-two", "cb-ok"):
        _accepted(rt, pid, f"PO-{pid}")
    old_at = f"{rt.store.server_time() - 120:.3f}"
    rt.redis.hset(keys.order("cb-old"), mapping={"created_at": old_at, "submitted_at": old_at})
    # when
    old = apply_callback(rt, rt.store.require("cb-old"), status="2", payout_id="PO-cb-old", amount="10000")
    two = apply_callback(rt, rt.store.require("cb-two"), status="3", payout_id="PO-other", amount="10000")
    ok = apply_callback(rt, rt.store.require("cb-ok"), status="3", payout_id="PO-cb-ok", amount="10000")
    # then
    assert old is ReportResult.CONFLICT and rt.store.state_of("cb-old") is State.REVIEW
    assert two is ReportResult.CONFLICT and rt.store.require("cb-two").fields["other_payout_id"] == "PO-other"
    assert ok is ReportResult.CHANGED and rt.store.state_of("cb-ok") is State.SUCCEEDED


def test_an_overridden_order_moves_as_usual_until_final_again(make_runtime: Any) -> None:
    """D38: the two-person override clears the published-final mark, so the resent order's own
    moves (approval, holds) are ordinary; once final again it is final again."""
    # given: a rejected order, overridden by two people; approval is needed for its amount
    rt = make_runtime(APPROVAL_ABOVE="1000000")
    store_payout(rt, data("mg-ovr", requested_by="maker"))
    approval.reject(rt, "mg-ovr", by="checker", note="no")
    two = {"override_by": "maker", "override_approved_by": "boss"}
    move(rt, "mg-ovr", State.RECEIVED, sources={State.REJECTED}, reason="override", fields=two)
    assert "fin" not in rt.store.require("mg-ovr").fields
    # when: it needs approval again, and a checker approves it
    approval.request_approval(rt, rt.store.require("mg-ovr"), "awaiting approval: above APPROVAL_ABOVE")
    approval.approve(rt, "mg-ovr", by="checker")
    # then
    assert rt.store.state_of("mg-ovr") is State.RECEIVED
    # and once final again, one person cannot reopen it
    approval.request_approval(rt, rt.store.require("mg-ovr"), "again")
    approval.reject(rt, "mg-ovr", by="checker", note="no again")
    with pytest.raises(OverrideRequired):
        move(rt, "mg-ovr", State.RECEIVED, sources={State.REJECTED}, reason="one person", fields={})
