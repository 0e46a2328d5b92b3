"""The web process: two listeners in one gunicorn, and the one launcher that starts it.

* the **public** listener (``WEB_BIND``, default ``0.0.0.0:$PORT`` or ``0.0.0.0:8000``)
  serves the gateway's callbacks alone: ``POST /payouts/notify`` and ``GET /healthz``;
  every other path is 404 there (D50);
* the **admin** listener (``WEB_ADMIN_BIND``, default ``127.0.0.1:8001``) serves the
  operator console under ``/console/``, ``GET /metrics`` and ``GET /healthz``.

Which listener a request came in on is read from the accepted socket
(``gunicorn.socket``'s local port), never from a header the client sends. Under another
WSGI server (no ``gunicorn.socket``) every request is public: the safe side.

Slow clients (D16, issue 21): gunicorn runs **gevent** workers, so a connection that
trickles its body holds one greenlet, not one of a few threads; the body of a callback or
a console form must arrive within ``WEB_BODY_DEADLINE_S`` (10 s) or the request is
answered 408 and closed. Measured in docs/performance.md ("Slow clients").

The launcher, used by the Procfile, docker compose, the harness and the tests::

    python -m worker.web                       # gunicorn with both listeners
    python -m worker.web --print               # the gunicorn command line, not run
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import redis

from worker import metrics
from worker.callbacks import BODY_DEADLINE_S, StartResponse, WSGIApp, make_app, reply
from worker.logs import get_logger
from worker.runtime import Runtime, get_runtime
from worker.settings import ConfigError

log = get_logger("payouts.web")

METRICS_PATH: Final = "/metrics"
CONSOLE_PREFIX: Final = "/console"
DEFAULT_PUBLIC_PORT: Final = 8000
DEFAULT_ADMIN_BIND: Final = "127.0.0.1:8001"
#: gunicorn worker processes and, per process, open connections (greenlets): the limit on
#: concurrent clients is workers x connections; beyond it new connections wait in the backlog
DEFAULT_WORKERS: Final = 2
DEFAULT_CONNECTIONS: Final = 1000


def _metrics(rt: Runtime, start: StartResponse) -> list[bytes]:
    """``GET /metrics``: the cluster's Prometheus exposition, read from Redis (worker.metrics)."""
    try:
        data = metrics.render(rt.redis)
    except ImportError:
        return reply(start, "501 Not Implemented", "0003", "install the 'metrics' extra (prometheus_client)")
    except redis.exceptions.RedisError as exc:
        log.error("metrics.store_down", error=type(exc).__name__)
        return reply(start, "503 Service Unavailable", "0001", "store unavailable")
    start("200 OK", [("Content-Type", metrics.CONTENT_TYPE), ("Content-Length", str(len(data)))])
    return [data]


def body_deadline_s(env: Mapping[str, str]) -> float:
    """``WEB_BODY_DEADLINE_S`` (default 10): seconds a request body may take to arrive."""
    raw = env.get("WEB_BODY_DEADLINE_S") or str(BODY_DEADLINE_S)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 300:
        raise ConfigError(f"WEB_BODY_DEADLINE_S must be seconds in (0, 300], got {raw!r}")
    return value


def make_public_app(runtime: Runtime | None = None, *, deadline_s: float = BODY_DEADLINE_S) -> WSGIApp:
    """The public listener: the callback receiver and ``/healthz``, nothing else."""
    return make_app(runtime, body_deadline_s=deadline_s)


