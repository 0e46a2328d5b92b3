"""The real web process (``python -m worker.web``'s gunicorn) under slow clients (issue 21).

Fifty connections announce a body and trickle it a byte a second, as an attacker on the
public listener would. The rule: valid callbacks are still applied, and ``/metrics`` on the
admin listener still answers, while they hang on; and a body that does not arrive within
``WEB_BODY_DEADLINE_S`` is answered 408 and its connection closed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import TEST_KEY, TEST_PLATFORM, Stack
from worker.harness.bench.web import success_notice as signed_success_notice
from worker.harness.processes import WebProcess, wait_for
from worker.payout import Payout
from worker.states import State

pytestmark = pytest.mark.integration

AMOUNT = 2_500_000
SLOW_CLIENTS = 50


class SlowClients:
    """``n`` connections that each announce ``length`` bytes of body and send one a second."""

    def __init__(self, port: int, n: int, length: int = 4000) -> None:
        self.socks: list[socket.socket] = []
        head = (
            "POST /payouts/notify HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n{{"
        ).encode()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(head)
            self.socks.append(s)
        self.stop = threading.Event()
        self.answers: dict[int, bytes] = {}
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        # the attacker's pace (one byte a second), not a synchronisation
        while not self.stop.wait(1.0):
            for i, s in enumerate(self.socks):
                if i in self.answers:
                    continue
                try:
                    s.sendall(b" ")
                except OSError:
                    self.answers[i] = self._answer(s)

    @staticmethod
    def _answer(s: socket.socket) -> bytes:
        try:
            s.settimeout(0.5)
            return s.recv(200)
        except OSError:
            return b""

    def poll(self) -> dict[int, bytes]:
        """Connection index -> what the server answered before closing it (b"" = closed)."""
        for i, s in enumerate(self.socks):
            if i not in self.answers:
                s.settimeout(0.01)
                try:
                    data = s.recv(200)
                except (TimeoutError, BlockingIOError):
                    continue
                except OSError:
                    data = b""
                self.answers[i] = data
        return dict(self.answers)

    def closed_with(self, status: bytes) -> int:
        """How many connections the server answered with ``status`` (then closed)."""
        return sum(1 for a in self.poll().values() if a.startswith(b"HTTP/1.1 " + status))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def accepted_order(stack: Stack, pid: str) -> None:
    store = stack.rt.store
    store.create(Payout(pid, AMOUNT, "BCA", "Dewi", "1234567890"), due_at=time.time() + 600)
    store.transition(
        pid, State.SUBMITTING, reason="setup", fields={"sign_type": "HMAC-SHA256", "submitted_at": "1"}
    )
    store.transition(pid, State.ACCEPTED, reason="setup", fields={"payout_id": f"POT-{pid}"})


def success_notice(pid: str) -> dict[str, Any]:
    return signed_success_notice(pid, amount=AMOUNT, platform_id=TEST_PLATFORM, key=TEST_KEY)


@pytest.fixture
def web(
    make_stack: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Stack, WebProcess]]:
    """A stack (no worker needed) and the real web process on its callback port, one gunicorn
    worker process (the Procfile runs two: one is the harder case)."""
    stack: Stack = make_stack("http://127.0.0.1:9")
    deadline = getattr(request, "param", "60")
    proc = WebProcess(
        {**stack.env, "WEB_BODY_DEADLINE_S": deadline}, port=stack.callback_port, log_dir=tmp_path
    )
    proc.start()
    yield stack, proc
    proc.stop()


def test_callbacks_and_metrics_are_served_while_slow_clients_hang_on(web: tuple[Stack, WebProcess]) -> None:
    """50 slow bodies on the public listener starve nothing: valid callbacks are applied and
    /metrics answers on the admin listener while every slow client is still connected."""
    stack, proc = web
    ids = [f"slow-{n}" for n in range(10)]
    for pid in ids:
        accepted_order(stack, pid)
    # given 50 clients trickling their bodies
    slow = SlowClients(proc.port, SLOW_CLIENTS)
    try:
        # when the gateway sends valid callbacks, and Prometheus scrapes
        answers = [
            requests.post(f"{proc.url}/payouts/notify", json=success_notice(pid), timeout=5) for pid in ids
        ]
        scrape = requests.get(f"{proc.admin_url}/metrics", timeout=5)
        # then each is answered and applied
        assert [r.status_code for r in answers] == [200] * len(ids), [r.text for r in answers]
        wait_for(
            lambda: all(stack.state(pid) is State.SUCCEEDED for pid in ids),
            10,
            what="the callbacks to be applied",
        )
        assert scrape.status_code == 200 and "payouts_orders" in scrape.text
        # and the slow clients were still hanging on all along (none answered or dropped)
        assert slow.poll() == {}
    finally:
        slow.close()


@pytest.mark.parametrize("web", ["2"], indirect=True)
def test_a_body_that_does_not_arrive_in_time_is_answered_408(web: tuple[Stack, WebProcess]) -> None:
    """WEB_BODY_DEADLINE_S bounds each connection's body: a trickling client gets 408 and is
    closed; a prompt callback on the same listener is unaffected."""
    stack, proc = web
    accepted_order(stack, "late-0")
    # given a few slow clients under a 2 s body deadline
    slow = SlowClients(proc.port, 5)
    try:
        # when their deadline passes
        wait_for(lambda: slow.closed_with(b"408") == 5, 20, what="408 for every slow client")
        # then a prompt callback is still applied
        r = requests.post(f"{proc.url}/payouts/notify", json=success_notice("late-0"), timeout=5)
        assert r.status_code == 200
        assert stack.state("late-0") is State.SUCCEEDED
    finally:
        slow.close()
