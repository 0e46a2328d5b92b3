"""The guarantees against a sandbox that disagrees with every UNCONFIRMED guess (docs/gateway.md §11):
real Celery workers, real Redis, the sandbox over HTTP (and TLS). The sandbox's ledger
counts create requests per id: "0 second creates" is read there, not from our store."""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.helpers import TEST_KEY, TEST_PLATFORM, Stack, sandbox_config
from worker import keys
from worker.errors import DuplicatePayout
from worker.harness.processes import wait_for
from worker.ops import enqueue
from worker.producer import enqueue_payout
from worker.sandbox import signature as sandbox_signature
from worker.sandbox.process import SandboxProcess
from worker.states import FINAL, State

AMOUNT = 5_000_000
SETTLED = (*FINAL, State.REVIEW)


def data(pid: str) -> dict[str, Any]:
    return {
        "payout_cl_id": pid,
        "amount": AMOUNT,
        "bank_name": "BCA",
        "name": "Putri",
        "number": "5566778899",
    }


def counts(gateway: SandboxProcess, pid: str) -> dict[str, Any]:
    return gateway.admin.id_counts(pid)


def assert_created_at_most_once(gateway: SandboxProcess, ids: list[str]) -> None:
    """The sandbox's ledger: no create request for an id once a payout of it existed, and
    never two payouts of one id."""
    ledger = gateway.admin.ledger()
    per_id = ledger["payouts_per_id"]
    for pid in ids:
        req = ledger["create_requests"].get(pid, {"after": 0})
        assert req["after"] == 0, (pid, req)
        assert per_id.get(pid, 0) <= 1, (pid, per_id.get(pid))


def history(stack: Stack, pid: str) -> list[str]:
    return [h["to"] for h in stack.rt.store.require(pid).history]


def wait_all(stack: Stack, ids: list[str], states: tuple[State, ...], timeout_s: float) -> None:
    for pid in ids:
        stack.wait_state(pid, *states, timeout_s=timeout_s)


# -- duplicate check off ---------------------------------------------------------------


def test_duplicate_check_off_faults_and_kills_never_create_twice(
    make_stack: Any, gateway: SandboxProcess
) -> None:
    """With the gateway's duplicate check off (a second create is a second payout), lost
    answers of every kind, 5xx and a worker killed mid-run: 0 second create requests."""
    # given
    gateway.admin.set_duplicate_check(False)
    gateway.admin.set_faults(
        [
            {"kind": "create_lost", "mode": "5xx", "probability": 0.15},
            {"kind": "create_lost", "mode": "garbled", "probability": 0.1},
            {"kind": "create_lost", "mode": "reset", "probability": 0.1},
            {"kind": "create_lost", "mode": "hang", "seconds": 4, "then": "close", "probability": 0.1},
            {"kind": "create_5xx_before", "probability": 0.05},
            {"kind": "latency", "seconds": 0.05, "endpoints": ["create"]},
            {"kind": "invisible", "seconds": 1, "probability": 0.2},
        ]
    )
    stack: Stack = make_stack(gateway.url)
    stack.start_callbacks()
    first = stack.start_worker()
    stack.start_beat()
    ids = [f"dupoff-{n}" for n in range(40)]
    # when: enqueue, kill the worker while creates are in flight, start another
    for pid in ids:
        enqueue_payout(**data(pid), runtime=stack.rt)
    wait_for(lambda: gateway.admin.ledger()["totals"]["create_requests"] >= 10, 30, what="creates in flight")
    first.kill()
    stack.start_worker()
    # then
    wait_all(stack, ids, SETTLED, timeout_s=90)
    assert_created_at_most_once(gateway, ids)
    settled = {pid: stack.state(pid) for pid in ids}
    assert sum(s is State.SUCCEEDED for s in settled.values()) >= len(ids) // 2, settled