def make_admin_app(runtime: Runtime | None = None, console: WSGIApp | None = None) -> WSGIApp:
    """The admin listener: ``/metrics``, ``/healthz`` and the console under ``/console/``."""
    from worker.console import make_console

    desk = console if console is not None else make_console(runtime)

    def admin(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        method = str(environ.get("REQUEST_METHOD", "GET"))
        if path == "/healthz" and method == "GET":
            return reply(start, "200 OK", "0000")
        if path == METRICS_PATH and method == "GET":
            return _metrics(runtime or get_runtime(), start)
        if path == CONSOLE_PREFIX:
            start("308 Permanent Redirect", [("Location", f"{environ.get('SCRIPT_NAME', '')}/console/")])
            return [b""]
        if path.startswith(CONSOLE_PREFIX + "/"):
            sub = {**environ, "SCRIPT_NAME": str(environ.get("SCRIPT_NAME", "")) + CONSOLE_PREFIX}
            sub["PATH_INFO"] = path[len(CONSOLE_PREFIX) :]
            return desk(sub, start)
        return reply(start, "404 Not Found", "0002", "not found")

    return admin


def listener_port(environ: Mapping[str, Any]) -> int | None:
    """The local port of the socket this request was accepted on (gunicorn), else None."""
    sock = environ.get("gunicorn.socket")
    try:
        name = sock.getsockname() if sock is not None else None
    except OSError:
        return None
    if isinstance(name, tuple) and len(name) >= 2 and isinstance(name[1], int):
        return name[1]
    return None


def make_web_app(
    runtime: Runtime | None = None,
    *,
    admin_port: int | None = None,
    console: WSGIApp | None = None,
    deadline_s: float = BODY_DEADLINE_S,
) -> WSGIApp:
    """Both listeners in one WSGI app: a request accepted on ``admin_port`` goes to the admin
    app, every other one to the public app (``admin_port=None``: everything is public)."""
    public = make_public_app(runtime, deadline_s=deadline_s)
    admin = make_admin_app(runtime, console) if admin_port is not None else None

    def web(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        # logging is the web process's (worker/gunicornconf.py), never configured here
        if admin is not None and listener_port(environ) == admin_port:
            return admin(environ, start)
        return public(environ, start)

    return web


# -- the launcher --------------------------------------------------------------


def _port_of(bind: str, name: str) -> int:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name} must be host:port (e.g. 127.0.0.1:8001), got {bind!r}")
    return int(port)


def binds(env: Mapping[str, str]) -> tuple[str, str]:
    """(public bind, admin bind) from ``WEB_BIND`` / ``PORT`` and ``WEB_ADMIN_BIND``."""
    public = env.get("WEB_BIND") or f"0.0.0.0:{env.get('PORT') or DEFAULT_PUBLIC_PORT}"
    admin = env.get("WEB_ADMIN_BIND") or DEFAULT_ADMIN_BIND
    if _port_of(public, "WEB_BIND") == _port_of(admin, "WEB_ADMIN_BIND"):
        raise ConfigError("WEB_ADMIN_BIND must use another port than the public listener (WEB_BIND/PORT)")
    return public, admin


def gunicorn_argv(
    public_bind: str,
    admin_bind: str,
    *,
    workers: int = DEFAULT_WORKERS,
    connections: int = DEFAULT_CONNECTIONS,
    python: str = sys.executable,
    extra: Sequence[str] = (),
) -> list[str]:
    """The one gunicorn command line of the web process (gevent workers, both listeners)."""
    return [
        python,
        "-m",
        "gunicorn",
        "-c",
        "python:worker.gunicornconf",
        "--bind",
        public_bind,
        "--bind",
        admin_bind,
        "--workers",
        str(workers),
        "--worker-connections",
        str(connections),
        *extra,
        "worker.web:app",
    ]


def launch_env(public_bind: str, admin_bind: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the web process: ``WEB_ADMIN_BIND`` tells the app its admin port."""
    env = dict(os.environ if base is None else base)
    env["WEB_BIND"] = public_bind
    env["WEB_ADMIN_BIND"] = admin_bind
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.web", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_WORKERS") or DEFAULT_WORKERS))
    parser.add_argument(
        "--worker-connections",
        type=int,
        default=int(os.environ.get("WEB_WORKER_CONNECTIONS") or DEFAULT_CONNECTIONS),
    )
    parser.add_argument("--print", action="store_true", help="print the gunicorn command line, do not run it")
    args = parser.parse_args(argv)
    try:
        public, admin = binds(os.environ)
    except ConfigError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    cmd = gunicorn_argv(public, admin, workers=args.workers, connections=args.worker_connections)
    if args.print:
        print(" ".join(cmd))
        return 0
    os.execve(cmd[0], cmd, launch_env(public, admin))  # noqa: S606 - our own gunicorn, fixed arguments
    return 0  # pragma: no cover - execve does not return


_APP: list[WSGIApp] = []


def __getattr__(name: str) -> WSGIApp:
    """``worker.web:app`` (what gunicorn loads), built on first use from the environment."""
    if name != "app":
        raise AttributeError(name)
    if not _APP:
        admin = os.environ.get("WEB_ADMIN_BIND")
        port = _port_of(admin, "WEB_ADMIN_BIND") if admin else None
        _APP.append(make_web_app(admin_port=port, deadline_s=body_deadline_s(os.environ)))
    return _APP[0]


if __name__ == "__main__":
    raise SystemExit(main())
