"""Operator controls end to end: real Celery worker and beat, real Redis, the sandbox over HTTP."""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import redis
from celery import Celery

from tests.helpers import Stack
from worker import keys
from worker.desk import pausing
from worker.harness.processes import RedisServer, wait_for
from worker.ops.cli import main as cli
from worker.producer import enqueue_payout, store_payout
from worker.sandbox.process import SandboxProcess
from worker.states import FINAL, State
from worker.sweep import sweep_due


def account(pid: str) -> str:
    """A distinct account number per id, so the duplicate guard never mixes tests up."""
    return str(10**9 + zlib.crc32(pid.encode()) % 10**9)


def payout(pid: str, amount: int = 5_000_000) -> dict[str, Any]:
    return {"payout_cl_id": pid, "amount": amount, "bank_name": "BCA", "name": "Wati", "number": account(pid)}


def enqueue(
    stack: Stack,
    pid: str,
    *,
    amount: int = 5_000_000,
    number: str | None = None,
    requested_by: str | None = None,
    allow_duplicate: bool = False,
) -> None:
    enqueue_payout(
        pid,
        amount,
        "BCA",
        "Wati",
        number or account(pid),
        runtime=stack.rt,
        requested_by=requested_by,
        allow_duplicate=allow_duplicate,
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def requests_for(gateway: SandboxProcess, ids: list[str]) -> int:
    return sum(gateway.admin.create_requests(i) for i in ids)


def all_final(stack: Stack, ids: list[str], timeout_s: float = 60.0) -> None:
    for i in ids:
        stack.wait_state(i, *FINAL, timeout_s=timeout_s)


@pytest.fixture
def controlled(
    make_stack: Callable[..., Stack], gateway: SandboxProcess, use_env: Callable[..., Any]
) -> Callable[..., Stack]:
    """A stack (worker, beat, receiver) whose CLI commands in this process see the same settings."""

    def make(**env: Any) -> Stack:
        use_env(gateway.url, **env)
        s = make_stack(gateway.url, PAYOUT_BANK_LIST="BCA,BNI,BRI,MANDIRI", **env)
        s.start_callbacks()
        s.start_worker()
        s.start_beat()
        s.wait_workers_ready()
        return s

    return make


def test_pause_stops_creates_but_not_queries(
    controlled: Callable[..., Stack], gateway: SandboxProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """While paused no create request reaches the gateway and orders stay received; queries
    go on; the pause shows in stats and health (healthy); after resume every order is final."""
    # given: one order at the gateway that stays in processing (so it keeps being queried)
    gateway.admin.add_fault({"kind": "outcome", "status": 2, "match": "^pz-open"})
    stack = controlled(PAUSE_RECHECK="0.5")
    enqueue(stack, "pz-open")
    stack.wait_state("pz-open", State.ACCEPTED)
    # when: paused, then more orders arrive
    code, out = run(capsys, "pause", "--reason", "gateway incident INC-7", "--by", "ana")
    assert code == 0 and "paused every bank" in out
    ids = [f"pz-{n}" for n in range(6)]
    for i in ids:
        enqueue(stack, i)
    queries_before = gateway.admin.stats()["requests"].get("query_list", 0)
    time.sleep(4.0)  # several sweeps and re-checks: a window in which nothing may be sent
    # then
    assert requests_for(gateway, ids) == 0
    assert all(stack.state(i) is State.RECEIVED for i in ids)
    assert gateway.admin.stats()["requests"].get("query_list", 0) > queries_before
    held = stack.rt.store.require("pz-0")
    assert all(h["to"] != "submitting" for h in held.history)
    code, out = run(capsys, "stats", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["paused"][0]["reason"] == "gateway incident INC-7"
    code, out = run(capsys, "health")
    assert code == 0 and "paused: * (operator: gateway incident INC-7)" in out
    # when: resumed
    code, out = run(capsys, "resume", "--by", "ana")
    assert code == 0 and "resumed" in out
    # then
    all_final(stack, ids)
    assert all(stack.state(i) is State.SUCCEEDED for i in ids)
    assert all(gateway.admin.payouts_created(i) == 1 for i in ids)
    gateway.admin.force_status("pz-open", 3)
    stack.wait_state("pz-open", State.SUCCEEDED)


def test_bank_pause_holds_only_that_bank(controlled: Callable[..., Stack], gateway: SandboxProcess) -> None:
    """A pause of one bank holds its orders; other banks' orders are sent as usual."""
    # given
    stack = controlled(PAUSE_RECHECK="0.5")
    pausing.pause(stack.rt, reason="BNI maintenance", by="ana", bank="BNI")
    # when
    enqueue_payout("bk-bca", 5_000_000, "BCA", "Wati", "1000000001", runtime=stack.rt)
    enqueue_payout("bk-bni", 5_000_000, "BNI", "Wati", "1000000002", runtime=stack.rt)
    stack.wait_state("bk-bca", State.SUCCEEDED, timeout_s=30)
    # then
    assert stack.state("bk-bni") is State.RECEIVED and gateway.admin.create_requests("bk-bni") == 0
    pausing.resume(stack.rt, by="ana", bank="BNI")
    stack.wait_state("bk-bni", State.SUCCEEDED, timeout_s=60)


def test_balance_runs_out_and_returns(controlled: Callable[..., Stack], gateway: SandboxProcess) -> None:
    """0018 never makes an order rejected: it waits, submissions pause (source balance), and the
    balance poller resumes once the gateway balance covers it; then every order is final."""
    # given: no money at the gateway
    gateway.admin.set_balance(0)
    stack = controlled(PAUSE_RECHECK="0.5", BALANCE_POLL_INTERVAL="0.5")
    ids = [f"bal-{n}" for n in range(10)]
    # when
    for i in ids:
        enqueue(stack, i)
    wait_for(lambda: pausing.paused_for(stack.rt, "BCA") is not None, 30, what="the balance pause")
    # then: paused automatically, with the reason; nothing rejected; sending stopped
    p = pausing.paused_for(stack.rt, "BCA")
    assert p is not None and p.source == "balance" and "0018" in p.reason and p.need == 5_000_000
    time.sleep(1.5)  # let in-flight answers land
    sent = requests_for(gateway, ids)
    time.sleep(3.0)
    assert requests_for(gateway, ids) == sent, "creates went on while the balance was out"
    assert all(stack.state(i) in (State.RECEIVED, State.SUBMITTING) for i in ids)
    held = [stack.rt.store.require(i) for i in ids if gateway.admin.create_requests(i)]
    assert held and all(o.fields.get("held", "").startswith("held: 0018") for o in held)
    assert any(e.get("event") == "payouts.paused" and e.get("level") == "error" for e in stack.json_logs())
    # when: the merchant tops up
    gateway.admin.set_balance(10**12)
    # then
    all_final(stack, ids, timeout_s=90)
    assert {stack.state(i) for i in ids} == {State.SUCCEEDED}
    assert pausing.paused_for(stack.rt, "BCA") is None
    assert stack.rt.store.counts()["rejected"] == 0


def test_insufficient_window_never_rejects(controlled: Callable[..., Stack], gateway: SandboxProcess) -> None:
    """A window in which every create answers 0018 (whatever the balance endpoint says):
    no order ends rejected; all are final after the window."""
    # given: the window stays open until a create met it (waited for: a timed window could
    # close before a loaded machine's worker sent anything)
    gateway.admin.insufficient_balance()
    stack = controlled(PAUSE_RECHECK="0.5", BALANCE_POLL_INTERVAL="0.5")
    ids = [f"win-{n}" for n in range(8)]
    # when
    for i in ids:
        enqueue(stack, i)
    wait_for(
        lambda: any("0018" in h["reason"] for i in ids for h in stack.rt.store.require(i).history),
        90,
        interval_s=0.2,
        what="a create answered 0018",
    )
    gateway.admin.clear_insufficient_balance()
    # then
    all_final(stack, ids, timeout_s=90)
    assert {stack.state(i) for i in ids} == {State.SUCCEEDED}


def test_approval_maker_checker(
    controlled: Callable[..., Stack], gateway: SandboxProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """An order at/above APPROVAL_ABOVE is never sent unapproved; its requester cannot approve
    it; another person's approval sends it; smaller orders go straight through."""
    # given
    stack = controlled(APPROVAL_ABOVE="6000000")
    enqueue(stack, "ap-big", amount=7_000_000, requested_by="maker")
    enqueue(stack, "ap-small", amount=5_000_000)
    stack.wait_state("ap-small", State.SUCCEEDED, timeout_s=30)
    time.sleep(2.0)
    # then
    assert stack.state("ap-big") is State.AWAITING_APPROVAL and gateway.admin.create_requests("ap-big") == 0
    code, out = run(capsys, "list", "--state", "awaiting_approval")
    assert code == 0 and "ap-big" in out
    code, out = run(capsys, "approve", "ap-big", "--by", "maker")
    assert code == 1 and "cannot approve" in out
    assert stack.state("ap-big") is State.AWAITING_APPROVAL
    # when
    code, out = run(capsys, "approve", "ap-big", "--by", "checker")
    # then
    assert code == 0 and "ap-big: received" in out
    stack.wait_state("ap-big", State.SUCCEEDED, timeout_s=30)
    history = [h["to"] for h in stack.rt.store.require("ap-big").history]
    assert history[:3] == ["received", "awaiting_approval", "received"]
    code, out = run(capsys, "show", "ap-big")
    assert "approved by checker" in out


def test_bulk_approve_from_csv_and_reject(
    controlled: Callable[..., Stack],
    gateway: SandboxProcess,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    """Bulk approve by CSV approves each listed order; reject makes an order rejected, never sent."""
    # given
    stack = controlled(APPROVAL_ABOVE="1000000")
    ids = [f"bulk-{n}" for n in range(4)]
    for i in [*ids, "bulk-no"]:
        enqueue(stack, i, requested_by="maker")
    csv_path = tmp_path / "approve.csv"
    csv_path.write_text("payout_cl_id,note\n" + "".join(f"{i},ok\n" for i in ids), encoding="utf-8")
    # when
    code, out = run(capsys, "approve", "--csv", str(csv_path), "--by", "checker")
    code2, out2 = run(capsys, "reject", "bulk-no", "--by", "checker", "--note", "beneficiary unknown")
    # then
    assert code == 0 and "4 approved, 0 refused" in out
    assert code2 == 0 and "bulk-no: rejected" in out2
    all_final(stack, ids)
    assert {stack.state(i) for i in ids} == {State.SUCCEEDED}
    assert stack.state("bulk-no") is State.REJECTED and gateway.admin.create_requests("bulk-no") == 0


def test_approval_expires(controlled: Callable[..., Stack], gateway: SandboxProcess) -> None:
    """An approval request not answered within APPROVAL_TTL ends rejected with the reason."""
    # given
    stack = controlled(APPROVAL_ABOVE="1000000", APPROVAL_TTL="2")
    enqueue(stack, "exp-1")
    # when
    stack.wait_state("exp-1", State.REJECTED, timeout_s=30)
    # then
    order = stack.rt.store.require("exp-1")
    assert order.reason.startswith("approval expired") and gateway.admin.create_requests("exp-1") == 0


def test_duplicate_beneficiary_guard(controlled: Callable[..., Stack], gateway: SandboxProcess) -> None:
    """The same bank+account+amount under a new id within DUPLICATE_WINDOW goes to review
    (approval off) and is never sent; allow_duplicate sends it."""
    # given
    stack = controlled(DUPLICATE_KEY="test-dup-key", DUPLICATE_WINDOW="600")
    enqueue(stack, "dup-1", number="7001002003")
    # when
    enqueue(stack, "dup-2", number="7001002003")
    enqueue(stack, "dup-3", number="7001002003", allow_duplicate=True)
    # then
    stack.wait_state("dup-1", State.SUCCEEDED, timeout_s=30)
    stack.wait_state("dup-3", State.SUCCEEDED, timeout_s=30)
    order = stack.rt.store.require("dup-2")
    assert order.state is State.REVIEW and order.fields["dup_of"] == "dup-1"
    assert gateway.admin.create_requests("dup-2") == 0
    assert all("7001002003" not in k for k in stack.redis.scan_iter("payouts:dup:*"))


def _results(client: redis.Redis, queue: str = "payouts.results") -> list[dict[str, Any]]:
    """The RESULT_TASK messages waiting in a Redis broker list (kombu's JSON envelope)."""
    out = []
    for raw in client.lrange(queue, 0, -1):
        msg = json.loads(raw)
        body = json.loads(base64.b64decode(msg["body"]))
        out.append(body[1])
    return out


def test_results_arrive_for_worker_and_resolve(
    controlled: Callable[..., Stack], gateway: SandboxProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """RESULT_TASK is published for a gateway outcome and for an operator's resolve."""
    # given
    stack = controlled(RESULT_TASK="webapp.payout_result")
    enqueue(stack, "res-1")
    stack.wait_state("res-1", State.SUCCEEDED, timeout_s=30)
    store_payout(stack.rt, payout("res-2"))
    stack.rt.store.transition("res-2", State.REVIEW, reason="setup: suspected duplicate")
    # when
    code, _ = run(
        capsys, "resolve", "res-2", "--state", "failed", "--note", "cancelled by finance", "--by", "ana"
    )
    # then
    assert code == 0
    wait_for(lambda: len(_results(stack.redis)) >= 2, 20, what="two results")
    got = {r["payout_cl_id"]: r for r in _results(stack.redis)}
    assert got["res-1"]["state"] == "succeeded" and got["res-2"]["state"] == "failed"
    assert "4455" not in json.dumps(got) and "Wati" not in json.dumps(got)
    for i in ("res-1", "res-2"):
        order = stack.rt.store.require(i)
        assert "result_pending" not in order.fields and stack.redis.zscore(keys.DUE, i) is None
    assert "operator ana: cancelled by finance" in stack.rt.store.require("res-2").reason


def test_result_survives_broker_outage(make_runtime: Any) -> None:
    """With the broker down when an order becomes final (here: an operator resolve), the result
    stays pending and the sweep publishes it once the broker is back (D9)."""
    # given: a broker of its own, and a runtime publishing results to it
    broker = RedisServer().start()
    app = Celery("results-test", broker=broker.url)
    app.conf.broker_connection_retry_on_startup = False
    rt = make_runtime(RESULT_TASK="webapp.payout_result")

    class Publisher:  # the runtime's dispatcher, publishing results to that broker at once
        def submit(self, payout_cl_id: str) -> None:
            raise AssertionError("this test submits nothing")

        def result(self, name: str, payload: Mapping[str, Any]) -> None:
            app.send_task(name, kwargs=dict(payload), queue="payouts.results", retry=False)

    rt.dispatch = Publisher()
    try:
        store_payout(rt, payout("out-1"))
        rt.store.transition("out-1", State.REVIEW, reason="setup")
        broker.stop(kill=True)
        # when: resolved while the broker is down
        from worker.desk.order_actions import resolve

        resolve(rt, "out-1", State.SUCCEEDED, "bank statement shows the transfer", by="ana")
        order = rt.store.require("out-1")
        assert order.state is State.SUCCEEDED and order.fields["result_pending"] == "1"
        assert sweep_due(rt, now=time.time() + 60).results == 0  # still down: stays pending
        # when: the broker is back
        broker.start()
        tick = iter(range(2, 1000))

        def swept() -> bool:  # each tick a little later, as the beat would
            return sweep_due(rt, now=time.time() + 120 * next(tick)).results == 1

        wait_for(swept, 30, what="the sweep to publish the pending result")
        # then
        client = redis.Redis.from_url(broker.url, decode_responses=True)
        try:
            got = _results(client)
        finally:
            client.close()
        assert [r["state"] for r in got] == ["succeeded"]
        assert "result_pending" not in rt.store.require("out-1").fields
    finally:
        app.close()
        broker.cleanup()


def test_by_name_create_refusal_is_reported(
    controlled: Callable[..., Stack], gateway: SandboxProcess
) -> None:
    """A by-name payouts.create with bad input: a 'refused' event and RESULT_TASK with the field
    errors, no personal data; nothing stored or sent."""
    # given
    stack = controlled(RESULT_TASK="webapp.payout_result")
    from worker.celery_app import app
    from worker.celeryconf import CREATE_TASK

    # when
    app.send_task(
        CREATE_TASK,
        kwargs={
            "payout_cl_id": "ref-1",
            "amount": "50000",
            "bank_name": "BCA",
            "name": "Wati",
            "number": "12ab",
        },
    )
    # then
    wait_for(lambda: any(r["payout_cl_id"] == "ref-1" for r in _results(stack.redis)), 30, what="the refusal")
    (res,) = [r for r in _results(stack.redis) if r["payout_cl_id"] == "ref-1"]
    assert res["state"] == "refused" and {e["field"] for e in res["errors"]} == {"amount", "number"}
    assert "12ab" not in json.dumps(res) and "Wati" not in json.dumps(res)
    events = [e for _, e in stack.redis.xrange(keys.EVENTS) if e["payout_cl_id"] == "ref-1"]
    assert [e["to"] for e in events] == ["refused"]
    assert stack.state("ref-1") is None and gateway.admin.create_requests("ref-1") == 0


def test_by_name_create_repeated_for_a_paid_id_reports_its_real_state(
    controlled: Callable[..., Stack], gateway: SandboxProcess
) -> None:
    """D39: a by-name payouts.create repeated with other data for an id that is paid is not
    `refused`: the result is a `duplicate_request` carrying the stored state (succeeded) and
    its payout_id; no event ever says '' -> refused or leaves `succeeded`; one create."""
    # given: WD-77 paid through a by-name create
    stack = controlled(RESULT_TASK="webapp.payout_result")
    from worker.celery_app import app
    from worker.celeryconf import CREATE_TASK

    first = payout("dup-req-77")
    app.send_task(CREATE_TASK, kwargs=first)
    stack.wait_state("dup-req-77", State.SUCCEEDED, timeout_s=30)
    paid = stack.rt.store.require("dup-req-77")
    # when: the same id again, the name re-typed in capitals
    app.send_task(CREATE_TASK, kwargs={**first, "name": "WATI"})
    # then
    wait_for(
        lambda: any(r.get("kind") == "duplicate_request" for r in _results(stack.redis)),
        30,
        what="the duplicate request's answer",
    )
    mine = [r for r in _results(stack.redis) if r["payout_cl_id"] == "dup-req-77"]
    assert [r["state"] for r in mine] == ["succeeded", "succeeded"], mine
    (dup,) = [r for r in mine if r.get("kind") == "duplicate_request"]
    assert dup["payout_id"] == paid.payout_id
    assert "WATI" not in json.dumps(dup) and account("dup-req-77") not in json.dumps(dup)
    events = [e for _, e in stack.redis.xrange(keys.EVENTS) if e["payout_cl_id"] == "dup-req-77"]
    assert "refused" not in {e["to"] for e in events}
    assert events[-1]["kind"] == "duplicate_request" and events[-1]["from"] == events[-1]["to"] == "succeeded"
    assert stack.rt.store.require("dup-req-77").state is State.SUCCEEDED
    assert gateway.admin.create_requests("dup-req-77") == 1


def test_doctor_and_worker_refuse_the_sandbox(
    use_env: Callable[..., Any],
    make_stack: Callable[..., Stack],
    gateway: SandboxProcess,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The sandbox names itself (X-Payout-Sandbox): doctor fails and a worker refuses to start
    unless PAYOUTS_ALLOW_SANDBOX=1."""
    # given
    use_env(gateway.url, PAYOUTS_ALLOW_SANDBOX="0")
    # when
    code, out = run(capsys, "doctor")
    # then
    assert code == 1 and "answers as the sandbox" in out
    use_env(gateway.url, PAYOUTS_ALLOW_SANDBOX="1")
    code, out = run(capsys, "doctor")
    assert "SANDBOX gateway" in out and "answers as the sandbox" not in out
    # and a worker
    stack = make_stack(gateway.url, PAYOUTS_ALLOW_SANDBOX="0")
    w = stack.start_worker()
    wait_for(lambda: not w.alive(), 60, what="the worker to refuse to start")
    assert "refusing to start" in stack.logs() and "sandbox" in stack.logs()


def test_demo_proof_rows(controlled: Callable[..., Stack], gateway: SandboxProcess) -> None:
    """The demo's two control rows pass on a live stack, and the orders they used end final."""
    # given
    from worker.harness.control_proof import CONTROL_SETTINGS, prove_balance_hold, prove_pause

    stack = controlled(**CONTROL_SETTINGS)
    pause_set = [payout(f"demo-p{n}") for n in range(4)]
    hold_set = [payout(f"demo-b{n}") for n in range(4)]
    # when
    rows = [
        prove_pause(stack.rt, gateway.admin, pause_set),
        prove_balance_hold(stack.rt, gateway.admin, hold_set),
    ]
    # then
    assert all(r.ok for r in rows), [r.text for r in rows]
    assert rows[0].text.startswith("pause: 4 orders enqueued while paused, 0 create requests")
    assert "paused (balance: gateway 0018" in rows[1].text and "0 rejected" in rows[1].text
    all_final(stack, [p["payout_cl_id"] for p in pause_set + hold_set], timeout_s=90)
