"""What tests share besides fixtures: credentials, the worker environment, the per-test stack."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis

from sandbox.config import SandboxConfig
from worker.callbacks import make_app
from worker.harness.processes import CeleryProcess, free_port, wait_for
from worker.runtime import Runtime, build_runtime, set_runtime
from worker.settings import load_settings
from worker.states import State

TEST_KEY = "test-platform-key-0123456789"
TEST_TOKEN = "test-authorization-token"
TEST_PLATFORM = "PF0001"


def base_env(redis_url: str, gateway_url: str = "http://127.0.0.1:9", **extra: Any) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "GATEWAY_BASE_URL": gateway_url,
        "GATEWAY_PLATFORM_ID": TEST_PLATFORM,
        "GATEWAY_PLATFORM_KEY": TEST_KEY,
        "GATEWAY_AUTHORIZATION": TEST_TOKEN,
        "GATEWAY_CONNECT_TIMEOUT": "1",
        "GATEWAY_READ_TIMEOUT": "2",
        "GATEWAY_MAX_RPS": "0",
        "LOG_FORMAT": "json",
        "SWEEP_INTERVAL": "0.5",
        "CHECK_INTERVAL_MIN": "0.3",
        "CHECK_INTERVAL_MAX": "2",
        "SUBMIT_REDRIVE_AFTER": "3",
        "SUBMITTING_MARGIN": "1",
        "UNCONFIRMED_FIRST_CHECK": "0.2",
        "UNCONFIRMED_GRACE": "5",
        "WORKER_CONCURRENCY": "8",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def sandbox_config(**overrides: Any) -> SandboxConfig:
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=0,
        platform_id=TEST_PLATFORM,
        platform_key=TEST_KEY,
        authorization=TEST_TOKEN,
        pending_s=0.1,
        processing_s=0.3,
        failure_ratio=0.0,
        seed=7,
        callback_delays_s=(0.2, 0.5, 1.0, 2.0),
        callback_timeout_s=2.0,
        quiet=True,
    )
    base.update(overrides)
    return SandboxConfig(**base)


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
            redis_url,
            gateway_url,
            PAYOUT_NOTIFY_URL=f"http://127.0.0.1:{self.callback_port}/payouts/notify",
            **env,
        )
        self.settings = load_settings(self.env)
        from worker.celery_app import app

        assert app.conf.broker_url == redis_url, "the producer must publish to the test Redis"
        self.rt: Runtime = build_runtime(self.settings)
        set_runtime(self.rt)
        self.workers: list[CeleryProcess] = []
        self.beats: list[CeleryProcess] = []
        self.server: WSGIServer | None = None
        self.redis: redis.Redis = self.rt.redis

    def start_callbacks(self) -> Stack:
        self.server = make_server(
            "127.0.0.1",
            self.callback_port,
            make_app(self.rt),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def start_worker(self, *args: str, pool: str = "threads", concurrency: int = 8) -> CeleryProcess:
        n = len(self.workers)
        w = CeleryProcess(
            "worker",
            self.env,
            name=f"w{n}-{self.callback_port}",
            args=["-P", pool, "-c", str(concurrency), "--loglevel", "INFO", *args],
            log_path=self.tmp / f"worker{n}.log",
        ).start()
        self.workers.append(w)
        return w

    def start_beat(self) -> CeleryProcess:
        n = len(self.beats)
        b = CeleryProcess(
            "beat", self.env, args=["--loglevel", "INFO"], log_path=self.tmp / f"beat{n}.log"
        ).start()
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
