"""The by-name ``payouts.create`` task when the store refuses writes (D11): retried, then parked."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import structlog.testing

from tests.helpers import base_env
from worker.harness.processes import RedisServer, free_port
from worker.payout import Payout
from worker.runtime import Runtime, build_runtime, set_runtime
from worker.settings import load_settings


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
    read_only_runtime: Runtime, redis_client: redis.Redis, runtime: Runtime
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
    with structlog.testing.capture_logs() as logs:
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
