"""Per-worker liveness: a heartbeat each worker process writes while it consumes.

A worker can stay alive after a broker reconnect without consuming anything
(celery#8030), while its peers go on sweeping: cluster-wide progress cannot see it.
Each worker writes ``payouts:worker:{name}`` (unix time) whenever it finishes a task
(at most once a second) and when it runs the ``payouts.heartbeat`` task that
``payouts health --worker NAME`` sends to that worker's own direct queue; a worker
that stopped consuming stops writing, and its check fails.
"""

from __future__ import annotations

import time
from typing import Final

import redis

from worker import keys

#: a heartbeat key outlives a stopped worker this long (then "never seen")
HEARTBEAT_TTL_S: Final = 86400
#: a worker writes its heartbeat after a task at most this often
HEARTBEAT_EVERY_S: Final = 1.0

_last_write = 0.0


def write_heartbeat(client: redis.Redis, worker: str, *, force: bool = False) -> bool:
    """Record that ``worker`` just consumed a message; throttled unless ``force``."""
    global _last_write
    now = time.time()
    if not force and now - _last_write < HEARTBEAT_EVERY_S:
        return False
    _last_write = now
    client.set(keys.worker_heartbeat(worker), repr(now), ex=HEARTBEAT_TTL_S)
    return True


def heartbeat_age_s(client: redis.Redis, worker: str, now: float | None = None) -> float | None:
    """Seconds since ``worker`` last consumed, or None when it never did (or long ago)."""
    raw = client.get(keys.worker_heartbeat(worker))
    if raw is None:
        return None
    return max(0.0, (time.time() if now is None else now) - float(raw))
