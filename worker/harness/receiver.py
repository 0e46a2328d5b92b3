"""The callback receiver of a local stack: in a thread of this process, or under gunicorn.

The thread form serves :func:`worker.callbacks.make_app` over a runtime this process
already holds (tests, the demo); the gunicorn form runs ``gunicorn worker.callbacks:app``
as production does (the chaos run kills and restarts everything around it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import requests

from worker.harness.processes import wait_for
from worker.runtime import Runtime


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class ThreadReceiver:
    """``worker.callbacks`` on a loopback port, one thread per request, in this process."""

    def __init__(self, runtime: Runtime, port: int) -> None:
        from worker.callbacks import make_app

        self.port = port
        self.server = make_server(
            "127.0.0.1",
            port,
            make_app(runtime),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )

    def start(self) -> ThreadReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="callbacks").start()
        return self

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GunicornReceiver:
    """``gunicorn worker.callbacks:app`` (gthread) as a child process, as in production."""

    def __init__(self, env: Mapping[str, str], port: int, log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GunicornReceiver:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own gunicorn, fixed arguments
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    "python:worker.gunicornconf",
                    "worker.callbacks:app",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--worker-class",
                    "gthread",
                    "--workers",
                    "1",
                    "--threads",
                    "8",
                    "--timeout",
                    "30",
                    "--graceful-timeout",
                    "2",
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{self.port}/healthz"

        def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"the callback receiver exited: see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                return requests.get(url, timeout=1).status_code == 200
            return False

        wait_for(up, 30, interval_s=0.1, what="the callback receiver")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


Receiver = ThreadReceiver | GunicornReceiver
