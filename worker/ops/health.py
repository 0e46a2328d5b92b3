"""``payouts health``: progress-based liveness for container health checks.

It judges progress, not the process: a worker can stay alive after a broker
reconnect without consuming anything (celery#8030). It exits 1 when Redis does not
answer, when the sweep has not completed for ``--max-sweep-age`` seconds, or when
the oldest due order is more than ``--max-late`` seconds past its due time; it
prints one line either way.
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
    now: float | None = None,
) -> Health:
    """Progress-based liveness: Redis answers, the sweep runs, due orders are picked up."""
    max_late = max_late_s if max_late_s is not None else max(3 * s.sweep_interval_s, 60.0)
    max_sweep = max_sweep_age_s if max_sweep_age_s is not None else 3 * s.sweep_interval_s
    # read-only (never claims): no loss-epoch check on its connection; under Sentinel the master
    client = redis_for(s, pool_size=2, identity_check=False)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zrange(keys.DUE, 0, 0, withscores=True)
        pipe.zcard(keys.DUE)
        pipe.get(keys.SWEEP_LAST)
        pipe.zcard(keys.REVIEW)
        pipe.hgetall(keys.PAUSE)
        oldest, open_n, last, review_n, paused = pipe.execute()
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
    return Health(True, f"healthy: {facts}")


def _pause_text(raw: str) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return "?"
    return f"{doc.get('source', 'operator')}: {str(doc.get('reason', ''))[:80]}"


def run_health(args: argparse.Namespace) -> int:
    try:
        s = load_settings()
    except ConfigError as exc:
        print(f"unhealthy: configuration error: {exc}", flush=True)
        return 1
    result = assess_health(s, max_late_s=args.max_late, max_sweep_age_s=args.max_sweep_age)
    print(result.line, flush=True)
    return 0 if result.healthy else 1


def build_parser(prog: str = "payouts health") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="One-line progress-based liveness check (exit 1 when stuck)."
    )
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_health(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
