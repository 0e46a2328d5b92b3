"""Durability with real processes: startup refusals, the loss-epoch guard against the
sandbox over HTTP, orphans in ``payouts reconcile``, ``payouts doctor``'s mode line."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandbox.process import SandboxProcess
from tests.helpers import base_env
from worker import keys
from worker.harness.processes import CeleryProcess, RedisServer, wait_for
from worker.ops.cli import main as cli
from worker.payout import Payout
from worker.runtime import Runtime
from worker.states import State
from worker.submission import SubmitStatus, submit_order


@pytest.fixture(scope="module")
def everysec_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendfsync="everysec").start()
    try:
        yield server
    finally:
        server.cleanup()


def start(role: str, env: dict[str, str], log: Path) -> CeleryProcess:
    args = ["-P", "threads", "-c", "2", "--loglevel", "INFO"] if role == "worker" else ["--loglevel", "INFO"]
    return CeleryProcess(role, env, args=args, log_path=log).start()


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_strict_process_refuses_everysec(everysec_redis: RedisServer, tmp_path: Path, role: str) -> None:
    """REDIS_DURABILITY=strict (the default): a worker or beat on a Redis with appendfsync
    everysec exits non-zero at start, its log naming appendfsync and REDIS_DURABILITY."""
    # given
    env = base_env(everysec_redis.url)
    log = tmp_path / f"{role}.log"
    # when
    proc = start(role, env, log)
    try:
        wait_for(lambda: not proc.alive(), 60, interval_s=0.2, what=f"the {role} to exit")
    finally:
        proc.stop()
    # then
    text = log.read_text(errors="replace")
    assert "appendfsync" in text and "REDIS_DURABILITY" in text, text[-2000:]
    assert "refusing to start the " + role in text


def test_relaxed_worker_starts_with_a_warning(everysec_redis: RedisServer, tmp_path: Path) -> None:
    """REDIS_DURABILITY=relaxed: the same worker starts (consumes) and logs a warning naming the risk."""
    # given
    env = base_env(everysec_redis.url, REDIS_DURABILITY="relaxed")
    log = tmp_path / "worker.log"
    # when
    proc = start("worker", env, log)
    try:
        wait_for(lambda: b" ready." in log.read_bytes(), 90, interval_s=0.2, what="the worker to be ready")
        alive = proc.alive()
    finally:
        proc.stop()
    # then
    text = log.read_text(errors="replace")
    assert alive
    assert "redis.durability" in text and "everysec" in text and "relaxed" in text, text[-2000:]


# ------------------------------------------------------------------------ the guard


def payout(i: str) -> Payout:
    return Payout(i, 5_000_000, "BCA", "Budi", "1234567890")


def epoch_now(client: redis.Redis, no: int = 1, at: float | None = None) -> None:
    """Record loss epoch ``no`` as epoch.lua does after a restart."""
    client.hset(keys.LOSS_EPOCH, mapping={"no": str(no), "at": repr(time.time() if at is None else at)})


def test_guard_found_at_gateway_applies_and_never_creates(
    make_runtime: Callable[..., Runtime], gateway: SandboxProcess
) -> None:
    """An order whose create reached the gateway but whose claim the store lost (it is
    'received' again, older than the loss epoch): the submit queries, finds it, applies what
    the gateway says, and sends no second create."""
    # given: the create was sent (the gateway has it), then the store lost the claim
    rt = make_runtime(gateway.url, UNCONFIRMED_GRACE="30")
    rt.store.create(payout("g-found"), due_at=time.time(), now=time.time() - 5)
    sent = rt.gateway.create_payout(payout("g-found"), sign_type="HMAC-SHA256", notify_url=None)
    assert sent.payout_id
    epoch_now(rt.redis)
    # when
    status = submit_order(rt, "g-found")
    # then
    assert status is SubmitStatus.EPOCH_FOUND
    order = rt.store.require("g-found")
    assert order.state in (State.UNCONFIRMED, State.ACCEPTED, State.SUCCEEDED), order
    assert order.payout_id == sent.payout_id
    assert gateway.admin.create_requests("g-found") == 1


def test_guard_query_verifies_with_the_orders_sign_type(
    make_runtime: Callable[..., Runtime], gateway: SandboxProcess
) -> None:
    """D54: during an MD5 -> HMAC switch, an order last sent with MD5 (its record in the list
    query carries an MD5 sign and no sign_type) is found by the loss-epoch query, verified
    with the order's own algorithm, not with today's GATEWAY_SIGN_TYPE: found, no second
    create (it was EPOCH_QUERY_FAILED on every attempt until MAX_ORDER_AGE)."""
    # given: sent with MD5 (recorded on the order by that claim), then a loss epoch
    rt = make_runtime(
        gateway.url,
        GATEWAY_SIGN_TYPE="HMAC-SHA256",
        GATEWAY_ACCEPTED_SIGN_TYPES="HMAC-SHA256,MD5",
        UNCONFIRMED_GRACE="30",
    )
    rt.store.create(payout("g-md5"), due_at=time.time(), now=time.time() - 5)
    sent = rt.gateway.create_payout(payout("g-md5"), sign_type="MD5", notify_url=None)
    assert sent.payout_id
    rt.redis.hset(keys.order("g-md5"), "sign_type", "MD5")
    epoch_now(rt.redis)
    # when
    status = submit_order(rt, "g-md5")
    # then
    assert status is SubmitStatus.EPOCH_FOUND
    assert rt.store.require("g-md5").payout_id == sent.payout_id
    assert gateway.admin.create_requests("g-md5") == 1


def test_guard_not_found_waits_out_the_grace_then_sends_once(
    make_runtime: Callable[..., Runtime], gateway: SandboxProcess
) -> None:
    """Not found at the gateway after a loss epoch: no create until UNCONFIRMED_GRACE has
    passed since the epoch; then one create."""
    # given
    rt = make_runtime(gateway.url, UNCONFIRMED_GRACE="1.5")
    rt.store.create(payout("g-nf"), due_at=time.time(), now=time.time() - 5)
    epoch_now(rt.redis)
    # when
    first = submit_order(rt, "g-nf")
    requests_then = gateway.admin.create_requests("g-nf")
    wait_for(
        lambda: time.time() > float(rt.redis.hget(keys.LOSS_EPOCH, "at") or 0) + 1.5, 5, what="the grace"
    )
    second = submit_order(rt, "g-nf")
    # then
    assert first is SubmitStatus.EPOCH_WAIT and requests_then == 0
    assert second is SubmitStatus.ACCEPTED
    assert gateway.admin.create_requests("g-nf") == 1
    order = rt.store.require("g-nf")
    assert order.fields["epoch_checked"] == "1"


def test_orders_after_the_epoch_are_not_queried(
    make_runtime: Callable[..., Runtime], gateway: SandboxProcess
) -> None:
    """Zero cost in normal operation: an order created after the last loss epoch is claimed
    and sent at once, with no query."""
    # given
    rt = make_runtime(gateway.url)
    epoch_now(rt.redis, at=time.time() - 60)
    rt.store.create(payout("g-new"), due_at=time.time())
    queries_before = queries(gateway)
    # when
    status = submit_order(rt, "g-new")
    # then
    assert status is SubmitStatus.ACCEPTED
    assert queries(gateway) == queries_before


def queries(gateway: SandboxProcess) -> dict[str, int]:
    """The sandbox's request counts of every query endpoint."""
    return {k: v for k, v in gateway.admin.stats()["requests"].items() if "quer" in k or "list" in k}