def test_filter_ignored_and_resubmit_policy_never_create_twice(
    make_stack: Any, gateway: SandboxProcess
) -> None:
    """The list query ignores ``payout_cl_id`` (answers other orders' records) while
    NOT_FOUND_POLICY=resubmit: "not ours" is an error, never "not found", so an order
    whose create got lost is never sent again."""
    # given: other orders at the gateway, then the filter ignored
    stack: Stack = make_stack(gateway.url, NOT_FOUND_POLICY="resubmit", UNCONFIRMED_GRACE="1")
    stack.start_callbacks()
    stack.start_worker()
    stack.start_beat()
    others = [f"other-{n}" for n in range(3)]
    for pid in others:
        enqueue_payout(**data(pid), runtime=stack.rt)
    wait_all(stack, others, (State.SUCCEEDED,), timeout_s=30)
    gateway.admin.set_list_filter("ignore", order="newest_first")
    gateway.admin.set_faults(
        [
            {"kind": "create_5xx_before", "match": "^lostfilter-"},  # never created
            {"kind": "create_lost", "mode": "5xx", "match": "^lostanswer-"},  # created, answer lost
            {"kind": "callback", "mode": "never", "match": "^lostanswer-"},
        ]
    )
    # when
    enqueue_payout(**data("lostfilter-1"), runtime=stack.rt)
    enqueue_payout(**data("lostanswer-1"), runtime=stack.rt)
    # then: past several grace periods, no second create; the unknown one stays unresolved
    wait_for(
        lambda: "filter not honoured" in stack.rt.store.require("lostfilter-1").fields.get("last_query", ""),
        30,
        what="a query that saw other orders' records",
    )
    deadline = time.time() + 8
    while time.time() < deadline:
        assert stack.state("lostfilter-1") is State.UNCONFIRMED
        time.sleep(0.5)
    assert_created_at_most_once(gateway, ["lostfilter-1", "lostanswer-1", *others])
    assert counts(gateway, "lostfilter-1")["create_requests"]["total"] == 1
    assert "received" not in history(stack, "lostfilter-1")[1:]
    assert stack.state("lostanswer-1") in (State.UNCONFIRMED, State.ACCEPTED, State.SUCCEEDED)


# -- records and callbacks as documented -----------------------------------------------


def test_spec_records_and_no_callbacks_every_order_final_by_polling(
    make_stack: Any, gateway: SandboxProcess
) -> None:
    """Records shaped exactly as docs/gateway.md §2a (no sign_type, signed in the order's algorithm)
    and no callbacks at all: an HMAC deployment still settles every order by polling,
    singly and through the windowed batch check."""
    # given
    gateway.admin.update_settings(record_signature="spec", callbacks=False, failure_ratio=0.3)
    stack: Stack = make_stack(gateway.url)
    stack.start_callbacks()
    stack.start_worker()
    ids = [f"spec-{n}" for n in range(70)]
    for pid in ids:
        enqueue_payout(**data(pid), runtime=stack.rt)
    wait_all(stack, ids, (State.ACCEPTED, *FINAL), timeout_s=60)
    # when: the sweep starts (70 due checks at once: the batch path)
    stack.start_beat()
    # then
    wait_all(stack, ids, (State.SUCCEEDED, State.FAILED), timeout_s=90)
    assert gateway.admin.stats()["callbacks"]["attempts"] == 0
    orders = gateway.admin.orders()
    for pid in ids:
        want = {3: State.SUCCEEDED, 4: State.FAILED, 5: State.FAILED}[int(orders[pid]["status"])]
        assert stack.state(pid) is want
    assert_created_at_most_once(gateway, ids)


def test_spec_shaped_callbacks_without_sign_type_are_applied(
    make_stack: Any, gateway: SandboxProcess
) -> None:
    """Notifications as docs/gateway.md §5 D-NTF (no sign_type, HMAC-signed) verify with the order's
    algorithm; no beat, so only the callback can settle the order."""
    # given
    gateway.admin.set_callback_signature("spec")
    stack: Stack = make_stack(gateway.url)
    stack.start_callbacks()
    stack.start_worker()
    # when
    enqueue_payout(**data("specnote-1"), runtime=stack.rt)
    # then
    stack.wait_state("specnote-1", State.SUCCEEDED, timeout_s=30)
    assert "callback: status 3" in stack.rt.store.require("specnote-1").history[-1]["reason"]


@pytest.mark.parametrize("gunicorn", [False, True], ids=["wsgiref", "gunicorn"])
def test_chunked_callbacks_are_applied(make_stack: Any, gateway: SandboxProcess, gunicorn: bool) -> None:
    """Notifications with ``Transfer-Encoding: chunked`` and no Content-Length are read
    (a pass-through server and one that de-chunks); no beat, so only callbacks settle."""
    # given
    gateway.admin.set_callback_framing("chunked")
    stack: Stack = make_stack(gateway.url)
    stack.start_receiver(gunicorn=gunicorn)
    stack.start_worker()
    ids = [f"chunk-{int(gunicorn)}-{n}" for n in range(5)]
    # when
    for pid in ids:
        enqueue_payout(**data(pid), runtime=stack.rt)
    # then
    wait_all(stack, ids, (State.SUCCEEDED,), timeout_s=40)
    for pid in ids:
        assert "callback: status 3" in stack.rt.store.require(pid).history[-1]["reason"]


