"""Chaos: several hundred payouts while workers and Redis are killed and the gateway misbehaves.

The run itself lives in :mod:`tests.chaos.run` (also ``make soak``); these tests call it with
the CI size and check that the invariant checker is not vacuous.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.run import ChaosConfig, run_chaos

#: the CI run's seed; CHAOS_SEED=<n> replays another (the failing run prints its seed)
CI_SEED = 20_241_124
#: every fault kind the run injects must really have fired (the chaos happened)
MUST_FIRE = (
    "create_5xx_before",
    "create_lost:hang",
    "create_lost:5xx",
    "create_lost:empty",
    "create_lost:garbled",
    "create_lost:reset",
    "latency",
    "query_5xx",
    "query_timeout",
    "invisible",
    "callback:duplicate",
    "callback:out_of_order",
    "callback:delay",
    "callback:never",
    "callback:wrong_key",
)


@pytest.mark.timeout(600)
def test_guarantees_hold_under_chaos(tmp_path: Path) -> None:
    """With workers SIGKILLed, Redis SIGKILLed and restarted from its AOF, two beats and every
    gateway fault on: no payout is created twice, none is forgotten, none ends in a state the
    gateway contradicts, the money agrees to the minor unit, no forged callback changes
    anything, and no log line holds a secret or misses its payout_cl_id."""
    # given
    seed = int(os.environ.get("CHAOS_SEED") or CI_SEED)
    lines: list[str] = []
    cfg = ChaosConfig(
        orders=300,
        seconds=30,
        seed=seed,
        kills=5,
        redis_restarts=2,
        workdir=tmp_path / "chaos",
        keep=True,
        out=lines.append,
    )
    # when
    report = run_chaos(cfg)
    # then
    print("\n".join(lines))  # pytest shows it when the test fails
    replay = f"replay: CHAOS_SEED={seed} pytest -m chaos, or {cfg.replay()}"
    assert report.ok, "\n".join([*report.verdict.violations, replay])
    f = report.figures
    assert f["results"] and sum(f["results"].values()) == 300
    assert len(f["kills"]) == 5 and len(f["redis_restarts"]) == 2
    # workers survive Redis restarts (worker/transport.py turns the lost client into a reconnect)
    assert f["unexpected_exits"] == 0
    fired = f["gateway"]["faults_fired"]
    assert [k for k in MUST_FIRE if not fired.get(k)] == [], fired
    assert f["forged_orders"] > 0 and f["results"].get("failed", 0) > 0
    assert f["results"].get("rejected", 0) > 0


# ----------------------------------------------------------------------------- the checker
