"""The callback receiver of a local stack: in a thread of this process, or under gunicorn.

The thread form serves :func:`worker.callbacks.make_app` over a runtime this process
already holds (tests, the demo); the gunicorn form runs the web process as production
does (``worker.web``, its one launcher) (the chaos run kills and restarts everything around it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from worker.harness.processes import WebProcess
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
    """The web process as in production (``python -m worker.web``'s gunicorn command line,
    :class:`worker.harness.processes.WebProcess`): callbacks on ``port``."""

    def __init__(self, env: Mapping[str, str], port: int, log_path: Path) -> None:
        self.web = WebProcess(env, port=port, log_dir=log_path.parent)
        self.port = port

    def start(self) -> GunicornReceiver:
        self.web.start()
        return self

    def alive(self) -> bool:
        return self.web.alive()

    def stop(self) -> None:
        self.web.stop()


Receiver = ThreadReceiver | GunicornReceiver
