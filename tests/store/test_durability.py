"""Durability against real Redis servers: the loss-epoch script, the claim guard, the
connection hook after a restart, the durability modes and the replica acknowledgement."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.helpers import TEST_RING, base_env
from worker import keys
from worker.connection import make_redis
from worker.durability import check_durability, check_identity
from worker.errors import LossEpochPending, NotDurable
from worker.harness.processes import RedisServer, wait_for
from worker.payout import Payout
from worker.runtime import build_runtime
from worker.settings import ConfigError, load_settings
from worker.states import State
from worker.store import OrderStore
from worker.submission import SubmitStatus, submit_order


def payout(i: str) -> Payout:
    return Payout(i, 5_000_000, "BCA", "Budi", "1234567890")


def run_epoch_script(client: redis.Redis) -> Any:
    """epoch.lua on a fresh connection of ``client``'s pool (what every new connection runs)."""
    conn = client.connection_pool.make_connection()
    try:
        conn.connect()
        return check_identity(conn)
    finally:
        conn.disconnect()


def claim(store: OrderStore, i: str) -> State | None:
    return store.transition(
        i, State.SUBMITTING, sources={State.RECEIVED}, reason="claimed", due=time.time() + 60, guard=True
    )


# ------------------------------------------------------------------------ epoch.lua


def test_epoch_fresh_store_records_identity_without_epoch(redis_client: redis.Redis) -> None:
    """On a store with no orders and no identity, the server's identity is recorded and no
    loss epoch: nothing could have been lost."""
    # given: an empty database
    # when
    epoch = run_epoch_script(redis_client)
    # then
    assert not epoch.changed and epoch.no == 0
    run_id = redis_client.info("server")["run_id"]
    assert redis_client.get(keys.SERVER) == f"{run_id}:{redis_client.info('replication')['master_replid']}"
    assert not redis_client.exists(keys.LOSS_EPOCH)


def test_epoch_same_server_changes_nothing(redis_client: redis.Redis) -> None:
    """A new connection to the server the store last ran on records nothing."""
    # given
    run_epoch_script(redis_client)
    OrderStore(redis_client, pii_keys=TEST_RING).create(payout("e-1"), due_at=time.time())
    # when
    epoch = run_epoch_script(redis_client)
    # then
    assert not epoch.changed and not redis_client.exists(keys.LOSS_EPOCH)


def test_epoch_other_server_records_loss_epoch(redis_client: redis.Redis) -> None:
    """A stored identity of another server (restart: run_id; failover: master_replid) makes the
    first new connection record loss epoch 1 at the server's TIME, and the next one none."""
    # given: orders, and the identity of a server that is not this one
    OrderStore(redis_client, pii_keys=TEST_RING).create(payout("e-1"), due_at=time.time())
    redis_client.set(keys.SERVER, "0" * 40 + ":" + "1" * 40)
    # when
    sec, usec = redis_client.time()
    first = run_epoch_script(redis_client)
    second = run_epoch_script(redis_client)
    # then
    assert first.changed and first.no == 1
    assert sec + usec / 1e6 - 0.01 <= first.at < sec + usec / 1e6 + 5
    assert not second.changed and second.no == 1
    assert redis_client.hget(keys.LOSS_EPOCH, "previous") == "0" * 40 + ":" + "1" * 40


def test_epoch_missing_identity_with_orders_is_a_loss(redis_client: redis.Redis) -> None:
    """Orders but no identity key (the key was lost with the server's data): a loss epoch."""
    # given
    OrderStore(redis_client, pii_keys=TEST_RING).create(payout("e-1"), due_at=time.time())
    redis_client.delete(keys.SERVER)
    # when
    epoch = run_epoch_script(redis_client)
    # then
    assert epoch.changed and epoch.no == 1


# ------------------------------------------------------------------------ the claim guard


def test_claim_refused_until_checked_for_the_epoch(redis_client: redis.Redis) -> None:
    """An order stamped with an older epoch number cannot be claimed until its epoch_checked
    names the current epoch; an order stamped with the current one can; clocks play no part
    (the "old" order's created_at is in the future)."""
    # given: this server's identity recorded, "old" stored before epoch 3, "new" after
    run_epoch_script(redis_client)
    store = OrderStore(redis_client, pii_keys=TEST_RING)
    now = time.time()
    store.create(payout("old"), due_at=now, now=now + 3600)
    redis_client.hset(keys.LOSS_EPOCH, mapping={"no": "3", "at": repr(now)})
    store.create(payout("new"), due_at=now, now=now - 3600)
    assert redis_client.hget(keys.order("new"), "ep") == "3"
    # when / then
    with pytest.raises(LossEpochPending) as refused:
        claim(store, "old")
    assert refused.value.epoch_no == "3" and refused.value.epoch_at == pytest.approx(now)
    assert store.state_of("old") is State.RECEIVED
    assert claim(store, "new") is State.RECEIVED
    store.transition("old", None, sources={State.RECEIVED}, reason="checked", fields={"epoch_checked": "2"})
    with pytest.raises(LossEpochPending):
        claim(store, "old")  # checked for an older epoch: still refused
    store.transition("old", None, sources={State.RECEIVED}, reason="checked", fields={"epoch_checked": "3"})
    assert claim(store, "old") is State.RECEIVED


