"""The cost of sealing personal data (D72), measured side by side in one run (bench only).

``enqueue_payout`` and ``submit_order`` run in this process in alternating slices, once
with the real store (the account number and name sealed with AES-256-GCM on create and
opened for the create request) and once with :class:`PlainStore`, the layout before
sealing (both in plain text). The ratios are sealed / plain throughput; the target is
>= 0.95. ``PlainStore`` exists only here: no setting or production path builds one.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from worker import keys
from worker.celeryconf import SUBMIT_QUEUE
from worker.harness.bench.stack import BenchStack
from worker.payout import Payout
from worker.pii import KeyRing
from worker.runtime import Runtime
from worker.store import Order, OrderStore

NAME = "Siti Rahma"
ACCOUNT = "8800112233445566"


class PlainStore(OrderStore):
    """Bench only: the account number and name stored and read in plain text (the keyed
    fingerprint is kept: it replaced a plain SHA-256 of the same cost)."""

    @classmethod
    def like(cls, store: OrderStore) -> PlainStore:
        """A copy of ``store`` (same client, scripts and settings) that does not seal."""
        plain = copy.copy(store)
        plain.__class__ = cls
        return plain  # type: ignore[return-value]

    def _sealed_pairs(self, ring: KeyRing, payout_cl_id: str, payout: Payout) -> list[str]:
        return ["name", payout.name, "number", payout.number]

    def payout_of(self, order: Order) -> Payout:
        return Payout(
            payout_cl_id=order.payout_cl_id,
            amount=order.amount,
            bank_name=order.bank_name,
            name=order.fields["name"],
            number=order.fields["number"],
            notify_url=order.notify_url,
        )


def _alternate(
    slices: int, slice_n: int, on: Callable[[int, int], None], off: Callable[[int, int], None]
) -> list[tuple[float, float, float, float]]:
    """(sealed wall, plain wall, sealed CPU, plain CPU) seconds per slice pair; the order
    within a pair alternates, so a drift of the shared machine's load favours neither."""
    out = []
    for k in range(slices):
        timed: dict[str, tuple[float, float]] = {}
        for name in ("on", "off") if k % 2 == 0 else ("off", "on"):
            fn = on if name == "on" else off
            c, t = time.process_time(), time.perf_counter()
            fn(k, slice_n)
            timed[name] = (time.perf_counter() - t, time.process_time() - c)
        out.append((timed["on"][0], timed["off"][0], timed["on"][1], timed["off"][1]))
    return out


def _ratios(pairs: Sequence[tuple[float, float, float, float]], n: int) -> dict[str, float]:
    return {
        "sealed_per_s": round(statistics.median(n / w for w, _, _, _ in pairs), 1),
        "plain_per_s": round(statistics.median(n / w for _, w, _, _ in pairs), 1),
        # throughput ratio: plain time / sealed time, median of the per-slice pairs
        "sealed_vs_plain": round(statistics.median(p / s for s, p, _, _ in pairs), 3),
        "sealed_vs_plain_cpu": round(
            sum(c for *_, c in pairs) / max(1e-9, sum(c for _, _, c, _ in pairs)), 3
        ),
    }


def measure_pii(stack: BenchStack, *, slices: int = 50, slice_n: int = 20) -> dict[str, Any]:
    """Enqueue and submit, sealed vs plain, in alternating slices of ``slice_n`` calls."""
    from worker.producer import enqueue_payout
    from worker.submission import submit_order

    if stack.workers:
        raise RuntimeError("measure_pii submits in this process: no worker may consume")
    on: Runtime = stack.rt
    off: Runtime = dataclasses.replace(on, store=PlainStore.like(on.store))
    ring = on.settings.require_pii()

    def enqueue(rt: Runtime, tag: str) -> Callable[[int, int], None]:
        def run(k: int, n: int) -> None:
            for i in range(n):
                enqueue_payout(f"pii-{tag}-{k}-{i:04d}", 5_000_000, "BCA", NAME, ACCOUNT, runtime=rt)

        return run

    def submit(rt: Runtime, tag: str) -> Callable[[int, int], None]:
        def run(k: int, n: int) -> None:
            for i in range(n):
                submit_order(rt, f"pii-{tag}-{k}-{i:04d}")

        return run

    for i in range(20):  # warm-up of both paths
        enqueue_payout(f"pii-warm-on-{i}", 5_000_000, "BCA", NAME, ACCOUNT, runtime=on)
        enqueue_payout(f"pii-warm-off-{i}", 5_000_000, "BCA", NAME, ACCOUNT, runtime=off)
    enq = _alternate(slices, slice_n, enqueue(on, "on"), enqueue(off, "off"))
    stack.redis.delete(SUBMIT_QUEUE)  # the submit messages: the orders are submitted here
    sub = _alternate(slices, slice_n, submit(on, "on"), submit(off, "off"))
    # the order record's size in Redis (MEMORY USAGE of the hash), sealed vs plain
    sample = [
        (f"pii-on-{k}-{i:04d}", f"pii-off-{k}-{i:04d}") for k in range(min(5, slices)) for i in range(slice_n)
    ]
    bytes_on = statistics.mean(int(stack.redis.memory_usage(keys.order(a)) or 0) for a, _ in sample)
    bytes_off = statistics.mean(int(stack.redis.memory_usage(keys.order(b)) or 0) for _, b in sample)
    n_seal = 20_000
    t = time.perf_counter()
    for _ in range(n_seal):
        ring.open("pii-x", "number", ring.seal("pii-x", "number", ACCOUNT))
    seal_open_us = (time.perf_counter() - t) / n_seal * 1e6
    return {
        "slices": slices,
        "slice": slice_n,
        "enqueue": _ratios(enq, slice_n),
        "submit": _ratios(sub, slice_n),
        "seal_and_open_us": round(seal_open_us, 2),
        "order_hash_bytes_sealed": round(bytes_on, 1),
        "order_hash_bytes_plain": round(bytes_off, 1),
        "enqueue_sealed_vs_plain": _ratios(enq, slice_n)["sealed_vs_plain"],
        "submit_sealed_vs_plain": _ratios(sub, slice_n)["sealed_vs_plain"],
    }
