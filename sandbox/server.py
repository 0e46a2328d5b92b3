"""The sandbox gateway: an aiohttp server that behaves like the payout gateway of docs/gateway.md.

The sandbox is three parts: the gateway's HTTP API (:mod:`worker.sandbox.api`), the simulated
bank behind it (:mod:`worker.sandbox.bank`), and this module, which holds them together with
the settings, faults, counts and background tasks, and serves them.

Gateway endpoints (docs/gateway.md §1-3)::

    POST /gateway/api/v2/payouts                  create (signed body)
    GET  /gateway/api/v2/payouts?<filters>        list query (Authorization header)
    GET  /gateway/api/v2/payouts/{payout_cl_id}   single query (Authorization header)
    GET  /gateway/api/v2/platforms/balance        balance (Authorization header)

Gateway error codes are answered with HTTP 200 and ``{"error_code", "error_msg"}``.
Admin endpoints live under ``/_sandbox/`` (see :mod:`worker.sandbox.admin`). Faults are
described in :mod:`worker.sandbox.faults`.

Orders move 1 (pending) -> 2 (processing) -> 3, 4 or 5 (:mod:`worker.sandbox.bank`).

Modes that disagree with the worker's guesses (docs/gateway.md §11), set at start or through
``PATCH /_sandbox/settings``: ``duplicate_check`` (off: a repeated ``payout_cl_id`` makes a
second payout), ``record_signature``, ``list_filter`` / ``list_order``, ``callbacks``,
``callback_framing``, ``callback_statuses``, ``callback_signature``, ``sign_zero_values``; a TLS listener with
handshake faults (:mod:`worker.sandbox.tls`). Every answer carries ``X-Payout-Sandbox: 1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Final

from aiohttp import web

from .api import GatewayApi
from .bank import Bank
from .callbacks import Notifier
from .config import SANDBOX_HEADER, SandboxConfig
from .faults import FaultBook
from .orders import OrderBook
from .tls import TlsListener, TlsSetup, server_context

__all__ = ["SANDBOX_HEADER", "Sandbox", "SandboxConfig", "create_app", "run", "serve"]

log = logging.getLogger("sandbox")


class Sandbox:
    """One sandbox gateway: its settings, faults, counts and background tasks, holding the
    simulated bank (``bank``) and the gateway API that answers for it (``api``)."""

    def __init__(self, config: SandboxConfig) -> None:
        #: The settings given at start; ``reset`` goes back to them.
        self.start_config = config
        self.config = config
        self.faults = FaultBook(config.seed)
        self.faults.replace(config.faults)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.notifier = Notifier(self)
        self.bank = Bank(lambda: self.config, self.faults, self.spawn, self.notifier.on_final)
        self.api = GatewayApi(self)
        #: TLS listener: connections, handshakes, handshake_failed, faults by ``mode:how``.
        self.tls_stats: Counter[str] = Counter()
        #: The TLS listener's URL and certificate, once started (see :mod:`worker.sandbox.tls`).
        self.tls_info: dict[str, Any] = {"enabled": False}
        self.started_at = time.time()
        self.reset_stats()

    @property
    def book(self) -> OrderBook:
        """The bank's orders and ledger (notifications and the admin read them)."""
        return self.bank.book

    # ------------------------------------------------------------- plumbing

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, kept alive and cancelled on reset/shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
        self.bank.lifecycles.clear()

    def apply_settings(self, changes: dict[str, Any]) -> None:
        """Change runtime settings (validated first: a bad change changes nothing)."""
        self.config = self.config.with_runtime_changes(changes)
        self.bank.configure_book()

    def reset_stats(self) -> None:
        self.tls_stats.clear()
        self.requests: Counter[str] = Counter()
        self.responses: dict[str, Counter[str]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.notifier.reset_stats()

    def reset(self, *, keep_faults: bool = False, keep_settings: bool = False) -> None:
        """Forget every order, count and (unless ``keep_faults``) fault rule; go back to the
        start settings and balance (unless ``keep_settings``)."""
        if not keep_settings:
            self.config = self.start_config
            self.bank.configure_book()
        self.cancel_tasks()
        self.bank.clear()
        if keep_faults:
            self.faults.restart_counts()
        else:
            self.faults.clear()
        self.reset_stats()

    def count_response(self, endpoint: str, outcome: str) -> None:
        self.responses.setdefault(endpoint, Counter())[outcome] += 1

    def stats(self) -> dict[str, Any]:
        by_status: Counter[str] = Counter(str(o.status) for o in self.book.all())
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "requests": dict(self.requests),
            "responses": {name: dict(counts) for name, counts in self.responses.items()},
            "faults_fired": dict(self.faults.fired),
            "callbacks": dict(self.notifier.stats),
            "orders": {"total": len(self.book), "by_status": dict(by_status)},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "background_tasks": len(self.tasks),
            "tls": dict(self.tls_stats),
        }