def test_restart_detected_before_the_first_claim() -> None:
    """After a Redis restart, the pooled client's next claim runs on a fresh connection that
    recorded the loss epoch first: the claim of an order that existed before is refused."""
    # given: a store on its own Redis, one order, an identity recorded
    server = RedisServer().start()
    client = make_redis(server.url, pool_size=4)
    try:
        store = OrderStore(client, pii_keys=TEST_RING)
        store.create(payout("r-1"), due_at=time.time())
        assert client.get(keys.SERVER)
        # when: Redis is SIGKILLed and restarts from its AOF
        server.restart(kill=True)
        # then: the first claim on the restarted server is refused by the guard
        with pytest.raises(LossEpochPending):
            wait_for(lambda: _claim_or_none(store, "r-1"), 10, what="the store to reconnect")
        assert store.loss_epoch()[0] == 1
        assert store.state_of("r-1") is State.RECEIVED
    finally:
        client.close()
        server.cleanup()


def _claim_or_none(store: OrderStore, i: str) -> State | None:
    try:
        return claim(store, i)
    except redis.exceptions.ConnectionError:
        return None


# ------------------------------------------------------------------------ modes


@pytest.fixture(scope="module")
def everysec_server() -> Iterator[RedisServer]:
    server = RedisServer(appendfsync="everysec").start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def no_aof_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=False).start()
    try:
        yield server
    finally:
        server.cleanup()


def test_strict_refuses_everysec_naming_the_setting(everysec_server: RedisServer) -> None:
    """REDIS_DURABILITY=strict (the default) refuses appendfsync everysec, naming appendfsync and
    the mode; the runtime (the web app's first store use) refuses to build."""
    # given
    s = load_settings(base_env(everysec_server.url))
    client = make_redis(everysec_server.url, identity_check=False)
    # when
    d = check_durability(client, s)
    client.close()
    # then
    assert s.redis_durability == "strict"
    assert any("appendfsync always" in p and "REDIS_DURABILITY" in p for p in d.problems), d.problems
    with pytest.raises(ConfigError, match="appendfsync"):
        build_runtime(s)


def test_strict_refuses_no_aof(no_aof_server: RedisServer) -> None:
    """strict refuses a Redis without AOF, naming appendonly."""
    # given
    s = load_settings(base_env(no_aof_server.url))
    # when / then
    with pytest.raises(ConfigError, match="appendonly"):
        build_runtime(s)


def test_relaxed_accepts_everysec_with_a_warning(everysec_server: RedisServer) -> None:
    """REDIS_DURABILITY=relaxed accepts everysec: no problem, one warning saying what is at risk."""
    # given
    s = load_settings(base_env(everysec_server.url, REDIS_DURABILITY="relaxed"))
    client = make_redis(everysec_server.url, identity_check=False)
    # when
    d = check_durability(client, s)
    client.close()
    rt = build_runtime(s)
    rt.close()
    # then
    assert d.problems == []
    assert any("everysec" in w and "relaxed" in w for w in d.warnings), d.warnings


def test_strict_accepts_always(redis_url: str) -> None:
    """The test Redis (appendfsync always) passes strict with no warning."""
    # given
    s = load_settings(base_env(redis_url))
    client = make_redis(redis_url, identity_check=False)
    # when
    d = check_durability(client, s)
    client.close()
    # then
    assert d.problems == [] and d.warnings == [] and d.appendfsync == "always"


def test_settings_validation() -> None:
    """Bad durability settings are refused naming the variable."""
    with pytest.raises(ConfigError, match="REDIS_DURABILITY"):
        load_settings(base_env("redis://127.0.0.1:1/0", REDIS_DURABILITY="sometimes"))
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
        load_settings(base_env("redis://127.0.0.1:1/0", REDIS_SENTINELS="127.0.0.1:26379"))
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        load_settings(base_env("redis://127.0.0.1:1/0", REDIS_SENTINELS="nohost"))
    s = load_settings(
        base_env(
            "redis://:pw@127.0.0.1:1/3",
            REDIS_SENTINELS="10.0.0.1:26379,10.0.0.2:26380",
            REDIS_SENTINEL_MASTER="m",
        )
    )
    assert s.redis_sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert s.redis_replica_acks == 1  # under Sentinel one replica acknowledges by default
    assert s.effective_broker_url == "sentinel://:pw@10.0.0.1:26379/3;sentinel://:pw@10.0.0.2:26380/3"


