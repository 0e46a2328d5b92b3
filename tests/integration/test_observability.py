"""A real run (worker, beat, gunicorn web, the sandbox with faults): /metrics over HTTP matches
the store, and every line every process wrote is JSON, keyed by order, without personal data."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Stack
from worker.celery_app import app
from worker.celeryconf import CREATE_TASK
from worker.harness.processes import WebProcess, wait_for
from worker.producer import enqueue_payout
from worker.sandbox.process import SandboxProcess
from worker.states import FINAL, State

N = 30
NAME = "Siti Rahayu"
NUMBER = "7788990011223344"
FAULTS = [
    # answer lost after the create: unconfirmed, then found by a query
    {"kind": "create_lost", "mode": "5xx", "match": "-l$"},
    # 5xx and never created: unconfirmed, not found, review after UNCONFIRMED_GRACE
    {"kind": "create_5xx_before", "match": "-g$"},
    {"kind": "outcome", "status": 5, "match": "-f$"},
    {"kind": "latency", "seconds": 0.02, "endpoints": ["create"]},
]
ORDER_ID = re.compile(r"obs-[0-9]{3}-[a-z]")


def order_ids() -> list[str]:
    """N ids, their suffix picking their fate (see FAULTS; -x: an unsupported bank)."""
    kinds = "okkklgfxok"
    return [f"obs-{i:03d}-{kinds[i % len(kinds)]}" for i in range(N)]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = requests.get(f"{url}/metrics", timeout=10)
    r.raise_for_status()
    assert r.headers["Content-Type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def run(make_stack: Any, gateway: SandboxProcess, tmp_path: Path) -> Any:
    """The stack with gunicorn as the callback receiver, a few dozen payouts driven to the end."""
    assert gateway.admin is not None
    gateway.admin.set_faults(FAULTS)
    stack: Stack = make_stack(gateway.url)
    web = WebProcess(stack.env, port=stack.callback_port, log_dir=tmp_path).start()
    try:
        stack.start_worker(concurrency=8)
        stack.start_beat()
        ids = order_ids()
        for i, pid in enumerate(ids):
            bank = "NOPE" if pid.endswith("-x") else "BCA"
            if i % 6 == 0:  # by name, as a web app without this package would
                app.send_task(
                    CREATE_TASK,
                    kwargs={
                        "payout_cl_id": pid,
                        "amount": 1_000_000 + i,
                        "bank_name": bank,
                        "name": NAME,
                        "number": NUMBER,
                    },
                )
            else:
                enqueue_payout(pid, 1_000_000 + i, bank, NAME, NUMBER, runtime=stack.rt)
        done = set(FINAL) | {State.REVIEW}

        def settled() -> bool:
            states = [stack.state(i) for i in ids]
            return all(s in done for s in states)

        wait_for(settled, 120, interval_s=0.5, what="every order final or in review")
        yield stack, web, ids
    finally:
        web.stop()


def test_metrics_match_the_store(run: Any) -> None:
    """Over HTTP, the state gauges sum to the orders, each equals the store's count, and the
    counters workers produced (transitions, gateway requests, time to final) are there."""
    # given
    stack, web, ids = run
    truth = Counter(stack.state(i).value for i in ids)
    # when: the workers' buffered gateway counts reach Redis within a second or two
    wait_for(
        lambda: scrape(web.admin_url).get(
            (
                "payouts_gateway_requests_total",
                (("code", "0000"), ("endpoint", "create"), ("outcome", "accepted")),
            )
        ),
        15,
        interval_s=0.5,
        what="gateway counts flushed",
    )
    got = scrape(web.admin_url)
    # then
    gauges = {s.value: got[("payouts_orders", (("state", s.value),))] for s in State}
    assert sum(gauges.values()) == len(ids)
    assert gauges == {s.value: truth.get(s.value, 0) for s in State}
    assert truth["succeeded"] and truth["rejected"] and truth["failed"] and truth["review"]
    assert got[("payouts_transitions_total", (("from", ""), ("to", "received")))] == len(ids)
    final_n = sum(truth[s.value] for s in FINAL)
    ttf = sum(
        got[("payouts_time_to_final_seconds_count", (("state", s.value),))] for s in FINAL if truth[s.value]
    )
    assert ttf == final_n
    creates = sum(
        v
        for (n, lab), v in got.items()
        if n == "payouts_gateway_requests_total" and ("endpoint", "create") in lab
    )
    assert creates >= len(ids)
    assert (
        got[
            (
                "payouts_gateway_requests_total",
                (("code", "0012"), ("endpoint", "create"), ("outcome", "rejected")),
            )
        ]
        == truth["rejected"]
    )
    assert got[("payouts_gateway_request_duration_seconds_count", (("endpoint", "create"),))] == creates
    assert got[("payouts_review_orders", ())] == truth["review"]
    assert got[("payouts_open_orders", ())] == 0
    assert got[("payouts_sweep_last_age_seconds", ())] < 30


def test_every_line_is_json_keyed_by_order_without_personal_data(run: Any, tmp_path: Path) -> None:
    """Every line of worker, beat and gunicorn (stdout and stderr, start to shutdown) is a JSON
    object; each that mentions an order id has it as payout_cl_id; no name or account number."""
    # given: a finished run, then every process stopped (their shutdown lines written)
    stack, web, _ = run
    requests.get(f"{web.admin_url}/metrics", timeout=10).raise_for_status()
    stack.stop()
    web.stop()
    # when
    lines: list[tuple[str, str]] = []
    for path in sorted(tmp_path.glob("*.log")):
        lines += [(path.name, line) for line in path.read_text(errors="replace").splitlines()]
    # then
    names = {p.name for p in tmp_path.glob("*.log")}
    assert {"web.stderr.log", "web.stdout.log"} <= names
    assert any(n.startswith("worker") for n in names) and any(n.startswith("beat") for n in names)
    not_json = [(f, ln) for f, ln in lines if not _is_json_object(ln)]
    assert not_json == [], not_json[:5]
    keyed = 0
    for f, ln in lines:
        mentioned = set(ORDER_ID.findall(ln))
        if not mentioned:
            continue
        doc = json.loads(ln)
        assert doc.get("payout_cl_id") in mentioned, (f, ln)
        keyed += 1
    assert keyed > 3 * N  # each order's received/succeeded/transition lines at least
    text = "\n".join(ln for _, ln in lines)
    assert NAME not in text and "Rahayu" not in text
    assert NUMBER not in text and NUMBER[:-4] not in text
    received = [json.loads(ln) for _, ln in lines if '"payouts.create' in ln and "received" in ln]
    assert received, "the by-name creates' received lines"
    assert all(d.get("data", {}).get("name") == "payouts.create" for d in received)
    assert any("http.access" in ln and "/metrics" in ln for _, ln in lines)
    assert any("celery.worker.start" in ln for _, ln in lines)
    assert any("Warm shutdown" in ln for _, ln in lines)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_metrics_answer_503_when_redis_is_down(tmp_path: Path, redis_url: str) -> None:
    """With the store unreachable /metrics says 503 (Prometheus marks the scrape failed), not 200."""
    # given: a receiver pointed at a port nobody listens on
    from tests.helpers import base_env
    from worker.harness.processes import free_port

    env = base_env("redis://127.0.0.1:9/0")
    web = WebProcess(env, port=free_port(), log_dir=tmp_path).start()
    try:
        # when
        started = time.monotonic()
        r = requests.get(f"{web.admin_url}/metrics", timeout=30)
        # then
        assert r.status_code == 503
        assert time.monotonic() - started < 25
    finally:
        web.stop()
