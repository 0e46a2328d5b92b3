"""`python -m worker.sandbox`, its settings layering, and the subprocess helper."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from worker.sandbox.__main__ import build_parser, config_from_args, main
from worker.sandbox.client import SandboxAdmin
from worker.sandbox.config import SandboxConfig
from worker.sandbox.faults import FaultBook, FaultRuleError
from worker.sandbox.process import SandboxProcess, start_sandbox


def _config(argv: list[str]) -> SandboxConfig:
    return config_from_args(build_parser().parse_args(argv))


def test_defaults_are_the_demo_settings(monkeypatch):
    """With no flags or environment, the sandbox runs with the documented demo settings."""
    monkeypatch.delenv("SANDBOX_PLATFORM_KEY", raising=False)
    monkeypatch.delenv("SANDBOX_AUTHORIZATION", raising=False)
    config = _config([])
    assert (config.platform_id, config.platform_key, config.authorization) == (
        "PF0001",
        "sandbox-secret-key",
        "sandbox-token",
    )
    assert config.sign_types == ("HMAC-SHA256", "MD5")
    assert config.balance_minor is None
    assert len(config.callback_delays_s) == 9
    assert sum(config.callback_delays_s) <= 3600
    assert "sandbox-secret-key" not in repr(config)
    assert "platform_key" not in config.to_dict()


def test_layering_config_env_flags(tmp_path, monkeypatch):
    """--config, then the environment, then flags; --faults takes a file or inline JSON."""
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"kind": "create_lost", "mode": "empty"}]))
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    monkeypatch.delenv("SANDBOX_PLATFORM_KEY", raising=False)
    monkeypatch.setenv("SANDBOX_PLATFORM_KEY_FILE", str(key_file))
    config = _config(
        [
            "--config",
            '{"seed": 5, "pending_s": 9, "platform_key": "from-config"}',
            "--pending-s",
            "0.1",
            "--sign-types",
            "HMAC-SHA256",
            "--faults",
            str(faults),
            "--callback-delays",
            "0.1,0.2",
            "--balance",
            "100000000",
            "--port",
            "0",
        ]
    )
    assert config.seed == 5
    assert config.pending_s == 0.1
    assert config.platform_key == "from-file"
    assert config.sign_types == ("HMAC-SHA256",)
    assert config.faults == [{"kind": "create_lost", "mode": "empty"}]
    assert config.callback_delays_s == (0.1, 0.2)
    assert config.balance_minor == 100_000_000
    inline = _config(["--faults", '{"rules": [{"kind": "query_5xx"}]}'])
    assert inline.faults == [{"kind": "query_5xx"}]


@pytest.mark.parametrize(
    "argv",
    [
        ["--sign-types", "SHA1"],
        ["--failure-ratio", "2"],
        ["--config", '{"colour": "red"}'],
        ["--faults", '[{"kind": "nope"}]'],
        ["--faults", "/no/such/file.json"],
        ["--min-amount", "10", "--max-amount", "5"],
    ],
)
def test_bad_settings_exit_2_with_a_message(argv, capsys):
    """A bad flag value exits 2 with a message naming it."""
    assert main(argv) == 2
    assert "sandbox: bad" in capsys.readouterr().err


def test_fault_book_validates_whole_lists():
    """A fault list with one bad rule is refused whole and changes nothing."""
    book = FaultBook(seed=1)
    with pytest.raises(FaultRuleError, match="rule #1"):
        book.replace([{"kind": "latency"}, {"kind": "latency", "seconds": "slow"}])
    assert book.rules == []
    with pytest.raises(FaultRuleError, match="list"):
        book.replace({"kind": "latency"})  # type: ignore[arg-type]


def test_python_m_sandbox_prints_the_listening_line_and_stops_on_sigterm():
    """`python -m worker.sandbox --port 0` prints where it listens, serves, and exits 0 on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.sandbox", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        url = line.split(" on ")[1].strip()
        assert requests.get(url + "/_sandbox/health", timeout=5).json()["status"] == "ok"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()


def test_start_sandbox_passes_overrides_and_cleans_up():
    """start_sandbox: overrides reach the child (the key via the environment), stop ends it."""
    with start_sandbox(platform_id="PF0777", platform_key="k-777", seed=9) as gw:
        assert isinstance(gw, SandboxProcess)
        assert gw.config.platform_id == "PF0777"
        assert gw.admin.config()["platform_id"] == "PF0777"
        assert gw.admin.config()["seed"] == 9
        assert "platform_key" not in gw.admin.config()
        assert "k-777" not in " ".join(gw.process.args)
        process = gw.process
    assert process.poll() is not None
    assert not gw.running


def test_restart_keeps_the_port_and_forgets_orders(make_body):
    """A sandbox restart keeps its port and starts with an empty ledger."""
    with start_sandbox() as gw:
        port = gw.port
        body = make_body("rs-1")
        requests.post(gw.url + "/gateway/api/v2/payouts", json=body, timeout=5)
        assert gw.admin.ledger()["totals"]["orders"] == 1
        gw.restart()
        assert gw.port == port
        assert gw.admin.ledger()["totals"]["orders"] == 0


def test_serve_in_process_thread(make_body):
    """serve() runs in a thread of the caller too (real HTTP), and stops on its event."""
    import asyncio
    import threading

    from worker.sandbox.server import serve

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: list[str] = []
    config = SandboxConfig(port=0, quiet=True, pending_s=0.01, processing_s=0.01)
    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve(config, stop, ready.append),), daemon=True
    )
    thread.start()
    try:
        for _ in range(500):
            if ready:
                break
            thread.join(0.01)
        assert ready, "in-process sandbox did not start"
        admin = SandboxAdmin(ready[0])
        admin.wait_ready(5)
        answer = requests.post(ready[0] + "/gateway/api/v2/payouts", json=make_body("in-1"), timeout=5).json()
        assert answer["error_code"] == "0000"
        admin.wait_order_status("in-1", [3, 4, 5], timeout_s=5)
        admin.close()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
    assert not thread.is_alive()
