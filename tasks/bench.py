"""The baseline task: ``bench.noop`` does nothing, so its rate is Celery's own cost.

Loaded only by bench workers (``celery worker --include worker.tasks.bench``);
it is never routed anywhere by the production configuration.
"""

from __future__ import annotations

from worker.celery_app import app

NOOP_TASK = "bench.noop"


@app.task(name=NOOP_TASK, ignore_result=True)
def noop(payout_cl_id: str = "") -> None:
    """Take the same one-string argument as ``payouts.submit`` and do nothing with it."""
    return None
