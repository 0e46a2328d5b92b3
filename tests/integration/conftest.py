"""Integration fixtures: the sandbox over HTTP, a real Celery worker, beat, the callback receiver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import Stack, base_env
from worker.runtime import set_runtime
from worker.sandbox.process import SandboxProcess
from worker.settings import reset_settings


@pytest.fixture
def gateway(sandbox: SandboxProcess) -> Iterator[SandboxProcess]:
    """The session's sandbox, emptied (orders, ledger, faults) before each test."""
    assert sandbox.admin is not None
    sandbox.admin.reset()
    yield sandbox
    sandbox.admin.reset()


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


BANKS = "BCA,BNI,BRI,MANDIRI"


@pytest.fixture
def ops_sandbox(sandbox: SandboxProcess) -> SandboxProcess:
    """The session's sandbox (tests/conftest.py), emptied first."""
    sandbox.admin.reset()
    return sandbox


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[Callable[..., dict[str, str]]]:
    """``use_env(gateway_url, **extra)``: point the commands at the test Redis and a gateway."""

    def apply(gateway_url: str = "http://127.0.0.1:9", **extra: Any) -> dict[str, str]:
        env = base_env(redis_url, gateway_url, PAYOUT_BANK_LIST=BANKS, **extra)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
        set_runtime(None)
        reset_settings()
        return env

    yield apply
    set_runtime(None)
    reset_settings()
