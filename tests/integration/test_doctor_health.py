"""`payouts doctor` (checklist, exit 1 on any error) and `payouts health` (progress-based)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from sandbox.process import SandboxProcess
from tests.helpers import TEST_RING
from worker import keys
from worker.harness.processes import free_port
from worker.ops.cli import main as cli
from worker.payout import Payout


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


# ------------------------------------------------------------------ doctor


def test_doctor_good_config(
    use_env: Callable[..., Any],
    ops_sandbox: SandboxProcess,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Settings complete, Redis persistent, clock in step, gateway answers "not found": exit 0."""
    # given
    use_env(ops_sandbox.url, PAYOUT_NOTIFY_URL="http://127.0.0.1:9/payouts/notify")
    # when
    code, out = run(capsys, "doctor")
    # then
    assert code == 0, out
    for what in ("settings", "redis", "redis persistence", "clock", "gateway"):
        assert f"[ok  ] {what} " in out, out
    assert "doctor: ok: 0 error(s)" in out


def test_doctor_refuses_an_evicting_redis(
    use_env: Callable[..., Any],
    ops_sandbox: SandboxProcess,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """maxmemory-policy other than noeviction is an error: keys could vanish."""
    # given
    use_env(ops_sandbox.url)
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        # when
        code, out = run(capsys, "doctor")
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")
    # then
    assert code == 1
    assert "[FAIL] redis persistence" in out and "allkeys-lru" in out


def test_doctor_names_bad_credentials_and_settings(
    use_env: Callable[..., Any],
    ops_sandbox: SandboxProcess,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong Authorization token is reported with its code and the variable to fix."""
    use_env(ops_sandbox.url, GATEWAY_AUTHORIZATION="not-the-token")
    code, out = run(capsys, "doctor")
    assert code == 1
    assert "[FAIL] gateway" in out and "0006" in out and "GATEWAY_AUTHORIZATION" in out
    # a malformed value names its variable; a missing one is listed
    use_env(ops_sandbox.url, SWEEP_INTERVAL="often")
    code, out = run(capsys, "doctor")
    assert code == 1 and "SWEEP_INTERVAL" in out
    use_env(ops_sandbox.url)
    monkeypatch.delenv("GATEWAY_PLATFORM_KEY")
    code, out = run(capsys, "doctor")
    assert code == 1 and "GATEWAY_PLATFORM_KEY" in out


def _one_order_at_the_gateway(use_env: Callable[..., Any], gateway_url: str) -> None:
    """The sandbox holds one signed order of this merchant (created with the right key)."""
    from worker.runtime import get_runtime

    use_env(gateway_url)
    answer = get_runtime().gateway.create_payout(
        Payout("doc-1", 1_000_000, "BCA", "Dewi", "1234567890"), sign_type="HMAC-SHA256", notify_url=None
    )
    assert answer.outcome.value == "accepted", answer


def test_doctor_proves_token_platform_and_key(
    use_env: Callable[..., Any],
    ops_sandbox: SandboxProcess,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With an order at the gateway, the token, the platform id and the key are each proven;
    what only a create proves is said plainly."""
    # given
    _one_order_at_the_gateway(use_env, ops_sandbox.url)
    use_env(ops_sandbox.url, PAYOUT_NOTIFY_URL="http://127.0.0.1:9/payouts/notify")
    # when
    code, out = run(capsys, "doctor")
    # then
    assert code == 0, out
    assert "[ok  ] gateway                reachable, GATEWAY_AUTHORIZATION accepted" in out
    assert "[ok  ] gateway platform       GATEWAY_PLATFORM_ID PF0001 is the token's merchant" in out
    assert "[ok  ] gateway key            GATEWAY_PLATFORM_KEY verifies 1 of 1 signed record(s)" in out
    assert "[note] not provable here" in out and "0027" in out


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        ("GATEWAY_PLATFORM_KEY", "not-the-platform-key-0000000", "[FAIL] gateway key"),
        ("GATEWAY_AUTHORIZATION", "not-the-token", "[FAIL] gateway "),
        ("GATEWAY_PLATFORM_ID", "PF0999", "[FAIL] gateway platform"),
    ],
)
def test_doctor_fails_naming_a_wrong_credential(
    use_env: Callable[..., Any],
    ops_sandbox: SandboxProcess,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    value: str,
    line: str,
) -> None:
    """A wrong key, token or platform id each fails the doctor (exit 1) on a line naming the setting;
    nothing is created at the gateway."""
    # given
    _one_order_at_the_gateway(use_env, ops_sandbox.url)
    use_env(ops_sandbox.url, **{setting: value})
    # when
    code, out = run(capsys, "doctor", "--json")
    # then
    assert code == 1, out
    doc = json.loads(out.splitlines()[-1])
    failed = [c for c in doc["checks"] if c["result"] == "fail"]
    assert len(failed) == 1, failed
    assert line.startswith(f"[FAIL] {failed[0]['check']}") and setting in failed[0]["detail"], failed
    assert ops_sandbox.admin.stats()["requests"].get("create", 0) == 1  # only the setup's


