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


def _descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid`` with its command line (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = {}, {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier and c not in found}
        for c in frontier:
            try:
                found[c] = (
                    Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                found[c] = ""
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(200)
def test_sigterm_stops_every_process_the_bench_started() -> None:
    """`payouts bench` stopped by SIGTERM (a `timeout`) exits 130 and leaves no Celery worker,
    Redis or sandbox behind (none orphaned, reconnecting to a Redis that is gone)."""
    import signal

    from worker.harness.processes import wait_for

    # given: a bench with its Celery worker running
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.ops.cli", "bench", "--tiny"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = wait_for(
            lambda: (lambda d: d if any("celery" in c for c in d.values()) else None)(_descendants(proc.pid)),
            120,
            interval_s=0.2,
            what="the bench's celery worker",
        )
        # when
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # then
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: stopped everything the bench started" in err
    wait_for(lambda: not any(_alive(p) for p in started), 15, what="the bench's processes to exit")
