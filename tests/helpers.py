"""What tests share besides fixtures: credentials, the worker environment, the per-test stack.

Everything here is a thin test-flavoured front of :mod:`worker.harness.stack`, which the
demo, the benchmarks and the chaos run use too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox.config import SandboxConfig
from worker.celery_app import app
from worker.harness import stack as local_stack
from worker.harness.stack import Credentials, LocalStack
from worker.pii import KeyRing

TEST_KEY = "test-platform-key-0123456789"
TEST_TOKEN = "test-authorization-token"
TEST_PLATFORM = "PF0001"
#: the personal-data key of this test session (generated: no key is committed)
TEST_PII_KEYS = KeyRing.generate("t1")
TEST_RING = KeyRing.parse(TEST_PII_KEYS)
TEST_CREDENTIALS = Credentials(TEST_PLATFORM, TEST_KEY, TEST_TOKEN, TEST_PII_KEYS)


def base_env(redis_url: str, gateway_url: str = "http://127.0.0.1:9", **extra: Any) -> dict[str, str]:
    """The worker environment of a test (the stack's defaults, the test credentials)."""
    # tests run against the sandbox, which names itself (D6): allowed here, refused by default
    extra = {"PAYOUTS_ALLOW_SANDBOX": "1", **extra}
    return local_stack.worker_env(redis_url, gateway_url, TEST_CREDENTIALS, **extra)


def sandbox_config(**overrides: Any) -> SandboxConfig:
    """The test sandbox: the test credentials, fast lifecycle, quiet, seeded."""
    return local_stack.sandbox_config(TEST_CREDENTIALS, **overrides)


class Stack(LocalStack):
    """One test's processes over the session's Redis and a sandbox: worker(s), beat, receiver."""

    def __init__(self, tmp: Path, redis_url: str, gateway_url: str, **env: Any) -> None:
        creds = TEST_CREDENTIALS
        super().__init__(tmp, redis_url=redis_url, gateway_url=gateway_url, credentials=creds, **env)
        self.tmp = tmp
        assert app.conf.broker_url == redis_url, "the producer must publish to the test Redis"

    def start_callbacks(self) -> Stack:
        """The callback receiver in a thread of the test process."""
        self.start_receiver()
        return self
