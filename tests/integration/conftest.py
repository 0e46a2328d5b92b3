"""Integration fixtures: the sandbox over HTTP, a real Celery worker, beat, the callback receiver."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import redis

from config.settings import load_settings
from sandbox.process import SandboxProcess
from tests.conftest import base_env, sandbox_config  # noqa: F401 - re-exported for tests
from worker.callbacks import make_app
from worker.embedded import CeleryProcess, free_port, wait_for
from worker.runtime import Runtime, build_runtime, set_runtime
from worker.states import State


@pytest.fixture
def gateway(sandbox: SandboxProcess) -> Iterator[SandboxProcess]:
    """The session's sandbox, emptied (orders, ledger, faults) before each test."""
    assert sandbox.admin is not None
    sandbox.admin.reset()
    yield sandbox
    sandbox.admin.reset()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Stack:
    """One test's processes: worker(s), optional beat, the callback receiver."""

    def __init__(self, tmp: Path, redis_url: str, gateway_url: str, **env: Any) -> None:
        self.tmp = tmp
        self.callback_port = free_port()
        self.env = base_env(
            redis_url, gateway_url,
            PAYOUT_NOTIFY_URL=f"http://127.0.0.1:{self.callback_port}/payouts/notify", **env,
        )  # fmt: skip
        self.settings = load_settings(self.env)
        from worker.app import app

        assert app.conf.broker_url == redis_url, "the producer must publish to the test Redis"
        self.rt: Runtime = build_runtime(self.settings)
        set_runtime(self.rt)
        self.workers: list[CeleryProcess] = []
        self.beats: list[CeleryProcess] = []
        self.server: WSGIServer | None = None
        self.redis: redis.Redis = self.rt.redis

    def start_callbacks(self) -> Stack:
        self.server = make_server("127.0.0.1", self.callback_port, make_app(self.rt),
                                  server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)  # fmt: skip
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def start_worker(self, *args: str, pool: str = "threads", concurrency: int = 8) -> CeleryProcess:
        n = len(self.workers)
        w = CeleryProcess("worker", self.env, name=f"w{n}-{self.callback_port}",
                          args=["-P", pool, "-c", str(concurrency), "--loglevel", "INFO", *args],
                          log_path=self.tmp / f"worker{n}.log").start()  # fmt: skip
        self.workers.append(w)
        return w

    def start_beat(self) -> CeleryProcess:
        n = len(self.beats)
        b = CeleryProcess("beat", self.env, args=["--loglevel", "INFO"],
                          log_path=self.tmp / f"beat{n}.log").start()  # fmt: skip
        self.beats.append(b)
        return b

    def state(self, payout_cl_id: str) -> State | None:
        return self.rt.store.state_of(payout_cl_id)

    def wait_state(self, payout_cl_id: str, *states: State, timeout_s: float = 20.0) -> State:
        def reached() -> State | None:
            s = self.state(payout_cl_id)
            return s if s in states else None

        try:
            return wait_for(reached, timeout_s, what=f"{payout_cl_id} in {[s.value for s in states]}")  # type: ignore[no-any-return]
        except TimeoutError:
            order = self.rt.store.get(payout_cl_id)
            raise AssertionError(
                f"{payout_cl_id} stuck: {order.public() if order else None}\n{self.log_tail()}"
            ) from None

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-n:])

    def json_logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def stop(self) -> None:
        for p in self.workers + self.beats:
            p.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        set_runtime(None)
        self.rt.close()


@pytest.fixture
def make_stack(tmp_path: Path, redis_client: redis.Redis, redis_url: str) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(gateway_url: str, **env: Any) -> Stack:
        s = Stack(tmp_path, redis_url, gateway_url, **env)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.stop()


@pytest.fixture
def stack(make_stack: Any, gateway: SandboxProcess) -> Stack:
    """Worker + callback receiver against the sandbox (no beat: tests start it when needed)."""
    s = make_stack(gateway.url)
    s.start_callbacks()
    s.start_worker()
    return s
