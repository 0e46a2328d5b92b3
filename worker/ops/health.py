"""``payouts health``: progress-based liveness for container health checks.

It judges progress, not the process: a worker can stay alive after a broker
reconnect without consuming anything (celery#8030). It exits 1 when Redis does not
answer, when the sweep has not completed for ``--max-sweep-age`` seconds, when
the oldest due order is more than ``--max-late`` seconds past its due time, or when
the review backlog (orders only a person can settle) holds more than ``--max-review``
orders or one older than ``--max-review-age`` seconds (D25); it prints one line either
way.

``--worker NAME`` (the worker's Celery node name, ``celery -n NAME``) adds the check
of that one worker, for its container's health check: its heartbeat
(worker/liveness.py) must be at most ``--max-heartbeat-age`` seconds old. The check
also sends a ``payouts.heartbeat`` task to that worker's own direct queue, so an idle
worker that still consumes refreshes its heartbeat, and when the heartbeat is stale
it waits up to ``--wait`` seconds for that task to be consumed. A worker that stopped
consuming fails while its peers go on.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from worker import keys
from worker.connection import redis_for
from worker.settings import ConfigError, Settings, load_settings


@dataclass(frozen=True)
class Health:
    """The verdict and the one line printed."""

    healthy: bool
    line: str


def assess_health(
    s: Settings,
    *,
    max_late_s: float | None = None,
    max_sweep_age_s: float | None = None,
    max_review: int | None = None,
    max_review_age_s: float | None = None,
    now: float | None = None,
) -> Health:
    """Progress-based liveness: Redis answers, the sweep runs, due orders are picked up, and
    the review backlog stays within ``HEALTH_MAX_REVIEW`` / ``HEALTH_MAX_REVIEW_AGE``."""
    max_late = max_late_s if max_late_s is not None else max(3 * s.sweep_interval_s, 60.0)
    max_sweep = max_sweep_age_s if max_sweep_age_s is not None else 3 * s.sweep_interval_s
    review_cap = max_review if max_review is not None else s.health_max_review
    review_age_cap = max_review_age_s if max_review_age_s is not None else s.health_max_review_age_s
    # read-only (never claims): no loss-epoch check on its connection; under Sentinel the master
    client = redis_for(s, pool_size=2, identity_check=False)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zrange(keys.DUE, 0, 0, withscores=True)
        pipe.zcard(keys.DUE)
        pipe.get(keys.SWEEP_LAST)
        pipe.zcard(keys.REVIEW)
        pipe.hgetall(keys.PAUSE)
        pipe.zrange(keys.REVIEW, 0, 0, withscores=True)
        oldest, open_n, last, review_n, paused, first_review = pipe.execute()
    except Exception as exc:
        return Health(False, f"unhealthy: Redis does not answer ({type(exc).__name__})")
    finally:
        client.close()
    now = time.time() if now is None else now
    late = max(0.0, now - float(oldest[0][1])) if oldest else 0.0
    sweep_age = now - float(last) if last else None
    sweep_txt = "never" if sweep_age is None else f"{sweep_age:.1f}s ago"
    facts = f"open={open_n} review={review_n} oldest_due_late={late:.1f}s last_sweep={sweep_txt}"
    if paused:
        # a pause is a reason, not a failure: the sweep and the checks still run
        facts += "; paused: " + ", ".join(
            f"{scope} ({_pause_text(raw)})" for scope, raw in sorted(paused.items())
        )
    if sweep_age is not None and sweep_age > max_sweep:
        return Health(False, f"unhealthy: no sweep for {sweep_age:.0f}s (> {max_sweep:g}s); {facts}")
    if late > max_late:
        return Health(
            False, f"unhealthy: order {oldest[0][0]} is {late:.0f}s past due (> {max_late:g}s); {facts}"
        )
    # orders only a person can settle (payouts review): a backlog nobody works is a failure
    if review_cap and review_n > review_cap:
        return Health(
            False,
            f"unhealthy: {review_n} orders wait in review (> {review_cap}): "
            f"see payouts list --state review; {facts}",
        )
    waited = max(0.0, now - float(first_review[0][1])) if first_review else 0.0
    if review_age_cap and waited > review_age_cap:
        return Health(
            False,
            f"unhealthy: order {first_review[0][0]} has waited in review {waited:.0f}s "
            f"(> {review_age_cap:g}s): see payouts list --state review; {facts}",
        )
    return Health(True, f"healthy: {facts}")


def _pause_text(raw: str) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return "?"
    return f"{doc.get('source', 'operator')}: {str(doc.get('reason', ''))[:80]}"


def ping_worker(worker: str, expires_s: float) -> None:
    """Send ``payouts.heartbeat`` to the direct queue only ``worker`` consumes."""
    from worker.celery_app import app
    from worker.celeryconf import HEARTBEAT_TASK, worker_queue

    app.send_task(HEARTBEAT_TASK, queue=worker_queue(worker), expires=max(1.0, expires_s))


def assess_worker(
    s: Settings,
    worker: str,
    *,
    max_age_s: float = 60.0,
    wait_s: float = 10.0,
    ping: bool = True,
) -> Health:
    """One worker's liveness: its heartbeat is fresh, or becomes fresh within ``wait_s``
    after a heartbeat task is sent to its direct queue."""
    from worker.liveness import heartbeat_age_s

    client = redis_for(s, pool_size=2, identity_check=False)
    try:
        sent = time.time()
        age = heartbeat_age_s(client, worker)
        if ping:
            ping_worker(worker, expires_s=max_age_s)
        deadline = time.monotonic() + wait_s
        while age is None or age > max_age_s:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
            fresh = heartbeat_age_s(client, worker)
            if fresh is not None and fresh <= time.time() - sent:
                age = fresh  # written after our ping: it consumed
    except Exception as exc:
        return Health(False, f"unhealthy: worker {worker}: Redis does not answer ({type(exc).__name__})")
    finally:
        client.close()
    if age is None:
        return Health(False, f"unhealthy: worker {worker} never consumed (no heartbeat)")
    if age > max_age_s:
        return Health(
            False, f"unhealthy: worker {worker} has consumed nothing for {age:.0f}s (> {max_age_s:g}s)"
        )
    return Health(True, f"healthy: worker {worker} consumed {age:.1f}s ago")


def run_health(args: argparse.Namespace) -> int:
    from worker.ops.style import Answer, emit

    as_json = bool(getattr(args, "json", False))
    try:
        s = load_settings()
    except ConfigError as exc:
        line = f"unhealthy: configuration error: {exc}"
        return emit(Answer(line, {"healthy": False}, code=1), as_json=as_json)
    result = assess_health(
        s,
        max_late_s=args.max_late,
        max_sweep_age_s=args.max_sweep_age,
        max_review=args.max_review,
        max_review_age_s=args.max_review_age,
    )
    if result.healthy and args.worker:
        mine = assess_worker(s, args.worker, max_age_s=args.max_heartbeat_age, wait_s=args.wait)
        result = Health(mine.healthy, f"{mine.line}; {result.line}")
    return emit(
        Answer(result.line, {"healthy": result.healthy}, code=0 if result.healthy else 1), as_json=as_json
    )


def build_parser(prog: str = "payouts health") -> argparse.ArgumentParser:
    from worker.ops.style import parser

    p = parser(prog, "One-line progress-based liveness check (exit 1 when stuck).")
    p.add_argument(
        "--max-late",
        type=float,
        default=None,
        metavar="S",
        help="the oldest due order may be this late (default max(3*SWEEP_INTERVAL, 60))",
    )
    p.add_argument(
        "--max-sweep-age",
        type=float,
        default=None,
        metavar="S",
        help="the last sweep may be this old (default 3*SWEEP_INTERVAL)",
    )
    p.add_argument(
        "--max-review",
        type=int,
        default=None,
        metavar="N",
        help="at most this many orders may wait in review (default HEALTH_MAX_REVIEW; 0: no limit)",
    )
    p.add_argument(
        "--max-review-age",
        type=float,
        default=None,
        metavar="S",
        help="no order may wait in review longer (default HEALTH_MAX_REVIEW_AGE; 0: no limit)",
    )
    p.add_argument(
        "--worker",
        metavar="NAME",
        help="also check this worker (its Celery node name, e.g. celery@host) consumes",
    )
    p.add_argument(
        "--max-heartbeat-age",
        type=float,
        default=60.0,
        metavar="S",
        help="with --worker: its last consumed message may be this old (default 60)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="S",
        help="with --worker: wait this long for it to consume the heartbeat task (default 10)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_health(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