SANDBOX_KEY: Final = web.AppKey("sandbox", Sandbox)


@web.middleware
async def _track_in_flight(request: web.Request, handler: Any) -> web.StreamResponse:
    sandbox = request.app[SANDBOX_KEY]
    sandbox.in_flight += 1
    sandbox.max_in_flight = max(sandbox.max_in_flight, sandbox.in_flight)
    try:
        result: web.StreamResponse = await handler(request)
        return result
    finally:
        sandbox.in_flight -= 1


async def _identify(_: web.Request, response: web.StreamResponse) -> None:
    """Every answer says it comes from the sandbox (see ``SANDBOX_HEADER``)."""
    response.headers[SANDBOX_HEADER] = "1"


def create_app(config: SandboxConfig | None = None) -> web.Application:
    """The aiohttp application of a sandbox gateway (gateway and admin routes)."""
    from . import admin

    sandbox = Sandbox(config or SandboxConfig())
    app = web.Application(middlewares=[_track_in_flight], client_max_size=1024 * 1024)
    app.on_response_prepare.append(_identify)
    app[SANDBOX_KEY] = sandbox
    api = sandbox.api
    payouts = "/gateway/api/v2/payouts"
    app.router.add_post(payouts, api.handle_create)
    app.router.add_get(payouts, api.handle_list, allow_head=False)
    app.router.add_get(payouts + "/{payout_cl_id}", api.handle_single, allow_head=False)
    app.router.add_get("/gateway/api/v2/platforms/balance", api.handle_balance, allow_head=False)
    for method in ("PUT", "PATCH", "DELETE"):
        app.router.add_route(method, payouts, api.handle_wrong_method)
    admin.add_routes(app, sandbox)

    async def on_startup(_: web.Application) -> None:
        await sandbox.notifier.open()

    async def on_cleanup(_: web.Application) -> None:
        sandbox.cancel_tasks()
        await sandbox.notifier.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def _raise_fd_limit() -> None:
    """Many concurrent slow requests need many sockets: lift the soft limit to the hard one."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


async def serve(
    config: SandboxConfig,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM in the main thread).

    Prints ``sandbox listening on <url>`` once connections are accepted, and passes the
    URL to ``on_ready`` (handy to run the sandbox in a thread of a test process). With a
    TLS listener (``tls_port``), first prints
    ``sandbox tls listening on https://HOST:PORT cert <path>``.
    """
    _raise_fd_limit()
    app = create_app(config)
    sandbox = app[SANDBOX_KEY]
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=config.backlog, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    listener: TlsListener | None = None
    setup: TlsSetup | None = None
    if config.tls_port is not None:
        setup = TlsSetup(config.tls_dir, [config.host])
        assert runner.server is not None  # set by runner.setup()
        listener = TlsListener(
            sandbox.faults,
            runner.server,
            server_context(setup.cert, setup.key),
            sandbox.tls_stats,
            quiet=config.quiet,
        )
        tls_port = await listener.start(config.host, config.tls_port, config.backlog)
        tls_url = f"https://{_url_host(config.host)}:{tls_port}"
        sandbox.tls_info = setup.info(tls_url, tls_port)
        print(f"sandbox tls listening on {tls_url} cert {setup.cert}", flush=True)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    url = f"http://{_url_host(config.host)}:{port}"
    print(f"sandbox listening on {url}", flush=True)
    if on_ready is not None:
        on_ready(url)
    try:
        await stop.wait()
    finally:
        if listener is not None:
            await listener.close()
        await runner.cleanup()
        if setup is not None:
            setup.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run(config: SandboxConfig) -> None:
    """Serve ``config`` in this process until interrupted (one asyncio loop, no threads)."""
    logging.basicConfig(
        level=logging.WARNING if config.quiet else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
