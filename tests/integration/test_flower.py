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

from tests.helpers import Stack
from worker.celery_app import app
from worker.celeryconf import CREATE_TASK
from worker.harness.processes import free_port, wait_for
from worker.producer import enqueue_payout
from worker.sandbox.process import SandboxProcess

LOGIN = ("ops", "flower-test-password")
ACCOUNT = "4455667788990011"
NAME = "Dewi Lestari"


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
    yield from _flower(stack, tmp_path)


def _flower(stack: Stack, tmp_path: Path) -> Iterator[str]:
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


@pytest.fixture
def store_down(
    tmp_path: Path, redis_client: Any, redis_url: str, ops_sandbox: SandboxProcess
) -> Iterator[Stack]:
    """A stack whose broker answers but whose order store (REDIS_URL) does not: a by-name
    create cannot be stored, so Celery holds it in autoretry (an ETA task: "scheduled")."""
    s = Stack(
        tmp_path, redis_url, ops_sandbox.url, REDIS_URL="redis://127.0.0.1:9/0", CELERY_BROKER_URL=redis_url
    )
    try:
        yield s
    finally:
        s.stop()


def _personal_data_in(text: str) -> list[str]:
    return [x for x in (ACCOUNT, ACCOUNT[-8:], NAME, "Lestari") if x in text]


def test_flower_and_inspect_show_only_the_order_id_of_a_create_held_in_retry(
    store_down: Stack, tmp_path: Path
) -> None:
    """A by-name create retrying while the store is down sits in the worker's scheduled (and
    active/reserved) lists: Flower's worker views, its task list (received, retried and
    task-sent events of the re-published retries) and `celery inspect` show only its order id."""
    # given: one worker at concurrency 1, Flower, and by-name creates that cannot be stored
    stack = store_down
    flower_gen = _flower(stack, tmp_path)
    flower = next(flower_gen)
    try:
        stack.start_worker(concurrency=1)

        def worker_seen() -> bool:
            r = requests.get(f"{flower}/api/workers", params={"status": "true"}, auth=LOGIN, timeout=5)
            return r.status_code == 200 and any(r.json().values())

        wait_for(worker_seen, 30, interval_s=0.3, what="flower to see the worker")
        workername = stack.workers[0].name + "@" + os.uname().nodename
        # when
        for i in range(3):
            app.send_task(
                CREATE_TASK,
                kwargs={
                    "payout_cl_id": f"held-{i}",
                    "amount": 2_000_000,
                    "bank_name": "BCA",
                    "name": NAME,
                    "number": ACCOUNT,
                },
            )
        views: dict[str, Any] = {}

        def held_in_scheduled() -> bool:
            # the task lists (scheduled, active, reserved) come only for a named worker
            r = requests.get(
                f"{flower}/api/workers",
                params={"refresh": "1", "workername": workername},
                auth=LOGIN,
                timeout=15,
            )
            r.raise_for_status()
            views["text"] = r.text
            for info in r.json().values():
                views["reserved"] = info.get("reserved")
                for entry in info.get("scheduled") or []:
                    if entry["request"]["name"] == CREATE_TASK:
                        views["scheduled"] = entry["request"]
                        return True
            return False

        try:
            wait_for(held_in_scheduled, 60, interval_s=1.0, what="a retrying create in scheduled")
        except TimeoutError:
            doc = json.loads(views.get("text") or "{}")
            raise AssertionError(
                {w: {k: v for k, v in i.items() if k != "conf"} for w, i in doc.items()}
            ) from None
        tasks = requests.get(f"{flower}/api/tasks", auth=LOGIN, timeout=5)
        tasks.raise_for_status()
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "inspect",
                "--json",
                "-t",
                "5",
                "scheduled",
            ],
            env={**os.environ, **stack.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        others = {
            view: subprocess.run(
                [sys.executable, "-m", "celery", "-A", "worker.celery_app", "inspect", "-t", "5", view],
                env={**os.environ, **stack.env},
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            for view in ("active", "reserved")
        }
    finally:
        flower_gen.close()
    # then
    req = views["scheduled"]
    assert views["reserved"] is not None  # the reserved view was fetched too
    assert req["args"] == "()"
    assert req["kwargs"].startswith("{'payout_cl_id': 'held-")
    assert _personal_data_in(views["text"]) == []
    retried = [
        t for t in tasks.json().values() if t.get("name") == CREATE_TASK and (t.get("retries") or 0) > 0
    ]
    assert retried, "flower saw the re-published retries"
    assert all(t["kwargs"].startswith("{'payout_cl_id': 'held-") for t in retried)
    assert _personal_data_in(tasks.text) == []
    assert CREATE_TASK in cli.stdout and "held-" in cli.stdout, cli.stdout + cli.stderr
    assert _personal_data_in(cli.stdout + cli.stderr) == []
    assert _personal_data_in(" ".join(others.values())) == []
    assert _personal_data_in(stack.logs()) == []
