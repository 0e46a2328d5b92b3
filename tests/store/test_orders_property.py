"""The state machine under random interleavings of submits, checks, callbacks and sweeps.

Several threads run random operations against the real domain functions, the real
Lua store and the sandbox gateway over HTTP: duplicate ``submit_order`` calls,
``check_order`` queries, gateway reports through ``apply_report`` and signed (or
forged) callbacks through ``handle_notice`` -- valid, duplicated, reordered and
conflicting -- and ``sweep_due`` at various times (whose dispatches run too, as
the Celery tasks would). Afterwards every invariant of the store must hold
(tests/property/invariants.py) and the gateway must have seen at most one create
request per order.

Seeded: ``derandomize=True`` makes the examples the same on every run; the thread
interleaving is whatever the machine does, which is the point.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import TEST_KEY, TEST_PLATFORM
from worker import signing
from worker.callbacks import handle_notice
from worker.checks import check_order
from worker.harness.invariants import check_invariants
from worker.producer import store_payout
from worker.reports import apply_report
from worker.runtime import Runtime
from worker.sandbox.process import SandboxProcess
from worker.submission import submit_order
from worker.sweep import sweep_due

#: gateway statuses: documented open (0-2) and final (3-5), undocumented, malformed
#: (finals repeated: most reports a merchant gets are final)
STATUSES = st.sampled_from(["3", "3", "4", "5", "3", "4", "5", "0", "1", "2", "6", "9", "", "03", None])
#: how a report's amount relates to the stored one
AMOUNTS = st.sampled_from(["same", "same-decimal", "other", "absent"])
#: what happens at the gateway to the order's create: by id suffix / bank (conftest FAULTS)
FATES = st.sampled_from(["ok", "ok", "ok", "lost", "gone", "rejected"])
#: seconds past now at which a sweep runs: now, past the call deadline, past MAX_ORDER_AGE
SWEEP_AT = st.sampled_from([0.0, 30.0, 0.0, 30.0, 4 * 86400.0])

_ids = itertools.count()


@dataclass(frozen=True)
class Op:
    kind: str
    order: int = 0
    status: str | None = None
    amount: str = "same"
    signed: bool = True
    copies: int = 1
    at: float = 0.0


def ops(n_orders: int) -> st.SearchStrategy[Op]:
    idx = st.integers(0, n_orders - 1)
    return st.one_of(
        st.builds(Op, st.just("submit"), idx),
        st.builds(Op, st.just("submit"), idx),  # twice: duplicate submits are the point
        st.builds(Op, st.just("check"), idx),
        st.builds(Op, st.just("report"), idx, STATUSES, AMOUNTS),
        st.builds(Op, st.just("callback"), idx, STATUSES, AMOUNTS, st.booleans(), st.integers(1, 3)),
        st.builds(Op, st.just("sweep"), at=SWEEP_AT),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[str], list[list[Op]]]:
    fates = draw(st.lists(FATES, min_size=1, max_size=3))
    threads = draw(st.lists(st.lists(ops(len(fates)), min_size=1, max_size=8), min_size=2, max_size=4))
    return fates, threads


def amount_text(op: Op, stored: int) -> str | None:
    return {
        "same": str(stored),
        "same-decimal": f"{stored}.0000",
        "other": str(stored + 100),
        "absent": None,
    }[op.amount]


def notice(rt: Runtime, pid: str, op: Op) -> dict[str, Any]:
    order = rt.store.get(pid, with_history=False)
    stored = order.amount if order else 5_000_000
    body: dict[str, Any] = {
        "payout_cl_id": pid,
        "platform_id": TEST_PLATFORM,
        "payout_id": (order.payout_id if order else None) or "SBXPOT999",
        "amount": amount_text(op, stored),
        "status": op.status,
        "fee": "0",
        "sign_type": signing.HMAC_SHA256,
    }
    body = {k: v for k, v in body.items() if v is not None}
    key = TEST_KEY if op.signed else "not-the-key"
    body["sign"] = signing.sign(body, key, signing.HMAC_SHA256)
    return body


def run(rt: Runtime, ids: list[str], op: Op) -> None:
    pid = ids[op.order]
    if op.kind == "submit":
        submit_order(rt, pid)
    elif op.kind == "check":  # a check at any time, due or not (as `payouts check`)
        check_order(rt, pid, force=True)
    elif op.kind == "report":
        order = rt.store.get(pid, with_history=False)
        if order is not None:
            apply_report(
                rt,
                order,
                status=op.status,
                payout_id=order.payout_id,
                amount=amount_text(op, order.amount),
                source="query",
            )
    elif op.kind == "callback":
        msg = notice(rt, pid, op)
        for _ in range(op.copies):
            handle_notice(rt, dict(msg))
    elif op.kind == "sweep":
        result = sweep_due(rt, now=time.time() + op.at)
        for i in result.submit:  # what payouts.sweep dispatches
            submit_order(rt, i)
        for i in result.check:
            check_order(rt, i)
    else:  # pragma: no cover - the strategy makes only the kinds above
        raise AssertionError(op.kind)


def run_threads(work: list[Callable[[], None]]) -> None:
    """Start every thread at once; re-raise the first error any of them hit."""
    barrier = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def target(fn: Callable[[], None]) -> None:
        barrier.wait()
        try:
            fn()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(fn,)) for fn in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]


@settings(
    derandomize=True,
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_random_interleavings_keep_invariants(
    prop_runtime: Runtime, prop_sandbox: SandboxProcess, scenario: tuple[list[str], list[list[Op]]]
) -> None:
    """Any interleaving of submits, checks, reports, callbacks and sweeps keeps every invariant."""
    rt = prop_runtime
    fates, threads = scenario
    # given: fresh orders, each with its fate at the gateway
    rt.redis.flushdb()
    n = next(_ids)
    suffix = {"ok": "", "lost": "-l", "gone": "-g", "rejected": ""}
    ids = [f"p{n}-{k}{suffix[f]}" for k, f in enumerate(fates)]
    for pid, fate in zip(ids, fates, strict=True):
        bank = "NOSUCHBANK" if fate == "rejected" else "BCA"
        store_payout(
            rt,
            {
                "payout_cl_id": pid,
                "amount": 5_000_000,
                "bank_name": bank,
                "name": "Rina",
                "number": "1234567890",
            },
        )

    # when: every thread runs its operations at the same time
    def worker(ops: list[Op]) -> Callable[[], None]:
        return lambda: [run(rt, ids, op) for op in ops] and None

    run_threads([worker(ops) for ops in threads])
    # then
    ledger = prop_sandbox.admin.ledger()["create_requests"]
    states = check_invariants(rt.redis, create_requests=ledger)
    assert set(states) == set(ids)
