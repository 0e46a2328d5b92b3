"""Shared fixtures: a private Redis server, settings and a runtime bound to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from config.settings import Settings, load_settings, reset_settings
from sandbox.config import SandboxConfig
from sandbox.process import SandboxProcess
from worker.embedded import RedisServer
from worker.runtime import Runtime, build_runtime

TEST_KEY = "test-platform-key-0123456789"
TEST_TOKEN = "test-authorization-token"
TEST_PLATFORM = "PF0001"


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


def sandbox_config(**overrides: Any) -> SandboxConfig:
    base: dict[str, Any] = dict(
        host="127.0.0.1", port=0, platform_id=TEST_PLATFORM, platform_key=TEST_KEY,
        authorization=TEST_TOKEN, pending_s=0.1, processing_s=0.3, failure_ratio=0.0,
        seed=7, callback_delays_s=(0.2, 0.5, 1.0, 2.0), callback_timeout_s=2.0, quiet=True,
    )  # fmt: skip
    base.update(overrides)
    return SandboxConfig(**base)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxProcess]:
    proc = SandboxProcess(sandbox_config()).start()
    try:
        yield proc
    finally:
        proc.stop()