# -- forged callbacks ----------------------------------------------------------------


def notify_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.callback_port}/payouts/notify"


def genuine_notice(pid: str, payout_id: str, status: int = 3) -> dict[str, Any]:
    """A notice as the gateway signs it (the sandbox's own signer, written from docs/gateway.md §4)."""
    notice: dict[str, Any] = {
        "payout_id": payout_id,
        "payout_cl_id": pid,
        "platform_id": TEST_PLATFORM,
        "amount": str(AMOUNT),
        "real_amount": str(AMOUNT),
        "fee": "0",
        "status": str(status),
        "create_time": str(int(time.time()) - 5),
        "update_time": str(int(time.time())),
        "sign_type": "HMAC-SHA256",
    }
    notice["sign"] = sandbox_signature.sign(notice, TEST_KEY, "HMAC-SHA256")
    return notice


def test_forged_field_fold_callbacks_change_nothing(make_stack: Any, gateway: SandboxProcess) -> None:
    """From one genuine notice, folds that keep the string to sign byte-identical (status
    folded into real_amount, create_time into amount, a folded name) are refused before
    any state change; an unknown order gets the same answer as a bad signature."""
    # given: an accepted order, and a succeeded one, with callbacks and polling off
    gateway.admin.set_callbacks(False)
    stack: Stack = make_stack(gateway.url)
    stack.start_callbacks()
    stack.start_worker()
    for pid in ("fold-acc", "fold-done"):
        enqueue_payout(**data(pid), runtime=stack.rt)
        stack.wait_state(pid, State.ACCEPTED, timeout_s=20)
    done_id = stack.rt.store.require("fold-done").payout_id or ""
    assert (
        requests.post(notify_url(stack), json=genuine_notice("fold-done", done_id), timeout=5).status_code
        == 200
    )
    assert stack.state("fold-done") is State.SUCCEEDED
    forged: list[dict[str, Any]] = []
    for pid in ("fold-acc", "fold-done"):
        pay = stack.rt.store.require(pid).payout_id or ""
        a = genuine_notice(pid, pay, 4)
        del a["status"]
        a["real_amount"] = f"{AMOUNT}&status=4"
        b = genuine_notice(pid, pay, 3)
        b["amount"] = f"{AMOUNT}&create_time={b.pop('create_time')}"
        c = genuine_notice(pid, pay, 3)
        c[f"amount={AMOUNT}&create_time"] = c.pop("create_time")
        del c["amount"]
        forged += [a, b, c]
    # the folds are real: each still verifies under the gateway's own signer
    assert all(sandbox_signature.verify(n, TEST_KEY, expected_type="HMAC-SHA256") for n in forged)
    before = {pid: len(history(stack, pid)) for pid in ("fold-acc", "fold-done")}
    # when
    answers = [requests.post(notify_url(stack), json=n, timeout=5) for n in forged]
    bad_sig = requests.post(
        notify_url(stack), json={**genuine_notice("fold-acc", "x"), "sign": "0" * 64}, timeout=5
    )
    unknown = requests.post(notify_url(stack), json=genuine_notice("fold-nobody", "x"), timeout=5)
    # then
    assert all(r.status_code == 400 and r.json()["error_code"] != "0000" for r in answers)
    assert (unknown.status_code, unknown.json()) == (bad_sig.status_code, bad_sig.json())
    assert stack.state("fold-acc") is State.ACCEPTED and stack.state("fold-done") is State.SUCCEEDED
    assert {pid: len(history(stack, pid)) for pid in before} == before


# -- ids are never reused --------------------------------------------------------------


