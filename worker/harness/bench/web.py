"""The web front under load (issue 21): callback latency with and without slow clients, and
console page time at 100 vs 10,000 open orders, against the real web process.

Both figures are side-by-side ratios measured here, one after the other, on the same
machine: ``callback_p95_ratio`` (p95 with 50 slow clients / p95 without; target <= 2) and
``page_ratio`` per page (median time at 10,000 open orders / at 100; target <= 1.5).
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from typing import Any

import requests

from worker import keys, signing
from worker.harness.bench.stack import CREDENTIALS, BenchStack
from worker.harness.processes import WebProcess, free_port
from worker.payout import Payout
from worker.runtime import Runtime, build_runtime
from worker.settings import load_settings
from worker.states import State

AMOUNT = 2_500_000
QUEUED = 30
PAGES = ("/", "/review", "/approvals", "/search")


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def success_notice(pid: str, *, amount: int, platform_id: str, key: str) -> dict[str, Any]:
    """A gateway callback saying ``pid`` (accepted as ``POT-<pid>``) succeeded, signed with
    ``key`` (HMAC-SHA256): what the bench and the slow-client test send as the real traffic."""
    body: dict[str, Any] = {
        "payout_id": f"POT-{pid}",
        "payout_cl_id": pid,
        "platform_id": platform_id,
        "amount": amount,
        "real_amount": amount,
        "fee": 0,
        "status": 3,
        "create_time": 1795500000,
        "update_time": 1795500100,
        "sign_type": "HMAC-SHA256",
    }
    body["sign"] = signing.sign(body, key, "HMAC-SHA256")
    return body


def _notice(pid: str) -> dict[str, Any]:
    return success_notice(
        pid, amount=AMOUNT, platform_id=CREDENTIALS.platform_id, key=CREDENTIALS.platform_key
    )


def _accepted(stack: BenchStack, ids: list[str]) -> None:
    store = stack.rt.store
    for pid in ids:
        store.create(Payout(pid, AMOUNT, "BCA", "Dewi", "1234567890"), due_at=time.time() + 3600)
        store.transition(
            pid, State.SUBMITTING, reason="bench", fields={"sign_type": "HMAC-SHA256", "submitted_at": "1"}
        )
        store.transition(pid, State.ACCEPTED, reason="bench", fields={"payout_id": f"POT-{pid}"})


def _callback_latencies(url: str, ids: list[str]) -> list[float]:
    out = []
    with requests.Session() as s:
        for pid in ids:
            t = time.perf_counter()
            r = s.post(url, json=_notice(pid), timeout=30)
            out.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"callback answered {r.status_code}: {r.text[:200]}")
    return out


class _SlowClients:
    """Connections that announce a body and send one byte a second (the attacker's pace)."""

    def __init__(self, port: int, n: int) -> None:
        head = (
            b"POST /payouts/notify HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{"
        )
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
        for s in self.socks:
            s.sendall(head)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(1.0):
            for s in self.socks:
                try:
                    s.sendall(b" ")
                except OSError:
                    continue

    def alive(self) -> int:
        """Connections the server has not closed (a closed one reads b"" at once)."""
        n = 0
        for s in self.socks:
            s.settimeout(0.001)
            try:
                n += s.recv(1, socket.MSG_PEEK) != b""
            except (TimeoutError, BlockingIOError):
                n += 1
            except OSError:
                continue
        return n

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def _page_times(urls: list[str], repeat: int) -> list[dict[str, float]]:
    """Median time of each page at each console URL, the URLs taken in turn for every
    request (the machine's load drifts; alternating cancels it out of the ratio)."""
    headers = {"X-Console-User": "bench", "X-Console-Roles": "admin"}
    times: list[dict[str, list[float]]] = [{p: [] for p in PAGES} for _ in urls]
    with requests.Session() as s:
        for _ in range(repeat):
            for p in PAGES:
                for i, url in enumerate(urls):
                    t = time.perf_counter()
                    r = s.get(url + p, headers=headers, timeout=30)
                    times[i][p].append(time.perf_counter() - t)
                    if r.status_code != 200:
                        raise RuntimeError(f"{p} answered {r.status_code}")
    return [{p: statistics.median(ts) for p, ts in per.items()} for per in times]


def _seed_pages(rt: Runtime, open_orders: int) -> int:
    """The same queues (30 in review, 30 awaiting approval), then received orders up to
    ``open_orders`` open ones; returns the open count."""
    store, due = rt.store, time.time() + 3600
    for n in range(QUEUED):
        store.create(Payout(f"web-rev-{n}", 100_000, "BCA", "Dewi", "1234567890"), due_at=due)
        store.transition(f"web-rev-{n}", State.REVIEW, reason="bench")
        store.create(Payout(f"web-apr-{n}", 9_000_000, "BCA", "Dewi", "1234567890"), due_at=due)
        store.transition(
            f"web-apr-{n}", State.AWAITING_APPROVAL, reason="bench", fields={"requested_by": "x"}, due=due
        )
    for n in range(open_orders - QUEUED):
        store.create(Payout(f"web-open-{n}", 100_000, "BCA", "Dewi", "1234567890"), due_at=due)
    return int(rt.redis.zcard(keys.OPEN_SINCE))


def measure_web_front(
    stack: BenchStack, *, callbacks: int = 200, slow: int = 50, large: int = 10_000, repeat: int = 15
) -> dict[str, Any]:
    """Callback latency p95 without / with ``slow`` slow clients (alternating rounds); page
    time at 100 / ``large`` open orders (two web processes on two databases of the same
    Redis, requests alternating). The real web process (``worker.web``'s launcher)."""
    env = stack.env(
        8, CONSOLE_TRUSTED_USER_HEADER="X-Console-User", CONSOLE_TRUSTED_ROLES_HEADER="X-Console-Roles"
    )
    env["CONSOLE_SECRET"] = "bench-console-secret-0123456789"  # noqa: S105 - a bench-only key
    logs = stack.workdir / "web-front"
    logs.mkdir(exist_ok=True)
    web = WebProcess(env, port=free_port(), log_dir=logs).start()
    try:
        notify = f"{web.url}/payouts/notify"
        ids = [f"web-cb-{n}" for n in range(2 * callbacks + 10)]
        _accepted(stack, ids)
        _callback_latencies(notify, ids[:10])  # warm the connection pools
        # alternate rounds without and with the slow clients (the machine's load drifts)
        quiet: list[float] = []
        loaded: list[float] = []
        still = slow
        rounds, per = 4, callbacks // 4
        for r in range(rounds):
            base = 10 + 2 * r * per
            quiet += _callback_latencies(notify, ids[base : base + per])
            clients = _SlowClients(web.port, slow)
            try:
                loaded += _callback_latencies(notify, ids[base + per : base + 2 * per])
                still = min(still, clients.alive())
            finally:
                clients.close()
    finally:
        web.stop()
    webs: list[WebProcess] = []
    opened: list[int] = []
    try:
        for db, n_open in ((1, 100), (2, large)):
            url = stack.redis_server.url.rsplit("/", 1)[0] + f"/{db}"
            db_env = {**env, "REDIS_URL": url, "CELERY_BROKER_URL": url}
            rt = build_runtime(load_settings(db_env), process="payouts bench")
            try:
                rt.redis.flushdb()
                opened.append(_seed_pages(rt, n_open))
            finally:
                rt.close()
            d = stack.workdir / f"web-front-db{db}"
            d.mkdir(exist_ok=True)
            webs.append(WebProcess(db_env, port=free_port(), log_dir=d).start())
        consoles = [f"{w.admin_url}/console" for w in webs]
        _page_times(consoles, 3)  # warm up (and the approvals index's one-time backfill)
        small, big = _page_times(consoles, repeat)
    finally:
        for w in webs:
            w.stop()
    p95_q, p95_l = _p95(quiet), _p95(loaded)
    return {
        "callbacks": len(quiet),
        "slow_clients": slow,
        "slow_clients_still_connected": still,
        "callback_p50_ms": round(1000 * statistics.median(quiet), 2),
        "callback_p95_ms": round(1000 * p95_q, 2),
        "callback_p50_ms_with_slow": round(1000 * statistics.median(loaded), 2),
        "callback_p95_ms_with_slow": round(1000 * p95_l, 2),
        "callback_p95_ratio": round(p95_l / p95_q, 2),
        "open_orders": opened,
        "page_ms": {p: [round(1000 * small[p], 2), round(1000 * big[p], 2)] for p in PAGES},
        "page_ratio": {p: round(big[p] / small[p], 2) for p in PAGES},
    }
