"""Flower against the real broker and a real worker: it sees payout tasks, and only order ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.process import SandboxProcess
from tests.helpers import Stack
from worker.harness.processes import free_port, wait_for
from worker.producer import enqueue_payout

LOGIN = ("ops", "flower-test-password")
ACCOUNT = "4455667788990011"


@pytest.fixture
def stack(tmp_path: Path, redis_client: Any, redis_url: str, ops_sandbox: SandboxProcess) -> Iterator[Stack]:
    assert ops_sandbox.admin is not None
    ops_sandbox.admin.reset()
    s = Stack(tmp_path, redis_url, ops_sandbox.url)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def flower(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """`celery -A worker.celery_app flower` with basic auth; yields its base URL once it answers."""
    port = free_port()
    env = {**os.environ, **stack.env, "FLOWER_BASIC_AUTH": ":".join(LOGIN)}
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "flower.log").read_text(errors="replace")[-3000:])
        try:
            return requests.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(answers, 30, interval_s=0.2, what="flower to answer")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_flower_shows_submit_tasks_with_only_the_order_id(stack: Stack, flower: str) -> None:
    """payouts.submit appears in Flower's task list; its args are the order id, no account data."""
    # given: a worker, Flower, and its API refusing anonymous reads
    stack.start_worker(concurrency=4)
    assert requests.get(f"{flower}/api/tasks", timeout=5).status_code == 401

    def worker_seen() -> bool:
        r = requests.get(f"{flower}/api/workers", params={"status": "true"}, auth=LOGIN, timeout=5)
        return r.status_code == 200 and any(r.json().values())

    wait_for(worker_seen, 30, interval_s=0.3, what="flower to see the worker")
    # when
    enqueue_payout("flower-1", 5_000_000, "BCA", "Dewi Lestari", ACCOUNT, runtime=stack.rt)
    # then
    found: dict[str, Any] = {}

    def submit_task_seen() -> bool:
        r = requests.get(f"{flower}/api/tasks", auth=LOGIN, timeout=5)
        r.raise_for_status()
        for task in r.json().values():
            if task.get("name") == "payouts.submit" and task.get("state") == "SUCCESS":
                found.update(task)
                found["_all"] = r.text
                return True
        return False

    wait_for(submit_task_seen, 30, interval_s=0.3, what="payouts.submit in flower")
    assert found["args"] == "['flower-1']"
    assert found["kwargs"] == "{}"
    assert ACCOUNT not in found["_all"] and ACCOUNT[-8:] not in found["_all"]
    assert "Dewi" not in found["_all"]
    assert json.loads(found["_all"])  # a well-formed answer