def test_expired_id_reenqueued_by_api_and_csv_is_refused(
    make_stack: Any,
    gateway: SandboxProcess,
    use_env: Any,
    redis_client: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An order that finished and expired (ORDER_RETENTION_DAYS) leaves a tombstone: the
    same id by the API, the same CSV again (with and without --force) are refused, and the
    gateway never sees a second create."""
    # given: three orders imported from a CSV, succeeded, then expired for real
    retention = {"ORDER_RETENTION_DAYS": "0.0001"}  # 8.6 s
    stack: Stack = make_stack(gateway.url, **retention)
    stack.start_callbacks()
    stack.start_worker()
    stack.start_beat()
    path = tmp_path / "march.csv"
    ids = ["exp-1", "exp-2", "exp-3"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["payout_cl_id", "amount", "bank_name", "name", "number"])
        for pid in ids:
            w.writerow([pid, AMOUNT, "BCA", "Putri", "5566778899"])
    use_env(gateway.url, **retention)
    assert enqueue.main(["--file", str(path)]) == 0
    wait_all(stack, ids, (State.SUCCEEDED,), timeout_s=40)
    wait_for(
        lambda: not any(redis_client.exists(keys.order(i)) for i in ids), 30, what="the orders to expire"
    )
    capsys.readouterr()
    # when / then: the API
    for pid in ids:
        with pytest.raises(DuplicatePayout) as err:
            enqueue_payout(**data(pid).copy() | {"name": "Putri"}, runtime=stack.rt)
        assert err.value.expired
    # when / then: the CSV again, then with --force
    assert enqueue.main(["--file", str(path)]) == 1
    assert "already imported" in capsys.readouterr().err
    assert enqueue.main(["--file", str(path), "--force"]) == 1
    err_text = capsys.readouterr().err
    assert err_text.count("was used before and its order has expired") == 3 and "nothing enqueued" in err_text
    # then: nothing stored, nothing sent
    time.sleep(1.5)  # a sweep or two: anything queued would have been sent by now
    assert not any(redis_client.exists(keys.order(i)) for i in ids)
    for pid in ids:
        assert counts(gateway, pid)["create_requests"]["total"] == 1


# -- TLS handshake faults --------------------------------------------------------------


@pytest.fixture
def tls_gateway() -> Any:
    proc = SandboxProcess(sandbox_config(tls_port=0, seed=11)).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_tls_handshake_faults_are_not_sent_never_unconfirmed(
    make_stack: Any, tls_gateway: SandboxProcess
) -> None:
    """A handshake that stalls (urllib3: a *read* timeout), is reset, answered with garbage
    or a fatal alert sent nothing: the order goes back to received and is sent once later,
    never ``unconfirmed``."""
    # given
    tls_gateway.admin.set_faults(
        [
            {"kind": "tls_handshake", "mode": "stall", "seconds": 4, "times": 2},
            {"kind": "tls_handshake", "mode": "abort", "how": "reset", "times": 2},
            {"kind": "tls_handshake", "mode": "abort", "how": "garbage", "times": 2},
            {"kind": "tls_handshake", "mode": "abort", "how": "alert", "times": 2},
        ]
    )
    stack: Stack = make_stack(tls_gateway.tls_url, GATEWAY_CA_FILE=tls_gateway.tls_cert_path)
    stack.start_callbacks()
    stack.start_worker(concurrency=2)
    stack.start_beat()
    ids = [f"tls-{n}" for n in range(6)]
    rng = random.Random(3)
    # when
    for pid in ids:
        enqueue_payout(**data(pid), runtime=stack.rt)
        time.sleep(rng.uniform(0, 0.2))
    # then
    wait_all(stack, ids, (State.SUCCEEDED,), timeout_s=90)
    fired = {f["kind"] + ":" + f.get("mode", ""): f["fired"] for f in tls_gateway.admin.faults()}
    assert sum(fired.values()) >= 4, fired
    reasons = []
    for pid in ids:
        order = stack.rt.store.require(pid)
        assert "unconfirmed" not in [h["to"] for h in order.history], order.history
        reasons += [h["reason"] for h in order.history]
        assert counts(tls_gateway, pid)["create_requests"]["total"] == 1
    assert any("before the request was written" in r for r in reasons), reasons
    assert_created_at_most_once(tls_gateway, ids)


# -- doctor's probe ------------------------------------------------------------------


def test_doctor_fails_when_the_list_filter_is_ignored(
    use_env: Any, gateway: SandboxProcess, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """The probe id is unknown: only an empty answer or 0050 passes; other orders' records
    (an ignored filter) fail the doctor, naming the filter."""
    # given: an order at the gateway, and the filter ignored
    from worker.ops import cli
    from worker.runtime import get_runtime
    from worker.submission import submit_order

    use_env(gateway.url)
    enqueue_payout(**data("doc-1"))
    submit_order(get_runtime(), "doc-1")  # no worker here: send it from this process
    assert gateway.admin.order("doc-1") is not None
    assert cli.main(["doctor"]) == 0
    capsys.readouterr()
    gateway.admin.set_list_filter("ignore")
    # when
    code = cli.main(["doctor"])
    # then
    out = capsys.readouterr().out
    assert code == 1 and "[FAIL] gateway" in out and "payout_cl_id filter" in out
