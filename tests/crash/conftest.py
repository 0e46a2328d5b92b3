"""Crash fixtures: the integration stack (sandbox over HTTP, real Celery workers, beat)."""

from __future__ import annotations

# the integration fixtures, shared rather than copied: sandbox, gateway, make_stack
from tests.integration.conftest import gateway, make_stack  # noqa: F401
