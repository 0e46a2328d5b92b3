"""Each shipped alert goes pending within a minute of its event: a real Prometheus (Debian's
``prometheus``, scrape and rule evaluation every second) scrapes the real web process's
``/metrics`` over a real Redis, with ``config/prometheus/alerts.yml`` loaded as shipped.

One Prometheus and one web process serve the whole module; each test makes its event
happen -- through the domain code where one exists (a create signed with a wrong key, real
gateway calls that fail, orders moved by the store's Lua) -- after Prometheus has scraped
the series it reads, and polls ``/api/v1/alerts`` against a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.process import SandboxProcess
from tests.helpers import base_env
from worker import keys, metrics
from worker.harness.processes import RedisServer, WebProcess, free_port, wait_for
from worker.payout import Payout
from worker.runtime import Runtime, build_runtime
from worker.settings import load_settings
from worker.states import State

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
#: "within a minute of its event" (scrape and evaluation every second: seconds in practice)
DEADLINE_S = 60.0


class Prometheus:
    """``prometheus`` on a free loopback port, scraping one target every second."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("prometheus not installed: .ci/run installs Debian's prometheus package")
            pytest.skip("prometheus not installed (apt install prometheus)")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "payouts", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
                    ],
                }
            )
        )
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._ready, 30, interval_s=0.2, what="prometheus to be ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {self.log.name}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        r.raise_for_status()
        result: list[dict[str, Any]] = r.json()["data"]["result"]
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/v1/alerts", timeout=5)
        r.raise_for_status()
        return [a for a in r.json()["data"]["alerts"] if a["labels"]["alertname"] == name]

    def wait_pending(self, name: str, **labels: str) -> dict[str, Any]:
        """The alert ``name`` (with these labels) once pending or firing, within DEADLINE_S."""

        def active() -> dict[str, Any] | None:
            for a in self.alerts(name):
                if a["state"] in ("pending", "firing") and all(
                    a["labels"].get(k) == v for k, v in labels.items()
                ):
                    return a
            return None

        found: dict[str, Any] = wait_for(active, DEADLINE_S, interval_s=0.5, what=f"alert {name} pending")
        return found

    def wait_scraped(self, expr: str, value: float | None = None) -> None:
        """Prometheus holds a sample of ``expr`` (equal to ``value`` when given)."""

        def seen() -> bool:
            res = self.query(expr)
            return bool(res) and (value is None or float(res[0]["value"][1]) == value)

        wait_for(seen, DEADLINE_S, interval_s=0.5, what=f"prometheus to scrape {expr}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("alerts")


@pytest.fixture(scope="module")
def store_server() -> Iterator[RedisServer]:
    """The module's own Redis: the per-test flush of the session one would reset the counters."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def web_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def prom(workdir: Path, web_port: int) -> Iterator[Prometheus]:
    """Prometheus, started before the web process it scrapes (so the absent alert can be seen)."""
    p = Prometheus(workdir, web_port)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def web(
    prom: Prometheus, store_server: RedisServer, sandbox: SandboxProcess, workdir: Path, web_port: int
) -> Iterator[str]:
    """The web process (gunicorn) serving /metrics from the module's Redis; Prometheus scrapes it."""
    proc = WebProcess(base_env(store_server.url, sandbox.url), port=web_port, log_dir=workdir).start()
    try:
        prom.wait_scraped("payouts_orders")
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture
def make_rt(store_server: RedisServer, sandbox: SandboxProcess) -> Iterator[Any]:
    made: list[Runtime] = []

    def make(**extra: str) -> Runtime:
        rt = build_runtime(load_settings(base_env(store_server.url, sandbox.url, **extra)))
        made.append(rt)
        return rt

    yield make
    metrics.flush()
    for rt in made:
        rt.close()


def stored(rt: Runtime, pid: str, bank: str = "BCA", *, due_at: float | None = None) -> None:
    rt.store.create(Payout(pid, 1_000_000, bank, "Budi", "1234567890"), due_at=due_at or time.time() + 3600)


# ------------------------------------------------------------------ the tests (in this order)


def test_metrics_absent_pages_when_nothing_is_scraped(prom: Prometheus) -> None:
    """No web process answering: PayoutsMetricsAbsent goes pending."""
    # given: Prometheus scraping a port where the web process is not running yet
    # when / then
    prom.wait_pending("PayoutsMetricsAbsent")


def test_a_wrong_signing_key_pages_at_the_first_refusal(prom: Prometheus, web: str, make_rt: Any) -> None:
    """One create refused with 0004 (a wrong GATEWAY_PLATFORM_KEY): the refusal alert and the
    merchant-code pause alert go pending -- not an hour later as PayoutsPausedTooLong."""
    # given: the refusal counter scraped at 0 before anything happened
    prom.wait_scraped(
        'payouts_gateway_requests_total{endpoint="create",outcome="rejected",code="0004"}', value=0
    )
    rt = make_rt(GATEWAY_PLATFORM_KEY="not-the-platform-key-000000")
    stored(rt, "al-key-1")
    # when: the worker's submit path sends it once
    from worker.submission import submit_order

    submit_order(rt, "al-key-1")
    metrics.flush()
    # then
    assert rt.store.require("al-key-1").state is State.RECEIVED  # held, not rejected (D21)
    prom.wait_pending("PayoutsGatewayMerchantRefusals", code="0004")
    alert = prom.wait_pending("PayoutsMerchantCodePause", scope="*")
    assert "0004" in alert["labels"]["reason"]


def test_orders_entering_review_raise_review_alerts(prom: Prometheus, web: str, make_rt: Any) -> None:
    """Three orders into review: PayoutsReviewRising; over twenty waiting: PayoutsReviewBacklog."""
    # given
    prom.wait_scraped('payouts_transitions_total{from="received",to="review"}', value=0)
    rt = make_rt()
    ids = [f"al-rev-{i}" for i in range(21)]
    for pid in ids:
        stored(rt, pid)
    # when: three orders
    for pid in ids[:3]:
        rt.store.transition(pid, State.REVIEW, reason="not found after grace")
    # then
    prom.wait_pending("PayoutsReviewRising")
    # when: eighteen more
    for pid in ids[3:]:
        rt.store.transition(pid, State.REVIEW, reason="not found after grace")
    # then
    prom.wait_pending("PayoutsReviewBacklog")


def test_gateway_error_ratio_needs_volume(prom: Prometheus, web: str, make_rt: Any) -> None:
    """A handful of failed gateway calls is no ratio; sixty of them are (PayoutsGatewayErrorRatio)."""
    # given: a gateway that does not answer (nothing listens), the error series scraped at 0
    expr = next(r["expr"] for r in _rules() if r.get("alert") == "PayoutsGatewayErrorRatio")
    prom.wait_scraped('payouts_gateway_requests_total{endpoint="query",outcome="error",code="none"}', value=0)
    rt = make_rt(GATEWAY_BASE_URL=f"http://127.0.0.1:{free_port()}")
    # when: five failed queries
    for i in range(5):
        rt.gateway.query_order(f"al-err-{i}")
    metrics.flush()
    prom.wait_scraped('sum(payouts_gateway_requests_total{outcome="error"})', value=5)
    # then: the rule's expression is empty (below the minimum volume)
    assert prom.query(expr) == []
    # when: fifty-five more
    for i in range(5, 60):
        rt.gateway.query_order(f"al-err-{i}")
    metrics.flush()
    # then
    prom.wait_pending("PayoutsGatewayErrorRatio")


def test_slow_orders_raise_the_p95_alert(prom: Prometheus, web: str, make_rt: Any) -> None:
    """Twenty-five orders final an hour after their enqueue: PayoutsTimeToFinalP95."""
    # given
    prom.wait_scraped('payouts_time_to_final_seconds_count{state="succeeded"}', value=0)
    rt = make_rt()
    ids = [f"al-slow-{i}" for i in range(25)]
    for pid in ids:
        stored(rt, pid)
        rt.redis.hset(keys.order(pid), "created_at", repr(time.time() - 3700))  # enqueued an hour ago
    # when
    for n, pid in enumerate(ids):
        rt.store.transition(pid, State.SUBMITTING, reason="claimed", due=time.time() + 30)
        rt.store.transition(pid, State.ACCEPTED, reason="0000", fields={"payout_id": f"P{n}"})
        rt.store.transition(pid, State.SUCCEEDED, reason="status 3")
    # then
    prom.wait_pending("PayoutsTimeToFinalP95")


def test_state_alerts(prom: Prometheus, web: str, make_rt: Any) -> None:
    """Gauges: an order overdue, an order open for a day, no sweep, a pause for two hours, a
    balance hold -- each alert pending."""
    # given / when
    rt = make_rt()
    now = time.time()
    stored(rt, "al-overdue", due_at=now - 600)
    stored(rt, "al-old")
    rt.redis.zadd(keys.OPEN_SINCE, {"al-old": now - 90_000})
    rt.redis.hset(
        keys.PAUSE,
        mapping={
            "BRI": json.dumps(
                {"reason": "bank outage", "by": "ana", "since": now - 7200, "source": "operator"}
            ),
            "BNI": json.dumps({"reason": "low balance", "by": "worker", "since": now, "source": "balance"}),
        },
    )
    # then
    prom.wait_pending("PayoutsOrdersStuckPastDue")
    prom.wait_pending("PayoutsOldestOpenOrder")
    prom.wait_pending("PayoutsSweepStopped")
    prom.wait_pending("PayoutsPausedTooLong", scope="BRI")
    prom.wait_pending("PayoutsBalanceHold")


def test_every_shipped_alert_has_its_event_here() -> None:
    """Every alert in alerts.yml is awaited by a test above (a new rule needs its event here)."""
    # given
    import re

    shipped = {r["alert"] for r in _rules() if "alert" in r}
    # when
    awaited = set(re.findall(r'wait_pending\(\s*"(\w+)"', Path(__file__).read_text()))
    # then
    assert shipped == awaited, (sorted(shipped - awaited), sorted(awaited - shipped))


def test_balance_polls_are_counted_as_gateway_requests(web: str, make_rt: Any) -> None:
    """The balance poller's calls appear as endpoint="balance" requests (found, or the error code)."""
    # given
    rt = make_rt()
    bad = make_rt(GATEWAY_AUTHORIZATION="not-the-token")
    # when
    assert rt.gateway.query_balance() is not None
    assert bad.gateway.query_balance() is None
    metrics.flush()
    # then
    text = requests.get(f"{web}/metrics", timeout=5).text
    assert 'payouts_gateway_requests_total{code="0000",endpoint="balance",outcome="found"} 1.0' in text
    assert 'payouts_gateway_requests_total{code="0006",endpoint="balance",outcome="error"} 1.0' in text


def _rules() -> list[dict[str, Any]]:
    import yaml

    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]