# ------------------------------------------------------------------------ orphans, doctor


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_reconcile_lists_orphans(
    use_env: Callable[..., Any],
    ops_sandbox: SandboxProcess,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An order the gateway has and the store does not know (a lost enqueue that was sent)
    is listed as an orphan, and reconcile exits 1; with none, it exits 0."""
    # given
    use_env(ops_sandbox.url)
    code, out = run(capsys, "reconcile")
    assert code == 0, out
    from worker.runtime import get_runtime

    get_runtime().gateway.create_payout(payout("orphan-1"), sign_type="HMAC-SHA256", notify_url=None)
    # when
    code, out = run(capsys, "reconcile")
    # then
    assert code == 1
    assert "orphan" in out and "orphan-1" in out and "1 orphan(s)" in out, out
    assert "1234567890" not in out


def test_doctor_reports_the_mode(
    use_env: Callable[..., Any],
    ops_sandbox: SandboxProcess,
    redis_client: redis.Redis,
    everysec_redis: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """doctor names REDIS_DURABILITY and what it protects; strict on everysec is a FAIL."""
    # given / when
    use_env(ops_sandbox.url)
    code, out = run(capsys, "doctor", "--skip-gateway")
    # then
    assert code == 0, out
    assert "REDIS_DURABILITY=strict" in out and "[ok  ] durability" in out and "on disk" in out
    # given / when: the same on an everysec Redis
    use_env(ops_sandbox.url, REDIS_URL=everysec_redis.url)
    code, out = run(capsys, "doctor", "--skip-gateway")
    # then
    assert code == 1 and "[FAIL] redis persistence" in out and "appendfsync" in out, out


# ------------------------------------------------------------------------ by-name create, replicas


def test_by_name_create_not_durable_is_retried_until_a_replica_acknowledges(
    gateway: SandboxProcess, tmp_path: Path
) -> None:
    """D42, a real worker: strict with REDIS_REPLICA_ACKS=1 and no replica, a by-name
    ``payouts.create`` is applied on the master but not acknowledged (NotDurable). It is
    retried, not acknowledged as done; once a replica joins, a retry is acknowledged and the
    order is submitted: one create at the gateway, the order on the replica too."""
    from tests.helpers import TEST_CREDENTIALS
    from worker.celery_app import make_producer_app
    from worker.celeryconf import CREATE_TASK
    from worker.harness.stack import LocalStack

    # given: a master with no replica
    master = RedisServer().start()
    replica: RedisServer | None = None
    stack = LocalStack(
        tmp_path / "stack",
        redis_url=master.url,
        gateway_url=gateway.url,
        credentials=TEST_CREDENTIALS,
        bind_runtime=False,
        REDIS_REPLICA_ACKS="1",
        REDIS_REPLICA_ACK_TIMEOUT="0.1",
        # the first replica to attach gives the master a new replication id: a loss epoch
        # (orders stored before it are queried first, then sent after this grace)
        UNCONFIRMED_GRACE="1",
    )
    producer = make_producer_app(stack.settings)
    try:
        stack.start_worker(concurrency=2)
        stack.start_beat()
        stack.wait_workers_ready()
        fields = {"payout_cl_id": "nd-bn-1", "amount": 5_000_000, "bank_name": "BCA", "name": "Wati"}
        fields["number"] = "4455667788"
        # when: sent by name while no replica acknowledges
        producer.send_task(CREATE_TASK, kwargs=fields)
        wait_for(lambda: "payout.create.retry" in stack.logs(), 60, interval_s=0.2, what="a retry")
        assert "NotDurable" in stack.logs() and gateway.admin.create_requests("nd-bn-1") == 0
        # when: a replica joins
        replica = RedisServer(replicaof=("127.0.0.1", master.port)).start()
        # then: a retry is acknowledged, the order submitted once and on the replica
        stack.wait_state("nd-bn-1", State.ACCEPTED, State.SUCCEEDED, timeout_s=60)
        assert gateway.admin.create_requests("nd-bn-1") == 1
        rc = replica.client()
        try:
            wait_for(lambda: rc.hget(keys.order("nd-bn-1"), "state"), 10, what="the order on the replica")
        finally:
            rc.close()
    finally:
        producer.close()
        stack.stop()
        if replica is not None:
            replica.cleanup()
        master.cleanup()
