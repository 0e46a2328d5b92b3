"""Fault injection: each fault kind and mode does what sandbox/README.md says."""

from __future__ import annotations

import time

import pytest
import requests

from worker.sandbox.client import SandboxAdminError
from worker.sandbox.signature import verify

KEY = "sandbox-secret-key"


def _ledger_ids(gw) -> list[str]:
    return [o["payout_cl_id"] for o in gw.admin.ledger()["orders"]]


# ------------------------------------------------------------------ create faults


@pytest.mark.parametrize(
    ("rule", "check"),
    [
        ({"mode": "hang", "seconds": 1.5}, "timeout"),
        ({"mode": "hang", "seconds": 1.5, "then": "close"}, "timeout"),
        ({"mode": "5xx", "status": 502}, "502"),
        ({"mode": "5xx"}, "500"),
        ({"mode": "empty"}, "empty"),
        ({"mode": "garbled"}, "garbled"),
        ({"mode": "reset"}, "reset"),
    ],
)
def test_create_lost_creates_the_order_but_loses_the_answer(api, gw, rule, check):
    """create_lost: the client learns nothing useful, yet the order exists and progresses."""
    # given
    gw.admin.set_faults([{"kind": "create_lost", **rule}])
    # when / then: what the client sees
    if check == "timeout":
        with pytest.raises(requests.exceptions.ReadTimeout):
            api.create("lost-1", timeout=0.3)
    elif check == "reset":
        with pytest.raises(requests.exceptions.ConnectionError):
            api.create("lost-1")
    else:
        response = api.create("lost-1")
        if check in ("500", "502"):
            assert response.status_code == int(check)
        elif check == "empty":
            assert response.status_code == 200
            assert response.content == b""
        else:
            assert response.status_code == 200
            assert response.text.startswith("{")
            with pytest.raises(ValueError):
                response.json()
    # then: the order was created and moves on; a retry is a duplicate
    assert _ledger_ids(gw) == ["lost-1"]
    gw.admin.wait_order_status("lost-1", [3])
    assert api.list(payout_cl_id="lost-1").json()["total"] == 1
    assert api.create("lost-1").json()["error_code"] == "0014"
    assert gw.admin.stats()["faults_fired"] == {f"create_lost:{rule['mode']}": 1}


def test_hang_then_answer_sends_the_real_answer_late(api, gw):
    """A hang shorter than the client's timeout just looks slow, with the real answer."""
    gw.admin.set_faults([{"kind": "create_lost", "mode": "hang", "seconds": 0.3}])
    started = time.monotonic()
    answer = api.create("slow-1", timeout=5).json()
    assert time.monotonic() - started >= 0.3
    assert answer["error_code"] == "0000"


def test_create_5xx_before_does_not_create(api, gw):
    """create_5xx_before answers 5xx without creating; the retry (rule spent) creates."""
    gw.admin.set_faults([{"kind": "create_5xx_before", "status": 503, "times": 1}])
    # when
    first = api.create("b5-1")
    second = api.create("b5-1")
    # then
    assert first.status_code == 503
    assert second.json()["error_code"] == "0000"
    ledger = gw.admin.ledger()
    assert [o["payout_cl_id"] for o in ledger["orders"]] == ["b5-1"]
    assert ledger["create_requests"]["b5-1"] == {"before": 2, "after": 0, "total": 2}
    assert gw.admin.faults()[0]["fired"] == 1


def test_rate_limit_answers_429_above_the_rate(api, gw):
    """A token bucket of 5 at 2/s: a burst of 20 creates gets 429s, which create nothing."""
    gw.admin.set_faults([{"kind": "rate_limit", "rps": 2, "burst": 5, "endpoints": ["create"]}])
    codes = []
    for i in range(20):
        response = api.create(f"rl-{i}")
        codes.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "1"
    assert codes[:5] == [200] * 5
    assert codes.count(429) >= 12
    created = {f"rl-{i}" for i, code in enumerate(codes) if code == 200}
    assert set(_ledger_ids(gw)) == created
    # queries were not limited by this rule
    assert all(api.list().status_code == 200 for _ in range(10))


def test_rate_limit_on_queries(api, gw):
    """A query rate-limit rule answers 429 past its burst and leaves creates alone."""
    gw.admin.set_faults([{"kind": "rate_limit", "rps": 1, "burst": 2, "endpoints": ["query"]}])
    codes = [api.single("x").status_code for _ in range(6)]
    assert codes[:2] == [200, 200]
    assert 429 in codes
    assert api.create("rlq-1").status_code == 200


def test_latency_fixed_and_per_endpoint(api, gw):
    """latency delays the chosen endpoints only."""
    gw.admin.set_faults([{"kind": "latency", "seconds": 0.3, "endpoints": ["query"]}])
    started = time.monotonic()
    api.list()
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    api.create_ok("lat-1")
    assert time.monotonic() - started < 0.3


