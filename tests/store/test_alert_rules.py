"""The alert rules and the Grafana dashboard ask only for series /metrics really exposes
(names and label names), and promtool accepts the rules when it is installed."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from worker import keys, metrics
from worker.payout import Payout
from worker.runtime import Runtime
from worker.states import State
from worker.web import make_admin_app

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "payouts.json"
#: PromQL functions, aggregations and keywords (not metric names)
PROMQL_WORDS = frozenset(
    {
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "increase",
        "delta",
        "irate",
        "by",
        "without",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "clamp_min",
        "clamp_max",
        "histogram_quantile",
        "absent",
        "offset",
        "bool",
    }
)
ALERTS_REQUIRED = {
    "PayoutsOrdersStuckPastDue",
    "PayoutsReviewRising",
    "PayoutsSweepStopped",
    "PayoutsGatewayErrorRatio",
    "PayoutsTimeToFinalP95",
    "PayoutsPausedTooLong",
    "PayoutsBalanceHold",
}


def _populated(rt: Runtime) -> None:
    """Data behind every series: orders in several states, gateway calls, a balance hold."""
    store, now = rt.store, time.time()
    for i in range(4):
        store.create(Payout(f"al-{i}", 1_000_000, "BCA", "Budi", "1234567890"), due_at=now - 5, now=now - 60)
    store.transition("al-0", State.SUBMITTING, reason="claimed", due=now + 30)
    store.transition("al-0", State.REJECTED, reason="0018 insufficient merchant balance")
    store.transition("al-1", State.REVIEW, reason="test")
    rt.redis.set(keys.SWEEP_LAST, repr(now))
    rt.redis.hset(
        keys.PAUSE, "*", json.dumps({"reason": "low", "by": "auto", "since": now, "source": "balance"})
    )
    rt.redis.hincrby(keys.HELD, "pause", 1)
    metrics.count_gateway(rt.redis, "create", "rejected", "0018", 0.1)
    metrics.count_gateway(rt.redis, "query", "found", "0000", 0.05)
    metrics.flush()


def exposed(rt: Runtime) -> dict[str, set[str]]:
    """GET /metrics through the WSGI app: sample name -> label names."""
    status: list[str] = []
    body = b"".join(
        make_admin_app(rt)(
            {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()},
            lambda s, h: status.append(s),
        )
    )
    assert status == ["200 OK"]
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each metric name in a PromQL expression with the label names its matcher uses."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    found = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?", text):
        name, matcher = m.group(1), m.group(2) or ""
        if name in PROMQL_WORDS or re.fullmatch(r"[0-9e]+", name):
            continue
        if text[m.end() :].lstrip().startswith("(") and not matcher:
            continue  # a function we did not list: caught by the name check below anyway
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matcher))
        found.append((name, labels))
    return found


@pytest.fixture
def series(runtime: Runtime) -> dict[str, set[str]]:
    _populated(runtime)
    return exposed(runtime)


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def test_the_required_alerts_exist() -> None:
    """Stuck past due, review rising, sweep stopped, gateway errors, p95, paused, balance hold."""
    # given / when
    names = {n for n, _ in rule_exprs()}
    # then
    assert names >= ALERTS_REQUIRED


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_expression_uses_exposed_series(series: dict[str, set[str]], source: str) -> None:
    """Every metric name in every rule / panel is a series /metrics exposes, with those labels."""
    # given
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    assert exprs
    # when
    problems = []
    for title, expr in exprs:
        sel = selectors(expr)
        if not sel:
            problems.append((title, "no metric"))
        for name, labels in sel:
            if name not in series:
                problems.append((title, name))
            elif not labels <= series[name]:
                problems.append((title, f"{name} has no label(s) {sorted(labels - series[name])}"))
    # then
    assert problems == []


def test_selector_parser_catches_a_misspelled_name(series: dict[str, set[str]]) -> None:
    """The check above can fail: a wrong name or label is reported."""
    # given
    expr = 'sum(rate(payouts_gateway_request_total{endpoint="create"}[5m])) / max(payouts_orders{stat="x"})'
    # when
    sel = selectors(expr)
    # then
    assert ("payouts_gateway_request_total", {"endpoint"}) in sel
    assert "payouts_gateway_request_total" not in series
    assert not {"stat"} <= series["payouts_orders"]


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` parses every expression and template (CI installs promtool)."""
    # given
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not installed: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt install prometheus)")
    # when
    res = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    # then
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in res.stdout


def test_dashboard_is_provisioned_from_compose_paths() -> None:
    """The dashboard JSON has a uid and uses the provisioned Prometheus datasource."""
    # given
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    ds = yaml.safe_load((ROOT / "config/grafana/provisioning/datasources/prometheus.yml").read_text())
    # when
    uids = {t["datasource"]["uid"] for p in doc["panels"] for t in p["targets"]}
    # then
    assert doc["uid"] == "payouts"
    assert uids == {ds["datasources"][0]["uid"]}


def test_metrics_without_a_reachable_store_answer_503(make_runtime: Any) -> None:
    """/metrics answers 503 when Redis does not answer (the scrape fails; nothing made up)."""
    # given
    rt = make_runtime()
    rt.redis = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5)
    status: list[str] = []
    # when
    make_admin_app(rt)({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}, lambda s, h: status.append(s))
    # then
    assert status == ["503 Service Unavailable"]
