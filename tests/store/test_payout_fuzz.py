"""Fuzzing the producer's validation: bad input is refused with a field and a rule, never a crash.

For any input -- unicode (lone surrogates, controls), huge strings, nested objects,
NaN/inf floats, bools, negative or huge ints, None, missing and extra fields --
``validate_payout`` returns a valid Payout or raises InvalidPayout naming each bad
field and its rule. Through ``store_payout``, ``enqueue_payout`` and the by-name
``payouts.create`` task: when refused, nothing is stored in Redis and nothing is
queued; when accepted, the stored order is exactly the validated data.
"""

from __future__ import annotations

import itertools
import json
import unicodedata
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings

from tests.helpers import TEST_RING
from tests.strategies import payout_data
from worker import keys
from worker.celeryconf import SUBMIT_QUEUE
from worker.errors import InvalidPayout
from worker.payout import AMOUNT_MAX_MINOR, FIELDS, Payout, validate_payout
from worker.producer import OPTIONS, enqueue_payout, store_payout
from worker.runtime import Runtime

FUZZ = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_ids = itertools.count()


def assert_valid(p: Payout) -> None:
    """A Payout that validation let through obeys every rule and can be stored."""
    assert isinstance(p.payout_cl_id, str) and 1 <= len(p.payout_cl_id) <= 32
    assert type(p.amount) is int and 1 <= p.amount <= AMOUNT_MAX_MINOR
    for text in (p.bank_name, p.name):
        assert isinstance(text, str) and 1 <= len(text) <= 16 and text == text.strip()
        # no controls, format characters (bidi, zero-width) or line/paragraph separators (D32)
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text), ascii(text)
    assert isinstance(p.number, str) and p.number.isascii() and p.number.isdigit()
    assert p.notify_url is None or isinstance(p.notify_url, str)
    for value in (p.payout_cl_id, p.bank_name, p.name, p.number, p.notify_url or ""):
        value.encode("utf-8")  # Redis and the gateway take UTF-8
    TEST_RING.fingerprint(p.fingerprint_values())


def assert_refusal(exc: InvalidPayout, data: dict[str, Any]) -> None:
    """Each problem names a field and a rule; no account number leaks into the text."""
    assert exc.problems
    for problem in exc.problems:
        assert isinstance(problem.field, str) and problem.field
        assert isinstance(problem.rule, str) and problem.rule
        # a payout field, an enqueue option (requested_by, allow_duplicate) or a stray key
        assert problem.field in FIELDS or problem.field in OPTIONS or problem.rule == "is not a payout field"
    text = str(exc)
    number = data.get("number")
    if isinstance(number, str) and len(number) >= 12 and number.isdigit():
        assert number not in text or any(number in str(k) for k in data)


@FUZZ
@given(data=payout_data())
def test_validate_payout_refuses_or_returns_valid(data: dict[str, Any]) -> None:
    """validate_payout: a valid Payout or InvalidPayout(field, rule); never another exception."""
    try:
        payout = validate_payout(data)
    except InvalidPayout as exc:
        assert_refusal(exc, data)
    else:
        assert_valid(payout)


def snapshot_empty(client: redis.Redis) -> None:
    """Nothing stored, nothing queued: the database holds no key at all (but the loss-epoch
    guard's record of the server's identity, written by any new pooled connection)."""
    left = sorted(k for k in client.keys("*") if k not in (keys.SERVER, keys.LOSS_EPOCH))
    assert not left, left[:10]


@FUZZ
@given(data=payout_data())
def test_store_payout_stores_only_valid(fuzz_rt: Runtime, data: dict[str, Any]) -> None:
    """store_payout: refused input leaves Redis empty; accepted input is stored as validated."""
    rt = fuzz_rt
    rt.redis.flushdb()
    try:
        pid, created = store_payout(rt, data)
    except InvalidPayout as exc:
        assert_refusal(exc, data)
        snapshot_empty(rt.redis)
        return
    assert created
    expected = validate_payout(data)
    assert_valid(expected)
    order = rt.store.require(pid)
    assert rt.store.payout_of(order) == expected  # sealed at rest, opened exactly


@FUZZ
@given(data=payout_data(extra=False))
def test_enqueue_payout_queues_only_valid(fuzz_rt: Runtime, data: dict[str, Any]) -> None:
    """enqueue_payout: refused input is neither stored nor queued; accepted is queued once."""
    from worker.celery_app import app

    rt = fuzz_rt
    assert app.conf.broker_url == rt.settings.redis_url, "must publish to the test Redis"
    rt.redis.flushdb()
    args = {k: data.get(k) for k in FIELDS}
    try:
        order = enqueue_payout(**args, runtime=rt)  # type: ignore[arg-type]
    except InvalidPayout as exc:
        assert_refusal(exc, args)
        snapshot_empty(rt.redis)
        return
    assert order.payout_cl_id == args["payout_cl_id"]
    assert rt.redis.llen(SUBMIT_QUEUE) == 1


@FUZZ
@given(data=payout_data())
def test_create_task_refuses_without_side_effects(process_runtime: Runtime, data: dict[str, Any]) -> None:
    """The by-name ``payouts.create`` task: refused input stores no order and queues no
    submit; the refusal is reported by one ``refused`` event without personal data (D11)."""
    from tasks.payouts import create

    rt = process_runtime
    rt.redis.flushdb()
    outcome = create.run(**data)
    if outcome == "refused":
        events = rt.redis.xrange(keys.EVENTS)
        assert len(events) == 1 and events[0][1]["to"] == "refused"
        number = data.get("number")
        if isinstance(number, str) and len(number) >= 6:
            assert number not in json.dumps(events[0][1]) or any(number in str(k) for k in data)
        rt.redis.delete(keys.EVENTS)
        snapshot_empty(rt.redis)
    else:
        assert outcome == "created"
        assert rt.store.state_of(str(data["payout_cl_id"])) is not None
        assert rt.redis.llen(SUBMIT_QUEUE) == 1
