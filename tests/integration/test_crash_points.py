"""Kill the worker at each step of the submit path: no double create, no lost order.

Each test runs worker A until it dies hard (SIGKILL) at one step of
``submit_order``, then starts worker B and beat with no crash set, and waits for
the order's final state. The broker's visibility timeout stays large (3600 s), so
A's un-acked message is never redelivered during the test (never trust redelivery:
docs/decisions.md, "Celery and Redis settings"): the sweep alone must recover the order.
Received orders are re-driven after SUBMIT_REDRIVE_AFTER; submitting orders become unconfirmed after the call
deadline (connect + read + margin = 4 s here) and a query settles them. The sandbox
sends no callbacks, so nothing but the sweep can settle the order.

Every test ends with: the order final (succeeded), or in review with a reason when
the gateway never created it; at most one create request in the sandbox ledger;
and A's delivery still un-acked (proof the sweep, not a redelivery, recovered it).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers import Stack
from worker import keys
from worker.crashpoints import ENV, POINTS
from worker.harness.processes import CeleryProcess, wait_for
from worker.producer import enqueue_payout
from worker.sandbox.process import SandboxProcess
from worker.states import FINAL, OPEN, State

#: no callbacks: the final state must come from the sweep and a query, the backstop
NO_CALLBACKS: dict[str, Any] = {"kind": "callback", "mode": "never"}
#: kombu's Redis transport keeps delivered, un-acked messages in this hash
UNACKED = "unacked"
#: fast timings; the visibility timeout stays at its large default on purpose
CRASH_ENV: dict[str, Any] = {
    "UNCONFIRMED_GRACE": "2",
    "SUBMIT_REDRIVE_AFTER": "2",
    "BROKER_VISIBILITY_TIMEOUT": "3600",
}


def creates(gateway: SandboxProcess, pid: str) -> int:
    ledger = gateway.admin.ledger()["create_requests"]
    return int(ledger.get(pid, {}).get("total", 0))


def crashing_worker(stack: Stack, point: str | None) -> CeleryProcess:
    """Worker A: a threads pool, so a SIGKILL from the task kills the whole worker."""
    env = dict(stack.env)
    if point is not None:
        env[ENV] = point
    worker = CeleryProcess(
        "worker",
        env,
        name=f"a-{stack.callback_port}",
        args=["-P", "threads", "-c", "4", "--loglevel", "INFO"],
        log_path=stack.tmp / "worker-a.log",
    ).start()
    stack.workers.append(worker)  # stopped with the stack
    return worker


def wait_dead(worker: CeleryProcess, stack: Stack, timeout_s: float = 30.0) -> None:
    try:
        wait_for(lambda: not worker.alive(), timeout_s, what="worker A to die")
    except TimeoutError:
        raise AssertionError(f"worker A never died\n{stack.log_tail()}") from None
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGKILL


def recover(stack: Stack) -> None:
    """Worker B and beat, without any crash point."""
    assert not stack.env.get(ENV), "the recovering processes run without a crash point"
    stack.start_worker()
    stack.start_beat()


def assert_settled(stack: Stack, gateway: SandboxProcess, pid: str, unacked: set[str]) -> Any:
    """The order is final or in review with a reason, created at most once, scheduled iff open."""
    order = stack.rt.store.require(pid)
    assert order.state in FINAL or (order.state is State.REVIEW and order.reason), order.public()
    assert creates(gateway, pid) <= 1
    assert (stack.redis.zscore(keys.DUE, pid) is not None) == (order.state in OPEN)
    # worker A's message was never redelivered: the sweep did the recovery
    assert unacked <= set(stack.redis.hkeys(UNACKED)), "A's message was redelivered"
    return order


@dataclass(frozen=True)
class Case:
    point: str
    bank: str
    #: state right after A died, and create requests the sandbox had seen by then
    at_crash: State
    creates_at_crash: int
    final: State
    creates_final: int
    path: list[str]


ACCEPT = ["received", "submitting", "unconfirmed"]
CASES = [
    # the message was taken, nothing written: the sweep re-drives the received order
    Case(
        "before_claim",
        "BCA",
        State.RECEIVED,
        0,
        State.SUCCEEDED,
        1,
        ["received", "submitting", "accepted", "succeeded"],
    ),
    # claimed, never sent: past the deadline it is unconfirmed; the gateway does not
    # know it through the grace period -> review (never sent again by itself)
    Case("after_claim", "BCA", State.SUBMITTING, 0, State.REVIEW, 0, [*ACCEPT, "review"]),
    # the gateway created it and answered 0000, the answer was never written
    Case("after_response", "BCA", State.SUBMITTING, 1, State.SUCCEEDED, 1, [*ACCEPT, "succeeded"]),
    # the gateway refused it (0012), the refusal was never written: unknown to us,
    # the query finds nothing -> review, not a blind resend
    Case("after_response", "NOSUCHBANK", State.SUBMITTING, 1, State.REVIEW, 1, [*ACCEPT, "review"]),
    # accepted is written, the task never returned: its message is never acked
    Case(
        "after_state_write",
        "BCA",
        State.ACCEPTED,
        1,
        State.SUCCEEDED,
        1,
        ["received", "submitting", "accepted", "succeeded"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.point}-{c.bank}")
def test_kill_at_crash_point(make_stack: Any, gateway: SandboxProcess, case: Case) -> None:
    """A worker SIGKILLed at a step of submit_order: the order ends settled, created <= once."""
    assert case.point in POINTS
    pid = f"crash-{case.point.replace('_', '-')}-{case.bank.lower()}"
    gateway.admin.set_faults([NO_CALLBACKS])
    stack: Stack = make_stack(gateway.url, **CRASH_ENV)
    stack.start_callbacks()
    # given: worker A dies at the crash point while handling the order's submit message
    worker = crashing_worker(stack, case.point)
    enqueue_payout(pid, 5_000_000, case.bank, "Dewi Lestari", "7700112233", runtime=stack.rt)
    wait_dead(worker, stack)
    assert stack.state(pid) is case.at_crash
    assert creates(gateway, pid) == case.creates_at_crash
    unacked = set(stack.redis.hkeys(UNACKED))
    assert len(unacked) == 1, "A's delivery should be left un-acked"
    # when: a healthy worker and beat take over
    recover(stack)
    # then
    stack.wait_state(pid, case.final, timeout_s=40)
    order = assert_settled(stack, gateway, pid, unacked)
    assert creates(gateway, pid) == case.creates_final
    path = [h["to"] for h in order.history]
    # a status-2 report may slip in as "accepted" before the final one
    assert path == case.path or path == [*case.path[:-1], "accepted", case.path[-1]], path
    if case.final is State.REVIEW:
        assert "not found" in order.reason


def test_kill_while_request_in_flight(make_stack: Any, gateway: SandboxProcess) -> None:
    """SIGKILL after the send, before the response: unconfirmed, settled by a query, created once."""
    pid = "crash-in-flight"
    # given: the gateway creates the order, then holds its answer for 30 s
    gateway.admin.set_faults([{"kind": "create_lost", "mode": "hang", "seconds": 30, "match": f"^{pid}$"}])
    stack: Stack = make_stack(gateway.url, **CRASH_ENV)
    stack.start_callbacks()
    worker = crashing_worker(stack, None)
    enqueue_payout(pid, 5_000_000, "BCA", "Dewi Lestari", "7700112233", runtime=stack.rt)
    wait_for(lambda: creates(gateway, pid) == 1, 30, what="the create request to arrive")
    assert stack.state(pid) is State.SUBMITTING
    unacked = set(stack.redis.hkeys(UNACKED))
    assert len(unacked) == 1
    # when: worker A is killed with the request in flight
    worker.kill()
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGKILL
    recover(stack)
    # then
    stack.wait_state(pid, State.SUCCEEDED, timeout_s=40)
    order = assert_settled(stack, gateway, pid, unacked)
    assert creates(gateway, pid) == 1
    path = [h["to"] for h in order.history]
    assert path[:3] == ACCEPT and path[-1] == "succeeded", path
