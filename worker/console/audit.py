"""The console's audit trail and counters.

An allowed action that changes an order is recorded by the command itself, in the
history entry of its atomic transition (actor and action in the entry). Everything
else -- denied, refused, stale (409), invalid, and pause/resume -- is written here:
one entry on :data:`keys.CONSOLE_AUDIT`, one on the order's own list (shown on its
page) and one count on :data:`keys.CONSOLE_ACTIONS`, in one MULTI. No personal data.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import redis

from worker import keys
from worker.console.auth import Actor
from worker.logs import get_logger

log = get_logger("payouts.console")

RESULTS: Final = ("ok", "denied", "conflict", "invalid", "refused", "error", "throttled", "locked")
AUDIT_MAXLEN: Final = 100_000
ORDER_AUDIT_MAX: Final = 100


def record(
    client: redis.Redis,
    actor: Actor | None,
    action: str,
    result: str,
    *,
    payout_cl_id: str | None = None,
    detail: str = "",
    request_id: str = "",
    remote: str = "",
    retention_s: float = 30 * 86400.0,
) -> None:
    """Write one audit entry and count it (``result`` is one of :data:`RESULTS`)."""
    entry: dict[Any, Any] = {
        "at": f"{time.time():.3f}",
        "actor": actor.name if actor else "-",
        "roles": ",".join(sorted(actor.roles)) if actor else "",
        "action": action,
        "result": result,
        "payout_cl_id": payout_cl_id or "",
        "detail": detail[:200],
        "request_id": request_id,
        "remote": remote,
    }
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.CONSOLE_AUDIT, entry, maxlen=AUDIT_MAXLEN, approximate=True)
    pipe.hincrby(keys.CONSOLE_ACTIONS, f"{action}:{result}", 1)
    if payout_cl_id and result != "ok":
        k = keys.console_audit(payout_cl_id)
        pipe.lpush(k, json.dumps(entry))
        pipe.ltrim(k, 0, ORDER_AUDIT_MAX - 1)
        pipe.expire(k, int(retention_s))
    pipe.execute()
    log.info(
        "console.action",
        actor=entry["actor"],
        action=action,
        result=result,
        payout_cl_id=payout_cl_id,
        detail=detail[:200],
    )


def count(client: redis.Redis, action: str, result: str) -> int:
    return int(client.hget(keys.CONSOLE_ACTIONS, f"{action}:{result}") or 0)


def order_entries(client: redis.Redis, payout_cl_id: str) -> list[dict[str, Any]]:
    """The console's non-transition entries for one order, oldest first."""
    raw = client.lrange(keys.console_audit(payout_cl_id), 0, -1)
    return [json.loads(x) for x in reversed(raw)]
