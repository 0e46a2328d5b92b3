"""The package as a web app installs it: a fresh virtual environment with only the wheel.

Each environment gets the project's wheel and what it declares (from the wheelhouse
`make install` builds, without the package index), and no test tool: an import the
package needs but does not declare fails here. One environment per extra with a
runtime role checks that the extra works alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import requests

from tests.helpers import TEST_KEY, base_env
from worker.harness.processes import CeleryProcess, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet", *args],
        check=True,
        capture_output=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from this tree (not the wheelhouse's copy)."""
    if not WHEELHOUSE.is_dir():
        pytest.fail(f"no wheelhouse at {WHEELHOUSE}: run `make install` (it builds one)")
    out = tmp_path_factory.mktemp("wheel")
    # from a copy of the tracked sources only: a stale build/ or egg-info must not leak in
    src = tmp_path_factory.mktemp("src") / "payout-worker"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    wheel_args = [
        "wheel",
        "--no-deps",
        "--no-index",
        "--find-links",
        str(WHEELHOUSE),
        "-w",
        str(out),
        str(src),
    ]
    _pip(Path(sys.executable), *wheel_args)
    (built,) = out.glob("payout_worker-*.whl")
    return built


@pytest.fixture(scope="module")
def make_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Callable[[str], Path]:
    """``make_venv("web")``: a venv with the wheel and one extra (``""``: none); its python."""
    made: dict[str, Path] = {}

    def make(extra: str) -> Path:
        if extra not in made:
            home = tmp_path_factory.mktemp(f"venv-{extra or 'core'}")
            venv.create(home, with_pip=True)
            python = home / "bin" / "python"
            spec = f"{wheel}[{extra}]" if extra else str(wheel)
            _pip(python, "install", "--no-index", "--find-links", str(WHEELHOUSE), spec)
            made[extra] = python
        return made[extra]

    return make


def _installed(python: Path) -> set[str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"], check=True, capture_output=True, text=True
    ).stdout
    return {p["name"].lower() for p in json.loads(out)}


@pytest.fixture
def env(redis_url: str, redis_client: redis.Redis) -> dict[str, str]:
    """The worker environment (gateway unreachable), without this process's PYTHONPATH."""
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    e.update(base_env(redis_url, "http://127.0.0.1:9"))
    return e


def _foreign_project(tmp: Path) -> Path:
    """A web app with its own top-level ``config`` and ``tasks`` packages (cookiecutter-django)."""
    app = tmp / "webapp"
    for pkg in ("config", "tasks"):
        (app / pkg).mkdir(parents=True)
        (app / pkg / "__init__.py").write_text(f"WEBAPP_{pkg.upper()} = True\n")
    (app / "config" / "settings.py").write_text("DEBUG = False\n")
    (app / "enqueue.py").write_text(
        textwrap.dedent(
            """
            import sys
            import config, tasks  # the web app's own packages, first on sys.path
            from worker import enqueue_payout, get_payout

            order = enqueue_payout("inst-" + sys.argv[1], 1500000, "BCA", "Budi Santoso", "1234567890")
            assert config.WEBAPP_CONFIG and tasks.WEBAPP_TASKS, "the web app's packages were shadowed"
            assert "config.settings" not in sys.modules or sys.modules["config.settings"].DEBUG is False
            print("RESULT", order.state.value, get_payout(order.payout_cl_id).payout_cl_id)
            """
        )
    )
    return app


