"""``payouts bench`` runs end to end and reports every figure (no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

#: the keys docs/performance.md and ``make bench`` read; each a positive number
HEADLINE = (
    "noop_tasks_per_s",
    "submit_per_s",
    "submit_vs_noop",
    "latency200_ratio_to_ideal",
    "sweep_tick_ratio_1m_vs_1k",
    "redis_bytes_per_order",
    "enqueue_per_s",
    "delay_per_s",
    "enqueue_vs_delay",
    "dispatch_10k_due_s",
    "cpu_ms_per_payout",
    "noop_cpu_ms",
    "latency200_per_s",
    "redis_bytes_per_order_e2e",
    "submit_always_vs_everysec",
    "submit_per_s_everysec",
    "enqueue_sealed_vs_plain",
    "submit_sealed_vs_plain",
)


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (math.isfinite(value) and value > 0)
    )


@pytest.mark.timeout(200)
def test_tiny_bench_writes_every_key(tmp_path: Path) -> None:
    """A tiny run starts its own Redis, sandbox, workers and beat and writes the JSON."""
    # given
    out = tmp_path / "bench.json"
    # when
    proc = subprocess.run(
        [sys.executable, "-m", "worker.ops.cli", "bench", "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=190,
    )
    # then
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    for key in HEADLINE:
        assert _positive(data[key]), (key, data.get(key))
    for key in ("enqueue_to_accepted_ms", "enqueue_to_final_ms"):
        assert all(_positive(data[key][p]) for p in ("p50_ms", "p95_ms", "p99_ms")), data[key]
    assert data["pools"] and all(_positive(p["payouts_per_s"]) for p in data["pools"])
    assert _positive(data["scaling"]["instant_2_vs_1"])
    machine = data["machine"]
    assert machine["nproc"] >= 1 and machine["python"] and machine["celery"]
    assert "submit / no-op" in proc.stdout  # the table was printed