# ------------------------------------------------------------------------ replica acks


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[RedisServer, RedisServer]]:
    master = RedisServer().start()
    replica = RedisServer(replicaof=("127.0.0.1", master.port)).start()

    def online() -> bool:
        c = master.client()
        try:
            c.set("probe", "1")
            return int(c.wait(1, 200)) == 1
        finally:
            c.close()

    wait_for(online, 30, what="the replica to sync")
    try:
        yield master, replica
    finally:
        replica.cleanup()
        master.cleanup()


def test_replica_ack_refuses_enqueue_and_undoes_claim(replicated: tuple[RedisServer, RedisServer]) -> None:
    """strict with REDIS_REPLICA_ACKS=1: while the replica does not acknowledge, the enqueue
    raises a retryable NotDurable (retrying the same call later succeeds, same order) and a
    claim is undone without sending (the gateway URL is unreachable: a send would fail)."""
    # given
    master, replica = replicated
    c = master.client()
    c.flushdb()
    c.close()
    rt = build_runtime(
        load_settings(base_env(master.url, REDIS_REPLICA_ACKS="1", REDIS_REPLICA_ACK_TIMEOUT="0.3"))
    )
    try:
        rt.store.create(payout("ack-ok"), due_at=time.time())  # acknowledged
        # when: the replica stops acknowledging
        replica.pause()
        try:
            with pytest.raises(NotDurable, match="retry the same call"):
                rt.store.create(payout("ack-late"), due_at=time.time())
            status = submit_order(rt, "ack-ok")
        finally:
            replica.resume()
        # then
        assert status is SubmitStatus.NOT_DURABLE
        order = rt.store.get("ack-ok")
        assert order is not None and order.state is State.RECEIVED
        assert order.field_int("not_durable") == 1  # counted on the order (D48)
        again = wait_for(lambda: _create_or_none(rt, "ack-late"), 10, what="the retry to be acknowledged")
        assert again.created is False and again.state == "received"  # idempotent: same order
    finally:
        rt.redis.flushdb()
        rt.close()


def _create_or_none(rt: Any, i: str) -> Any:
    try:
        return rt.store.create(payout(i), due_at=time.time())
    except NotDurable:
        return None


def test_unacknowledged_claims_are_undone_quietly(replicated: tuple[RedisServer, RedisServer]) -> None:
    """D48: while no replica acknowledges, every submit claims and undoes (nothing sent), but
    only the first claim is logged: ten attempts add one history entry and one event, and
    count ten on the order's ``not_durable``. Once the replica acknowledges again, the next
    submit is logged normally (submitting -> the gateway's answer)."""
    # given: one acknowledged order, then the replica stops acknowledging
    master, replica = replicated
    c = master.client()
    c.flushdb()
    c.close()
    rt = build_runtime(
        load_settings(base_env(master.url, REDIS_REPLICA_ACKS="1", REDIS_REPLICA_ACK_TIMEOUT="0.05"))
    )
    try:
        # the replica acknowledges again (the test before may have paused it): waited for
        wait_for(lambda: _create_or_none(rt, "nd-1"), 30, what="the replica to acknowledge")
        events_before = rt.redis.xlen(keys.EVENTS)
        replica.pause()
        try:
            # when: ten submits (the due time is reset between them: a retry is due at once)
            statuses = []
            for _ in range(10):
                statuses.append(submit_order(rt, "nd-1"))
                rt.redis.zadd(keys.DUE, {"nd-1": 0})
        finally:
            replica.resume()
        # then
        assert statuses == [SubmitStatus.NOT_DURABLE] * 10
        order = rt.store.get("nd-1")
        assert order is not None and order.state is State.RECEIVED
        assert order.field_int("not_durable") == 10 and order.field_int("submit_attempts") == 10
        assert [(h["from"], h["to"]) for h in order.history] == [("", "received"), ("received", "submitting")]
        assert rt.redis.xlen(keys.EVENTS) - events_before == 1
    finally:
        rt.redis.flushdb()
        rt.close()


# ------------------------------------------------------------------------ deferred check, TLS


def test_deferred_check_reaches_a_tls_store_that_was_down(tmp_path: Any) -> None:
    """D47: a process that starts while its TLS store (rediss://) is down defers the
    durability check to the first connection; once the store is up, that check runs over
    TLS like the store's own client and the store is used (a plaintext probe was reset by
    the TLS port on every try, and the process never connected)."""
    from worker.harness.processes import free_port
    from worker.sandbox.tls import ensure_certificate

    # given: a TLS store, stopped; the runtime built now cannot reach it
    cert, key = ensure_certificate(tmp_path / "tls", ["127.0.0.1"])
    tls_port = free_port()
    server = RedisServer(
        extra_args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        ]
    )
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
    rt = build_runtime(load_settings(base_env(url)))
    try:
        assert rt.store.redis.connection_pool.connection_kwargs.get("ssl_ca_certs") == str(cert)
        # when: the store comes up
        server.start()
        # then: the deferred check passes over TLS and the store answers
        rt.store.create(payout("tls-1"), due_at=time.time())
        assert rt.store.state_of("tls-1") is State.RECEIVED
    finally:
        rt.close()
        server.cleanup()
