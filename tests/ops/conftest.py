"""Fixtures for the run-and-operate tests: a sandbox gateway and settings from the environment.

The ``payouts`` commands read their settings from the process environment, so these
fixtures set it with ``monkeypatch`` and drop the cached settings and runtime before
and after each test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from config.settings import reset_settings
from sandbox.process import SandboxProcess
from tests.conftest import base_env
from worker.runtime import set_runtime

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
