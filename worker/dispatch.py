"""Publishing: the one way domain code sends a message (D63).

Domain modules (the producer, the operator desk, results) never touch the Celery app:
they call the process's dispatcher, ``rt.dispatch``. The Celery-backed one is built by
:func:`worker.runtime.build_runtime` from :class:`worker.celery_app.CeleryDispatcher`;
tests and tools hand the runtime another (a recorder, a broker of their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Dispatcher(Protocol):
    """Sends the two messages the domain publishes."""

    def submit(self, payout_cl_id: str) -> None:
        """Ask a worker to submit this order (the message carries only the id)."""

    def result(self, name: str, payload: Mapping[str, Any]) -> None:
        """Publish the web app's result message ``name`` (``RESULT_TASK``) with ``payload``."""
