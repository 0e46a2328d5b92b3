"""`payouts demo` end to end: its own Redis, the faulty sandbox, worker, beat -- and the proof."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from worker.harness.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]


def demo_env() -> dict[str, str]:
    """The caller's environment without REDIS_URL: the demo starts an embedded Redis."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def children_of(pid: int) -> set[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.add(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_demo_smoke_proves_the_outcome(tmp_path: Path) -> None:
    """20 payouts through a faulty gateway: exit 0 and every proof line holds."""
    # when
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.ops.cli",
            "demo",
            "--payouts",
            "20",
            "--seed",
            "3",
            "--timeout",
            "90",
            "--json",
            str(tmp_path / "demo.json"),
        ],
        cwd=ROOT,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    # then
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "demo: PASS" in out
    for line in (
        "[ok  ] created at most once:",
        "[ok  ] final states match the gateway:",
        "[ok  ] money: succeeded here IDR",
        "[ok  ] orders in review have a reason:",
        # the 20 payouts and the 2 x 4 of the pause and balance-hold drills
        "[ok  ] all 28 orders final or in review",
        "[ok  ] pause: 4 orders enqueued while paused, 0 create requests",
        "[ok  ] balance hold: balance 0 -> paused (balance:",
    ):
        assert line in out, out[-3000:]
    assert "time to final (enqueue -> final): p50" in out
    assert "enqueued 20/20" in out  # progress lines are printed when not on a terminal
    assert (tmp_path / "demo.json").exists()


def test_demo_stops_everything_on_sigterm(redis_client: Any, redis_url: str) -> None:
    """Interrupted mid-run, the demo stops every process it started and exits 130; an exported
    REDIS_URL is never used (the demo ran on its own Redis: nothing was written there)."""
    # given: a demo well into its run, with a REDIS_URL exported
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.ops.cli", "demo", "--payouts", "100", "--timeout", "120"],
        cwd=ROOT,
        env={**demo_env(), "REDIS_URL": redis_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("enqueue:"):
                break
        assert any(x.startswith("enqueue:") for x in seen), "".join(seen)
        started = children_of(proc.pid)
        assert len(started) >= 4, started  # redis-server, sandbox, worker, beat
        # when
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # then
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted: stopping everything" in rest
    wait_for(lambda: not any(alive(p) for p in started), 10, what="the demo's children to exit")
    kept = re.search(r"logs kept in (\S+)", rest)
    assert kept, rest
    shutil.rmtree(kept.group(1), ignore_errors=True)
    assert redis_client.dbsize() == 0
    assert "redis:     embedded redis-server" in "".join(seen)


def test_demo_uses_an_explicit_redis_url(redis_client: Any, redis_url: str) -> None:
    """With --redis-url, the demo runs on that Redis (and leaves its orders there)."""
    # when
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.ops.cli",
            "demo",
            "--payouts",
            "10",
            "--no-faults",
            "--seed",
            "4",
            "--timeout",
            "60",
            "--redis-url",
            redis_url,
        ],
        cwd=ROOT,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    # then
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "redis:     using --redis-url" in out
    assert redis_client.exists("payouts:order:demo-4-00009")
