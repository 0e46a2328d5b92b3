"""Fuzz fixtures: module-scoped runtimes (Hypothesis runs many examples per test;
each example flushes the database itself)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import load_settings
from tests.conftest import base_env
from worker.runtime import Runtime, build_runtime, set_runtime


@pytest.fixture(scope="module")
def make_module_runtime(redis_url: str) -> Iterator[Any]:
    """Build runtimes on the test Redis (or any URL); closed at the end of the module."""
    made: list[Runtime] = []

    def make(url: str | None = None, **extra: Any) -> Runtime:
        rt = build_runtime(load_settings(base_env(url or redis_url, **extra)), send_task=None)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture(scope="module")
def fuzz_rt(make_module_runtime: Any) -> Iterator[Runtime]:
    rt: Runtime = make_module_runtime()
    yield rt
    rt.redis.flushdb()


@pytest.fixture(scope="module")
def process_runtime(fuzz_rt: Runtime) -> Iterator[Runtime]:
    """Code that calls get_runtime() (the Celery tasks) gets the fuzz runtime."""
    set_runtime(fuzz_rt)
    yield fuzz_rt
    set_runtime(None)