def test_core_install_has_no_test_tools_and_enqueues_beside_a_foreign_config(
    make_venv: Callable[[str], Path], env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Only the wheel: no pytest in the venv, and a web app with its own `config`/`tasks` enqueues."""
    # given a fresh venv with only the package and a web app with colliding package names
    python = make_venv("")
    installed = _installed(python)
    assert "payout-worker" in installed and not installed & {"pytest", "hypothesis", "aiohttp", "gunicorn"}
    app = _foreign_project(tmp_path)
    # when the web app enqueues through the front door
    out = subprocess.run(
        [str(python), str(app / "enqueue.py"), "core"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then the order is stored and its message queued, with the web app's packages intact
    assert out.returncode == 0, out.stderr[-2000:]
    # (the library prints nothing: its records go to stdlib logging, the web app's to configure)
    assert out.stdout.splitlines() == ["RESULT received inst-core"], out.stdout[-2000:]
    assert redis_client.llen("payouts") == 1
    # and a command that needs an extra says which one, without a traceback
    demo = subprocess.run(
        [str(python.parent / "payouts"), "demo", "--payouts", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert "pip install 'payout-worker[sandbox]'" in demo.stderr and "Traceback" not in demo.stderr


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_worker_from_a_fresh_install_claims_the_order(
    make_venv: Callable[[str], Path],
    env: dict[str, str],
    tmp_path: Path,
    redis_client: redis.Redis,
    pool: str,
) -> None:
    """A worker run from the installed package claims the order (gateway down: it shows the attempt)."""
    # given an order enqueued from a fresh install
    python = make_venv("" if pool == "threads" else "gevent")
    app = _foreign_project(tmp_path)
    enq = subprocess.run(
        [str(python), str(app / "enqueue.py"), pool],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enq.returncode == 0, enq.stderr[-2000:]
    # when a worker of that install runs
    worker = CeleryProcess(
        "worker", env, python=str(python), args=["-P", pool, "-c", "4"], log_path=tmp_path / "worker.log"
    ).start()
    try:
        attempts = wait_for(
            lambda: int(redis_client.hget(f"payouts:order:inst-{pool}", "submit_attempts") or 0),
            60,
            what="the installed worker to claim the order",
        )
    finally:
        worker.stop()
    # then it claimed it and, the gateway being unreachable, put it back to wait (never failed)
    assert attempts >= 1
    assert redis_client.hget(f"payouts:order:inst-{pool}", "state") in ("received", "submitting")


def test_web_extra_serves_the_callback_receiver(
    make_venv: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """`payout-worker[web]` alone runs gunicorn with the callback receiver and /metrics."""
    # given a venv with the web extra and gunicorn serving worker.callbacks:app
    python = make_venv("web")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(python.parent / "gunicorn"),
            "worker.callbacks:app",
            "-c",
            "python:worker.gunicornconf",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "web.err", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        # when an unsigned callback arrives
        def answer() -> list[requests.Response] | None:
            try:
                url = f"http://127.0.0.1:{port}/payouts/notify"
                return [requests.post(url, json={"payout_cl_id": "x"}, timeout=2)]  # a 4xx Response is falsy
            except requests.ConnectionError:
                return None

        (resp,) = wait_for(answer, 30, what="gunicorn to answer")
        scrape = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        proc.terminate()
        proc.wait(10)
    # then the receiver refuses it (4xx): it ran, and it verified before acting
    assert 400 <= resp.status_code < 500
    # and the extra brings prometheus_client: the metrics answer
    assert scrape.status_code == 200, (tmp_path / "web.err").read_text()[-3000:]
    assert 'payouts_orders{state="received"}' in scrape.text


def test_sandbox_extra_runs_the_sandbox_alone(make_venv: Callable[[str], Path], env: dict[str, str]) -> None:
    """`payout-worker[sandbox]` alone runs the stand-in gateway; an unsigned create gets an error code."""
    # given a venv with the sandbox extra
    python = make_venv("sandbox")
    port = free_port()
    proc = subprocess.Popen(
        [str(python), "-m", "sandbox", "--port", str(port), "--quiet", "--platform-key", TEST_KEY],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # when a create without a signature arrives
        def answer() -> list[requests.Response] | None:
            try:
                return [
                    requests.post(f"http://127.0.0.1:{port}/gateway/api/v2/payouts", json={}, timeout=2)
                ]  # a 4xx Response is falsy
            except requests.ConnectionError:
                return None

        (resp,) = wait_for(answer, 30, what="the sandbox to answer")
    finally:
        proc.terminate()
        proc.wait(10)
    # then it answers as the gateway does: HTTP 200 with an error code
    assert resp.status_code == 200 and resp.json()["error_code"] != "0000"


def test_harness_extra_runs_the_demo(
    make_venv: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """`payout-worker[harness]` alone runs `payouts demo` end to end (embedded Redis, sandbox, workers)."""
    # given a venv with the harness extra
    python = make_venv("harness")
    demo_env = {k: v for k, v in env.items() if not k.startswith(("GATEWAY_", "REDIS_", "PAYOUT_"))}
    # when the demo runs a few payouts
    out = subprocess.run(
        [str(python.parent / "payouts"), "demo", "--payouts", "8", "--no-faults", "--timeout", "90"],
        env=demo_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    # then every proof passes
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]


def test_flower_extra_serves_flower(make_venv: Callable[[str], Path], env: dict[str, str]) -> None:
    """`payout-worker[flower]` alone runs Flower with a login."""
    # given a venv with the flower extra
    python = make_venv("flower")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(python),
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            "--basic-auth=ops:secret",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # when an operator opens it without and with the login
        def answer() -> list[requests.Response] | None:
            try:
                return [requests.get(f"http://127.0.0.1:{port}/", timeout=2)]  # a 4xx Response is falsy
            except requests.ConnectionError:
                return None

        (anonymous,) = wait_for(answer, 45, what="flower to answer")
        logged_in = requests.get(f"http://127.0.0.1:{port}/", auth=("ops", "secret"), timeout=5)
    finally:
        proc.terminate()
        proc.wait(10)
    # then it asks for the login and serves the logged-in operator
    assert anonymous.status_code == 401 and logged_in.status_code == 200