@pytest.mark.parametrize(
    "distribution",
    [{"type": "uniform", "min": 0.2, "max": 0.3}, {"type": "normal", "mean": 0.25, "stddev": 0.01}],
)
def test_latency_distribution(api, gw, distribution):
    """A latency rule with a distribution delays answers within its range."""
    gw.admin.set_faults([{"kind": "latency", "distribution": distribution}])
    started = time.monotonic()
    api.balance()
    assert 0.15 <= time.monotonic() - started < 1.5


def test_latency_on_create_still_creates_after_client_timeout(api, gw, poll):
    """A client that gives up during latency still gets its order created (server goes on)."""
    gw.admin.set_faults([{"kind": "latency", "seconds": 0.6, "endpoints": ["create"]}])
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.create("lt-1", timeout=0.2)
    poll(lambda: _ledger_ids(gw) == ["lt-1"], 5, "order created late")


# ------------------------------------------------------------------- query faults


def test_query_timeout(api, gw):
    """query_timeout hangs queries (list and single) past the client's timeout."""
    api.create_ok("qt-1")
    gw.admin.set_faults([{"kind": "query_timeout", "seconds": 1.0}])
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.list(payout_cl_id="qt-1", timeout=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.single("qt-1", timeout=0.3)
    assert api.balance().status_code == 200
    assert gw.admin.stats()["faults_fired"] == {"query_timeout": 2}


def test_query_5xx_only_for_matching_ids(api, gw):
    """query_5xx with match hits only queries for matching ids."""
    api.create_ok("q5-1")
    api.create_ok("ok-1")
    gw.admin.set_faults([{"kind": "query_5xx", "status": 503, "match": "^q5-"}])
    assert api.list(payout_cl_id="q5-1").status_code == 503
    assert api.single("q5-1").status_code == 503
    assert api.single("ok-1").json()["error_code"] == "0000"
    assert api.list().json()["total"] == 2  # no payout_cl_id: the rule does not match


def test_invisible_order(api, gw, poll):
    """invisible: queries do not see the order for N seconds, a duplicate create still 0014."""
    gw.admin.set_faults([{"kind": "invisible", "seconds": 0.6}])
    api.create_ok("inv-1")
    assert api.single("inv-1").json()["error_code"] == "0050"
    assert api.list(payout_cl_id="inv-1").json()["total"] == 0
    assert api.list().json()["total"] == 0
    assert api.create("inv-1").json()["error_code"] == "0014"
    poll(lambda: api.single("inv-1").json()["error_code"] == "0000", 5, "visible")
    assert api.list().json()["total"] == 1


# ---------------------------------------------------------------- callback faults


def test_callback_duplicate(api, gw, receiver, poll):
    """duplicate: the same signed notification arrives `copies` times."""
    gw.admin.set_faults([{"kind": "callback", "mode": "duplicate", "copies": 3}])
    api.create_ok("cd-1", notify_url=receiver.url)
    bodies = receiver.wait_count(3)
    poll(lambda: gw.admin.stats()["callbacks"]["acked"] == 3, 5, "3 acks")
    assert len(receiver.bodies()) == 3
    assert bodies[0] == bodies[1] == bodies[2]
    assert verify(bodies[0], KEY)


def test_callback_duplicate_concurrent(api, gw, receiver, poll):
    """A concurrent duplicate-callback rule delivers the same body twice at once."""
    gw.admin.set_faults([{"kind": "callback", "mode": "duplicate", "concurrent": True}])
    api.create_ok("cdc-1", notify_url=receiver.url)
    first, second = receiver.wait_count(2)
    assert first == second
    received = [r["at"] for r in receiver.received]
    assert abs(received[1] - received[0]) < 0.5


def test_callback_out_of_order(api, gw, receiver, poll):
    """out_of_order: after the final notification, a stale 'processing' one arrives."""
    gw.admin.set_faults([{"kind": "callback", "mode": "out_of_order"}])
    api.create_ok("co-1", notify_url=receiver.url)
    final, stale = receiver.wait_count(2)
    assert final["status"] == "3"
    assert stale["status"] == "2"
    assert int(stale["update_time"]) <= int(final["update_time"])
    assert verify(final, KEY)
    assert verify(stale, KEY)


def test_callback_delay(api, gw, receiver):
    """delay: the first attempt waits `seconds` after the order became final."""
    gw.admin.set_faults([{"kind": "callback", "mode": "delay", "seconds": 0.5}])
    api.create_ok("cdl-1", notify_url=receiver.url)
    receiver.wait_count(1)
    final_at = gw.admin.order("cdl-1")["update_time_s"]
    assert receiver.received[0]["at"] - final_at >= 0.45


def test_callback_never(api, gw, receiver, poll):
    """never: no notification for matching orders; others still get theirs."""
    gw.admin.set_faults([{"kind": "callback", "mode": "never", "match": "^cn-"}])
    api.create_ok("cn-1", notify_url=receiver.url)
    api.create_ok("other-1", notify_url=receiver.url)
    gw.admin.wait_order_status("cn-1", [3])
    receiver.wait_count(1, "other-1")
    poll(lambda: gw.admin.stats()["background_tasks"] == 0, 5, "tasks done")
    assert receiver.bodies("cn-1") == []
    assert gw.admin.stats()["faults_fired"] == {"callback:never": 1}


def test_callback_wrong_key(api, gw, receiver):
    """wrong_key: the notification does not verify with the merchant key."""
    gw.admin.set_faults([{"kind": "callback", "mode": "wrong_key", "key": "evil"}])
    api.create_ok("cw-1", notify_url=receiver.url)
    [body] = receiver.wait_count(1)
    assert not verify(body, KEY)
    assert verify(body, "evil")


def test_callback_faults_combine(api, gw, receiver):
    """Rules of different modes combine (delay + duplicate)."""
    gw.admin.set_faults(
        [
            {"kind": "callback", "mode": "delay", "seconds": 0.2},
            {"kind": "callback", "mode": "duplicate"},
        ]
    )
    api.create_ok("cc-1", notify_url=receiver.url)
    assert len(receiver.wait_count(2)) == 2


# ------------------------------------------------------------ selection and admin


def test_probability_is_seeded_and_replays(api, gw):
    """The same seed, rule and ids give the same victims whatever the order of requests."""
    gw.admin.set_faults([{"kind": "create_lost", "mode": "empty", "probability": 0.5}])
    ids = [f"p-{i}" for i in range(24)]
    hit = {cl_id for cl_id in ids if api.create(cl_id).content == b""}
    assert 4 <= len(hit) <= 20
    gw.admin.reset(keep_faults=True)
    again = {cl_id for cl_id in reversed(ids) if api.create(cl_id).content == b""}
    assert again == hit
    assert len(_ledger_ids(gw)) == 24


def test_times_and_match(api, gw):
    """times caps the firings; match restricts them to matching payout_cl_ids."""
    gw.admin.set_faults([{"kind": "create_5xx_before", "match": "^chaos-", "times": 2}])
    assert api.create("calm-1").status_code == 200
    assert api.create("chaos-1").status_code == 500
    assert api.create("chaos-2").status_code == 500
    assert api.create("chaos-3").status_code == 200
    [rule] = gw.admin.faults()
    assert rule["fired"] == 2
    assert rule["id"] >= 1


def test_fault_admin_put_post_delete(gw):
    """PUT replaces, POST appends (one or several), DELETE clears; GET shows them."""
    gw.admin.set_faults([{"kind": "latency", "seconds": 0}])
    gw.admin.add_fault({"kind": "query_5xx"})
    gw.admin.add_fault([{"kind": "invisible", "seconds": 1}, {"kind": "outcome", "status": 4}])
    assert [r["kind"] for r in gw.admin.faults()] == [
        "latency",
        "query_5xx",
        "invisible",
        "outcome",
    ]
    gw.admin.set_faults([{"kind": "callback", "mode": "never", "name": "mute"}])
    assert [(r["kind"], r["name"]) for r in gw.admin.faults()] == [("callback", "mute")]
    gw.admin.clear_faults()
    assert gw.admin.faults() == []


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "boom"}, "kind must be one of"),
        ({"kind": "create_lost"}, "mode of 'create_lost' must be one of"),
        ({"kind": "create_lost", "mode": "empty", "probability": 2}, "probability"),
        ({"kind": "latency", "match": "("}, "match is not a valid regex"),
        ({"kind": "latency", "seconds": -1}, "seconds"),
        ({"kind": "latency", "distribution": {"type": "pareto"}}, "distribution"),
        ({"kind": "rate_limit", "rps": 0}, "rps"),
        ({"kind": "latency", "endpoints": ["admin"]}, "endpoints"),
        ({"kind": "query_5xx", "status": 404}, "status"),
        ({"kind": "callback", "mode": "duplicate", "copies": 0}, "copies"),
        ({"kind": "latency", "colour": "red"}, "unknown field"),
        ({"kind": "latency", "times": -1}, "times"),
    ],
)
def test_bad_fault_rules_are_refused_and_change_nothing(gw, rule, message):
    """A bad fault rule is refused and the rules in force stay as they were."""
    gw.admin.set_faults([{"kind": "latency", "seconds": 0}])
    with pytest.raises(SandboxAdminError, match=message):
        gw.admin.set_faults([{"kind": "query_5xx"}, rule])
    assert [r["kind"] for r in gw.admin.faults()] == ["latency"]


def test_stats_count_requests_answers_and_faults(api, gw):
    """The stats count requests per endpoint and answers per code."""
    gw.admin.set_faults([{"kind": "create_lost", "mode": "5xx", "match": "^s5-"}])
    api.create_ok("st-1")
    api.create("st-1")
    api.create("s5-1")
    api.list()
    api.single("st-1", token="bad")
    stats = gw.admin.stats()
    assert stats["requests"] == {"create": 3, "query_list": 1, "query_single": 1}
    assert stats["responses"]["create"] == {"0000": 1, "0014": 1, "http_500": 1}
    assert stats["responses"]["query_single"] == {"0006": 1}
    assert stats["faults_fired"] == {"create_lost:5xx": 1}
    assert stats["orders"]["total"] == 2