def test_doctor_says_plainly_what_it_cannot_prove(
    use_env: Callable[..., Any],
    ops_sandbox: SandboxProcess,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No order at the gateway yet: the key is reported as not proven (a warning), not as ok."""
    # given
    use_env(ops_sandbox.url, GATEWAY_PLATFORM_KEY="not-the-platform-key-0000000")
    # when
    code, out = run(capsys, "doctor")
    # then
    assert code == 0, out
    assert (
        "[warn] gateway key            GATEWAY_PLATFORM_KEY not proven: the gateway holds no signed order"
        in out
    )
    assert "[ok  ] gateway key" not in out


def test_doctor_reports_an_unreachable_gateway(
    use_env: Callable[..., Any], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """`payouts doctor` fails (exit 1) when the gateway gives no usable answer."""
    use_env(f"http://127.0.0.1:{free_port()}")
    code, out = run(capsys, "doctor")
    assert code == 1
    assert "[FAIL] gateway" in out and "no usable answer" in out


# ------------------------------------------------------------------ health


def add_order(r: redis.Redis, pid: str, due_at: float) -> None:
    from worker.store import OrderStore

    OrderStore(r, pii_keys=TEST_RING).create(
        Payout(pid, 5_000_000, "BCA", "Dewi", "1234567890"), due_at=due_at
    )


def test_health_fresh_system_is_healthy(
    use_env: Callable[..., Any], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing stored, no sweep yet: healthy, one line."""
    use_env()
    code, out = run(capsys, "health")
    assert code == 0, out
    assert out.startswith("healthy:") and out.count("\n") == 1


def test_health_recent_sweep_and_due_orders_are_healthy(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Orders due a few seconds ago and a sweep that just ran: healthy."""
    use_env(SWEEP_INTERVAL="10")
    add_order(redis_client, "h-ok", time.time() - 5)
    redis_client.set(keys.SWEEP_LAST, repr(time.time() - 2))
    code, out = run(capsys, "health")
    assert code == 0, out
    assert "open=1" in out


def test_health_fails_when_an_order_is_long_overdue(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A due order 10 minutes late means nobody picks work up: exit 1, naming the order."""
    use_env(SWEEP_INTERVAL="10")
    add_order(redis_client, "h-late", time.time() - 600)
    redis_client.set(keys.SWEEP_LAST, repr(time.time() - 1))
    code, out = run(capsys, "health")
    assert code == 1
    assert out.startswith("unhealthy:") and "h-late" in out
    # a larger allowance accepts it
    code, _ = run(capsys, "health", "--max-late", "900")
    assert code == 0


def test_health_fails_when_the_sweep_is_stale(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No sweep for more than 3 intervals: beat or the workers are stuck."""
    use_env(SWEEP_INTERVAL="10")
    redis_client.set(keys.SWEEP_LAST, repr(time.time() - 31))
    code, out = run(capsys, "health")
    assert code == 1 and "no sweep for" in out


def test_health_fails_on_a_review_backlog(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """D25: orders only a person can settle count: more in review than HEALTH_MAX_REVIEW, or
    one waiting longer than HEALTH_MAX_REVIEW_AGE, is unhealthy (exit 1, naming the cause);
    within both, or with the checks off (0), healthy."""
    from worker.states import State
    from worker.store import OrderStore

    # given: three orders in review, the oldest for two hours; a sweep that just ran
    use_env(SWEEP_INTERVAL="10", HEALTH_MAX_REVIEW="2", HEALTH_MAX_REVIEW_AGE="3600")
    store = OrderStore(redis_client)
    for n in range(3):
        add_order(redis_client, f"h-rev{n}", time.time() + 600)
        store.transition(
            f"h-rev{n}", State.REVIEW, reason="setup: needs a person", now=time.time() - 7200 + n
        )
    redis_client.set(keys.SWEEP_LAST, repr(time.time() - 1))
    # when / then: too many
    code, out = run(capsys, "health")
    assert code == 1 and "3 orders wait in review (> 2)" in out, out
    # when / then: few enough, but the oldest waited too long
    code, out = run(capsys, "health", "--max-review", "5")
    assert code == 1 and "h-rev0 has waited in review" in out and "(> 3600s)" in out, out
    # when / then: within both limits, and with both checks off
    code, out = run(capsys, "health", "--max-review", "5", "--max-review-age", "9000")
    assert code == 0 and "review=3" in out, out
    use_env(SWEEP_INTERVAL="10", HEALTH_MAX_REVIEW="0", HEALTH_MAX_REVIEW_AGE="0")
    code, out = run(capsys, "health")
    assert code == 0, out


def test_health_fails_when_redis_is_down(
    use_env: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """`payouts health` is unhealthy (exit 1) when Redis does not answer."""
    use_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    code, out = run(capsys, "health")
    assert code == 1 and "Redis does not answer" in out


def test_health_after_a_real_sweep(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    make_runtime: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The sweep stamps payouts:sweep:last, which health reads."""
    from worker.sweep import sweep_due

    use_env()
    sweep_due(make_runtime())
    assert redis_client.get(keys.SWEEP_LAST)
    code, out = run(capsys, "health")
    assert code == 0 and "last_sweep=0." in out
