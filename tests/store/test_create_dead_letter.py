"""The by-name ``payouts.create`` task when the store refuses writes (D11, D42): retried, then parked."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.helpers import base_env
from worker.harness.processes import RedisServer, free_port
from worker.payout import Payout
from worker.runtime import Runtime, build_runtime, set_runtime
from worker.settings import load_settings


@contextlib.contextmanager
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    """The library's log events (its records carry the redacted event dict as the message;
    structlog's own capture does not see a logger with its own chain)."""
    events: list[dict[str, Any]] = []
    caplog.clear()
    with caplog.at_level(logging.INFO):
        yield events
        events.extend(dict(r.msg) for r in caplog.records if isinstance(r.msg, dict))


@pytest.fixture
def read_only_runtime(redis_url: str) -> Iterator[Runtime]:
    """A runtime whose order store is a replica of a master that does not exist: every write
    answers READONLY (as after a Sentinel failover to a stale view)."""
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    client.replicaof("127.0.0.1", str(free_port()))
    client.close()
    rt = build_runtime(load_settings(base_env(server.url)))
    set_runtime(rt)
    try:
        yield rt
    finally:
        set_runtime(None)
        rt.close()
        server.cleanup()


def test_read_only_store_retries_then_dead_letters(
    read_only_runtime: Runtime, redis_client: redis.Redis, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """ReadOnlyError is retried (not acknowledged as done); after the last retry the message
    goes to the dead-letter queue on the broker, its shown kwargs holding only the order id,
    its fields sealed (D73), the message and the queue expiring after DEAD_LETTER_TTL."""
    replay_runtime = runtime
    # given: the broker (this process's Celery app) is the session Redis; the store is read-only
    from tasks.payouts import CREATE_MAX_RETRIES, create

    fields: dict[str, Any] = {
        "payout_cl_id": "dl-1",
        "amount": 5_000_000,
        "bank_name": "BCA",
        "name": "Wati",
        "number": "4455667788",
    }
    # when: run eagerly, every retry runs at once and fails the same way
    with captured(caplog) as logs:
        result = create.apply(kwargs=fields)
    # then
    assert result.get() == "dead_letter"
    retries = [e for e in logs if e["event"] == "payout.create.retry"]
    assert len(retries) == CREATE_MAX_RETRIES and {e["error"] for e in retries} == {"ReadOnlyError"}
    assert logs[-1]["event"] == "payout.create.dead_letter"
    parked = redis_client.lrange("payouts.dead", 0, -1)
    assert len(parked) == 1
    msg = json.loads(parked[0])
    assert msg["headers"]["task"] == "payouts.create"
    assert msg["headers"]["kwargsrepr"] == repr({"payout_cl_id": "dl-1"})
    kwargs = json.loads(base64.b64decode(msg["body"]))[1]
    assert set(kwargs) == {"payout_cl_id", "sealed"} and kwargs["payout_cl_id"] == "dl-1"
    assert "4455667788" not in parked[0] and "Wati" not in parked[0]  # sealed: body and headers
    assert msg["headers"]["expires"] is not None  # a replay after DEAD_LETTER_TTL is discarded
    assert 0 < redis_client.ttl("payouts.dead") <= 7 * 86400
    # the order can be replayed: the sealed message opens on a worker with the key
    set_runtime(replay_runtime)
    assert create.apply(kwargs=kwargs).get() == "created"
    assert replay_runtime.store.payout_of(replay_runtime.store.require("dl-1")) == Payout(**fields)
    # moved to another order id, the sealed fields do not open: refused, nothing stored
    assert create.apply(kwargs={**kwargs, "payout_cl_id": "dl-2"}).get() == "unreadable"
    assert replay_runtime.store.get("dl-2") is None


def _runtime_on(server: RedisServer, **env: str) -> Runtime:
    rt = build_runtime(load_settings(base_env(server.url, **env)))
    set_runtime(rt)
    return rt


def _dead_lettered(
    create: Any, pid: str, redis_client: redis.Redis, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Run the by-name create eagerly: every retry meets the same refusal, then it is parked."""
    from tasks.payouts import CREATE_MAX_RETRIES

    fields = {
        "payout_cl_id": pid,
        "amount": 5_000_000,
        "bank_name": "BCA",
        "name": "Wati",
        "number": "4455667788",
    }
    with captured(caplog) as logs:
        result = create.apply(kwargs=fields)
    assert result.get() == "dead_letter"
    retries = [e for e in logs if e["event"] == "payout.create.retry"]
    assert len(retries) == CREATE_MAX_RETRIES and {e["error"] for e in retries} == {error}
    assert logs[-1]["event"] == "payout.create.dead_letter"
    parked = [json.loads(m) for m in redis_client.lrange("payouts.dead", 0, -1)]
    assert [m["headers"]["kwargsrepr"] for m in parked] == [repr({"payout_cl_id": pid})]


def test_not_durable_create_retries_then_dead_letters(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """D42: strict with REDIS_REPLICA_ACKS=1 and no replica, every enqueue is applied on the
    master but raises NotDurable: the by-name create is retried, then parked -- never
    acknowledged as done (a failover now would lose the order)."""
    # given: a store with no replica, each write waiting 10 ms for an acknowledgement
    from tasks.payouts import create

    server = RedisServer().start()
    rt = _runtime_on(server, REDIS_REPLICA_ACKS="1", REDIS_REPLICA_ACK_TIMEOUT="0.01")
    try:
        # when / then
        _dead_lettered(create, "nd-dl-1", redis_client, "NotDurable", caplog)
    finally:
        set_runtime(None)
        rt.close()
        server.cleanup()


def test_noreplicas_create_retries_then_dead_letters(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """D42: a master with ``min-replicas-to-write 1`` and no replica answers every write
    ``NOREPLICAS`` (a plain ResponseError in redis-py): retried, then parked, not dropped."""
    # given
    from tasks.payouts import create

    server = RedisServer().start()
    rt = _runtime_on(server)
    c = server.client()
    c.config_set("min-replicas-to-write", 1)  # from now on: set after the runtime's identity check
    c.close()
    try:
        # when / then
        _dead_lettered(create, "nr-dl-1", redis_client, "ResponseError", caplog)
        c = server.client()
        assert c.keys("payouts:order:*") == []  # refused, not stored: only the message has it
        c.close()
    finally:
        set_runtime(None)
        rt.close()
        server.cleanup()


@pytest.mark.parametrize(
    ("text", "retried"),
    [
        ("NOREPLICAS Not enough good replicas to write.", True),
        ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist", True),
        ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", True),
        ("Command # 1 (EVALSHA abc 9 x) of pipeline caused error: NOREPLICAS Not enough good replicas", True),
        ("ERR Error running script (call to f_x): @user_script:1: some bug", False),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
    ],
)
def test_retryable_store_refusals(text: str, retried: bool) -> None:
    """Which plain ResponseErrors a by-name create retries: the store's temporary refusals,
    not a script bug or a wrong key type (those would fail the same way every time)."""
    from tasks.payouts import _retryable

    assert _retryable(redis.exceptions.ResponseError(text)) is retried
