"""``payouts demo``: the whole system on one machine, with a faulty gateway, and a proof.

It starts (and always stops again) a private ``redis-server`` in a temp dir -- or uses the
one named by ``--redis-url``, never an exported ``REDIS_URL`` (the demo writes orders and a
pause drill: it must not land in a store by accident) -- the sandbox
gateway with realistic faults (lost create responses of every kind, hung and
failing queries, duplicate / delayed / stale / missing callbacks, ~10 % failed
payouts), the callback receiver, Celery worker(s) on the threads pool, and beat.
It enqueues ``--payouts`` seeded payouts through the producer API, shows progress,
and ends with a summary and a proof against the sandbox's ledger:

* every payout was created at the gateway at most once;
* every final state matches the gateway's (succeeded = status 3, failed = 4/5,
  rejected = never created), amounts included;
* the money adds up: our succeeded total equals the ledger's status-3 total;
* every order in ``review`` carries a reason (they are listed);
* everything reached a final state or review within ``--timeout``;
* then two drills (``--no-controls`` skips them): while paused, no create request reaches
  the gateway and the orders wait as ``received``; with the gateway's balance at 0, the
  ``0018`` answers pause sending (a balance hold) without rejecting any order, and the
  balance poller resumes when the balance is back. Their orders join the proof above.

Exit 0 only when all of that holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker import keys
from worker.harness.control_proof import CONTROL_SETTINGS, ControlRow, prove_balance_hold, prove_pause
from worker.harness.invariants import Expected, check_orders, read_orders
from worker.harness.processes import RedisServer, redis_answers, terminate_as_interrupt, wait_for
from worker.harness.stack import Credentials, LocalStack, sandbox_config
from worker.states import FINAL, State

#: gateway-side timings and our read timeout: fast enough for a demo, same shape as production
READ_TIMEOUT_S = 2.0
HANG_S = READ_TIMEOUT_S + 1.5  # a hung gateway answers (or drops) after our read timeout
UNCONFIRMED_GRACE_S = 8.0
#: payouts of each control drill (pause, balance hold), and how long their orders may take
CONTROL_PAYOUTS = 4
CONTROL_SETTLE_S = 60.0

NAMES = (
    "Budi Santoso",
    "Siti Rahayu",
    "Agus Wijaya",
    "Dewi Lestari",
    "Rina Kartika",
    "Andi Pratama",
    "Putri Maharani",
    "Joko Susilo",
    "Nur Aini",
    "Eko Prasetyo",
    "Wahyu Hidayat",
    "Sri Wahyuni",
    "Hendra Gunawan",
    "Maya Sari",
    "Rudi Hartono",
)


def demo_faults(seed: int) -> list[dict[str, Any]]:
    """A few percent of each way the gateway can go wrong (rules of ``sandbox.faults``)."""
    p = 0.02
    return [
        {
            "kind": "latency",
            "name": "network latency 5-60 ms",
            "distribution": {"type": "uniform", "min": 0.005, "max": 0.06},
        },
        {
            "kind": "create_lost",
            "mode": "hang",
            "seconds": HANG_S,
            "then": "close",
            "probability": p,
            "name": "create: created, answer hangs past our read timeout",
        },
        {
            "kind": "create_lost",
            "mode": "5xx",
            "status": 502,
            "probability": p,
            "name": "create: created, answered 502",
        },
        {"kind": "create_lost", "mode": "empty", "probability": p, "name": "create: created, empty body"},
        {"kind": "create_lost", "mode": "garbled", "probability": p, "name": "create: created, garbled body"},
        {
            "kind": "create_lost",
            "mode": "reset",
            "probability": p,
            "name": "create: created, connection reset",
        },
        {
            "kind": "create_5xx_before",
            "status": 503,
            "probability": p / 2,
            "name": "create: NOT created, answered 503",
        },
        {
            "kind": "query_timeout",
            "seconds": HANG_S,
            "then": "close",
            "probability": 0.03,
            "name": "query hangs past our read timeout",
        },
        {"kind": "query_5xx", "status": 500, "probability": 0.03, "name": "query answers 500"},
        {
            "kind": "callback",
            "mode": "duplicate",
            "copies": 2,
            "probability": 0.1,
            "name": "callback delivered twice",
        },
        {
            "kind": "callback",
            "mode": "delay",
            "seconds": 3.0,
            "probability": 0.1,
            "name": "callback delayed 3 s",
        },
        {
            "kind": "callback",
            "mode": "out_of_order",
            "probability": 0.05,
            "name": "stale callback after the final one",
        },
        {"kind": "callback", "mode": "never", "probability": 0.05, "name": "callback never sent"},
    ]


def demo_payouts(n: int, seed: int, banks: Sequence[str], prefix: str) -> list[dict[str, Any]]:
    """``n`` payouts with seeded random data (amounts in minor units, IDR 10k-5M)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        idr = rng.randrange(10_000, 5_000_000, 500)
        out.append(
            {
                "payout_cl_id": f"{prefix}{i:05d}",
                "amount": idr * 100,
                "bank_name": rng.choice(list(banks)),
                "name": rng.choice(NAMES),
                "number": str(rng.randrange(10**9, 10**16)),
            }
        )
    return out


def demo_settings(
    *, banks: Sequence[str], amount_min: int, amount_max: int, concurrency: int
) -> dict[str, str]:
    """The demo's settings over the stack's defaults: slower timers, so the progress is readable."""
    return {
        "GATEWAY_SIGN_TYPE": "HMAC-SHA256",
        "GATEWAY_READ_TIMEOUT": str(READ_TIMEOUT_S),
        "PAYOUT_BANK_LIST": ",".join(banks),
        "PAYOUT_AMOUNT_MIN": str(amount_min),
        "PAYOUT_AMOUNT_MAX": str(amount_max),
        "SWEEP_INTERVAL": "1",
        "CHECK_INTERVAL_MIN": "1",
        "CHECK_INTERVAL_MAX": "4",
        "SUBMIT_REDRIVE_AFTER": "5",
        "SUBMITTING_MARGIN": "2",
        "UNCONFIRMED_FIRST_CHECK": "1",
        "UNCONFIRMED_GRACE": str(UNCONFIRMED_GRACE_S),
        "WORKER_CONCURRENCY": str(concurrency),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def idr(minor: int) -> str:
    return f"IDR {minor // 100:,}.{minor % 100:02d}"


@dataclass
class Check:
    ok: bool
    text: str


@dataclass
class Outcome:
    """What the demo found at the end."""

    elapsed_s: float
    states: dict[str, str]
    counts: Counter[str]
    checks: list[Check] = field(default_factory=list)
    review: list[tuple[str, str, str]] = field(default_factory=list)
    open_orders: list[tuple[str, str, str]] = field(default_factory=list)
    final_times: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


class Demo:
    """The demo's run over one :class:`~worker.harness.stack.LocalStack`, stopped by :meth:`stop`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="payouts-demo-"))
        self.redis_server: RedisServer | None = None
        self.sandbox: Any = None
        self.stack: LocalStack | None = None
        self.rt: Any = None
        self.ids: list[str] = []
        self.payouts: list[dict[str, Any]] = []
        self.enqueued = 0
        self.enqueue_error: BaseException | None = None
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()
        self._log_file: Any = None

    # -------------------------------------------------------------- output

    def say(self, text: str) -> None:
        print(text, flush=True)

    # -------------------------------------------------------------- start

    def start_redis(self) -> str:
        url = (self.args.redis_url or "").strip()
        if url:
            if not redis_answers(url):
                raise DemoError(f"--redis-url ({_safe_url(url)}) does not answer")
            self.say(f"redis:     using --redis-url ({_safe_url(url)})")
            return url
        self.redis_server = RedisServer(appendfsync="always").start()
        self.say(
            f"redis:     embedded redis-server on port {self.redis_server.port} "
            f"(AOF in {self.redis_server.dir})"
        )
        return self.redis_server.url

    def check_shared_redis(self, url: str) -> str:
        """Refuse a Redis whose queues other workers consume; return the id prefix to use."""
        from worker.celery_app import app
        from worker.connection import check_redis_persistence

        problems, _ = check_redis_persistence(url)
        if problems:
            raise DemoError("--redis-url: " + "; ".join(problems))
        replies = app.control.ping(timeout=1.0)
        if replies:
            names = ", ".join(sorted(k for r in replies for k in r))[:200]
            raise DemoError(
                f"workers already consume from --redis-url ({names}); the demo would share its "
                "queues with them. Point --redis-url at an empty database, or leave it out."
            )
        prefix = f"demo-{self.args.seed}-"
        if self.rt.redis.exists(keys.order(f"{prefix}00000")):
            prefix = f"demo-{self.args.seed}-{secrets.token_hex(2)}-"
        return prefix

    def start(self) -> None:
        from sandbox.config import DEFAULT_BANKS
        from sandbox.process import SandboxProcess

        a = self.args
        redis_url = self.start_redis()
        creds = Credentials.random()
        cfg = sandbox_config(
            creds,
            pending_s=0.5,
            processing_s=1.5,
            failure_ratio=0.1,
            seed=a.seed,
            callback_delays_s=(1.0, 2.0, 4.0, 8.0, 15.0),
            faults=[] if a.no_faults else demo_faults(a.seed),
        )
        self.sandbox = SandboxProcess(cfg).start()
        faults = "no faults" if a.no_faults else f"{len(cfg.faults)} fault rules"
        self.say(f"gateway:   sandbox at {self.sandbox.url} ({faults}, ~10% failed payouts)")

        settings = demo_settings(
            banks=DEFAULT_BANKS,
            amount_min=cfg.min_amount_minor,
            amount_max=cfg.max_amount_minor,
            concurrency=a.concurrency,
        )
        # this process is the producer and runs the callback receiver: same settings
        self.stack = stack = LocalStack(
            self.dir,
            redis_url=redis_url,
            gateway_url=self.sandbox.url,
            credentials=creds,
            base_env=os.environ,
            overrides={**settings, **CONTROL_SETTINGS},
        )
        self.rt = stack.rt
        stack.bind_this_process()
        from worker.logs import configure_logging

        configure_logging("json", "INFO", force=True)
        # this process's own log lines (callbacks) go to a file, not over the progress line
        self._log_file = open(self.dir / "demo.log", "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(self._log_file)
        from worker.celery_app import app

        if app.conf.broker_url != redis_url:
            raise DemoError(
                "the Celery app in this process is already bound to another broker; "
                "run the demo as its own process (`payouts demo`)"
            )
        self.prefix = self.check_shared_redis(redis_url) if self.redis_server is None else f"demo-{a.seed}-"
        stack.start_receiver()
        self.say(f"callbacks: receiver at {stack.env['PAYOUT_NOTIFY_URL']}")
        for n in range(a.workers):
            stack.start_worker(name=f"demo{n}-{stack.callback_port}")
        stack.start_beat()
        self.say(
            f"workers:   {a.workers} x celery worker -P threads -c {a.concurrency}, "
            f"1 x beat (sweep every 1 s); logs in {self.dir}"
        )
        try:
            stack.wait_workers_ready(60)
        except (RuntimeError, TimeoutError) as exc:
            raise DemoError(f"{exc}\n{self.log_tail()}") from None

    # -------------------------------------------------------------- run

    def enqueue_all(self, payouts: list[dict[str, Any]]) -> None:
        from worker.producer import enqueue_payout

        try:
            for p in payouts:
                enqueue_payout(runtime=self.rt, **p)
                self.enqueued += 1
        except BaseException as exc:
            self.enqueue_error = exc

    def states(self) -> dict[str, str]:
        pipe = self.rt.redis.pipeline(transaction=False)
        for i in self.ids:
            pipe.hget(keys.order(i), "state")
        return {i: s for i, s in zip(self.ids, pipe.execute(), strict=True) if s}

    def progress_line(self, states: Mapping[str, str], t0: float) -> str:
        c = Counter(states.values())
        done = sum(c[s.value] for s in (*FINAL, State.REVIEW))
        elapsed = time.monotonic() - t0
        rate = done / elapsed if elapsed > 0 else 0.0
        n = len(self.ids)
        # most important first: a narrow terminal cuts the end
        line = (
            f"[{elapsed:5.1f}s] done {done}/{n} {rate:.1f}/s | succeeded {c['succeeded']} "
            f"failed {c['failed']} rejected {c['rejected']} review {c['review']} | "
            f"accepted {c['accepted']} unconfirmed {c['unconfirmed']} "
            f"submitting {c['submitting']} received {c['received']} | "
            f"enqueued {self.enqueued}/{n}"
        )
        if self.tty:  # one refreshing line: never wider than the terminal
            line = line[: max(40, shutil.get_terminal_size().columns - 1)]
        return line

    def run(self) -> Outcome:
        a = self.args
        from sandbox.config import DEFAULT_BANKS

        self.payouts = payouts = demo_payouts(a.payouts, a.seed, DEFAULT_BANKS, self.prefix)
        self.ids = [p["payout_cl_id"] for p in payouts]
        self.say(f"enqueue:   {len(payouts)} payouts (seed {a.seed}), ids {self.ids[0]} .. {self.ids[-1]}\n")
        t0 = time.monotonic()
        feeder = threading.Thread(target=self.enqueue_all, args=(payouts,), daemon=True)
        feeder.start()
        deadline = t0 + a.timeout
        last_print = 0.0
        settled = {s.value for s in (*FINAL, State.REVIEW)}
        while True:
            if self.enqueue_error is not None:
                raise DemoError(f"enqueue failed: {self.enqueue_error!r}")
            assert self.stack is not None
            for p in self.stack.workers + self.stack.beats:
                if not p.alive():
                    raise DemoError(f"celery {p.role} died:\n{self.log_tail()}")
            states = self.states()
            finished = (
                not feeder.is_alive()
                and len(states) == len(self.ids)
                and all(s in settled for s in states.values())
            )
            now = time.monotonic()
            if self.tty:
                print("\r" + self.progress_line(states, t0) + "\x1b[K", end="", flush=True)
            elif finished or now - last_print >= 2.0:
                self.say(self.progress_line(states, t0))
                last_print = now
            if finished or now > deadline:
                break
            time.sleep(0.25)
        if self.tty:
            print(flush=True)
        elapsed = time.monotonic() - t0
        rows = [] if a.no_controls or not finished else self.prove_controls(DEFAULT_BANKS)
        out = self.verify(self.states(), elapsed, timed_out=not finished)
        out.checks += [Check(r.ok, r.text) for r in rows]
        return out

    def prove_controls(self, banks: Sequence[str]) -> list[ControlRow]:
        """The kill switch and the balance hold, live, each with a few payouts of its own
        (counted in the ledger proof like every other order)."""
        assert self.stack is not None and self.sandbox is not None
        admin, seed = self.sandbox.admin, self.args.seed + 1
        pause_payouts = demo_payouts(CONTROL_PAYOUTS, seed, banks, f"{self.prefix}pause-")
        hold_payouts = demo_payouts(CONTROL_PAYOUTS, seed + 1, banks, f"{self.prefix}hold-")
        self.say(f"controls:  pause drill, then balance hold ({CONTROL_PAYOUTS} payouts each)")
        rows = []
        for run, payouts in ((prove_pause, pause_payouts), (prove_balance_hold, hold_payouts)):
            self.payouts += payouts
            self.ids += [p["payout_cl_id"] for p in payouts]
            rows.append(run(self.rt, admin, payouts))
        settled = {s.value for s in (*FINAL, State.REVIEW)}
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: all(s in settled for s in self.states().values()),
                CONTROL_SETTLE_S,
                interval_s=0.25,
                what="the control drills' orders to settle",
            )
        return rows

    # -------------------------------------------------------------- proof

    def verify(self, states: dict[str, str], elapsed_s: float, *, timed_out: bool) -> Outcome:
        """The proof table: the guarantees of :mod:`worker.harness.invariants`, one row each."""
        expected = {p["payout_cl_id"]: Expected(p["amount"], p["number"], p["name"]) for p in self.payouts}
        stored = read_orders(self.rt.redis, self.ids)
        ledger = self.sandbox.admin.ledger()
        verdict = check_orders(expected, stored, ledger)
        out = Outcome(elapsed_s, states, Counter(states.values()))

        def rows(label: str) -> list[str]:
            return [v.split(": ", 1)[1] for v in verdict.violations if v.startswith(label + ":")]

        f = verdict.figures
        twice = rows("created twice")
        text = (
            f"created at most once: {f['gateway_orders']} orders at the gateway, "
            f"{f['create_requests_after_created'] or 0} create requests after creation, "
            f"{f['created_twice']} ids created twice"
        )
        out.checks.append(Check(not twice, text + "".join(f"\n           {r}" for r in twice[:5])))
        wrong = rows("wrong") + rows("unknown payout at the gateway")
        final = sum(1 for r in stored.values() if r["fields"].get("state") in {s.value for s in FINAL})
        text = (
            f"final states match the gateway: {final - f['wrong']}/{final} "
            "(succeeded=status 3, failed=4/5, rejected=never created; amounts equal)"
        )
        out.checks.append(Check(not wrong, text + "".join(f"\n           {r}" for r in wrong[:10])))
        ours_paid, gw_paid = f["paid_minor_ours"], f["paid_minor_gateway"]
        out.checks.append(
            Check(
                not rows("money"),
                f"money: succeeded here {idr(ours_paid)} "
                f"{'==' if ours_paid == gw_paid else '!='} "
                f"gateway status 3 {idr(gw_paid)}",
            )
        )
        by_id = {o["payout_cl_id"]: o for o in ledger["orders"]}
        orders = self.rt.store.get_many(self.ids)
        for i in self.ids:
            order = orders.get(i)
            if order is None:
                continue
            g = by_id.get(i)
            there = "never created" if g is None else f"status {g['status']}"
            if order.state is State.REVIEW:
                out.review.append((i, order.reason or "", there))
            elif order.state not in FINAL:
                out.open_orders.append((i, order.state.value, order.reason or ""))
            else:
                out.final_times.append(max(0.0, order.updated_at - order.created_at))
        unexplained = [r for r in out.review if not r[1].strip()]
        out.checks.append(
            Check(
                not unexplained,
                f"orders in review have a reason: {len(out.review) - len(unexplained)}/{len(out.review)}",
            )
        )
        not_done = len(rows("lost")) - len(unexplained)
        out.checks.append(
            Check(
                not timed_out and not_done == 0,
                f"all {len(self.ids)} orders final or in review within {self.args.timeout:g}s: "
                + (
                    "yes"
                    if not timed_out and not_done == 0
                    else f"no, {f['lost'] - len(unexplained)} still open after {elapsed_s:.0f}s"
                ),
            )
        )
        return out

    def fault_summary(self) -> str:
        try:
            rules = self.sandbox.admin.faults()
        except Exception:
            return ""
        fired = [(r.get("name") or r.get("kind"), int(r.get("fired", 0))) for r in rules]
        return "; ".join(f"{name} x{n}" for name, n in fired if n)

    def report(self, out: Outcome) -> None:
        a = self.args
        n = len(self.ids)
        self.say(
            f"\nsummary: {n} payouts in {out.elapsed_s:.1f}s "
            f"({a.workers} worker(s) x {a.concurrency} threads, seed {a.seed}, "
            f"{'no faults' if a.no_faults else 'faults on'})"
        )
        self.say(f"  {'state':<13}{'orders':>7}")
        for s in (State.SUCCEEDED, State.FAILED, State.REJECTED, State.REVIEW):
            self.say(f"  {s.value:<13}{out.counts[s.value]:>7}")
        still = n - sum(out.counts[s.value] for s in (*FINAL, State.REVIEW))
        self.say(f"  {'still open':<13}{still:>7}")
        self.say(f"  {'total':<13}{n:>7}")
        t = out.final_times
        if t:
            self.say(
                f"  time to final (enqueue -> final): p50 {percentile(t, 50):.1f}s  "
                f"p95 {percentile(t, 95):.1f}s  max {max(t):.1f}s"
            )
        faults = self.fault_summary()
        if faults:
            self.say(f"  gateway faults fired: {faults}")
        self.say("\nproof against the sandbox ledger")
        for c in out.checks:
            self.say(f"  [{'ok' if c.ok else 'FAIL':<4}] {c.text}")
        if out.review:
            self.say(
                "\norders in review (a person decides: `payouts show ID`, then "
                "`payouts resolve` or `payouts resubmit`):"
            )
            for i, reason, there in out.review[:50]:
                self.say(f"  {i:<22} {reason}  [gateway: {there}]")
        if out.open_orders:
            self.say("\nstill open:")
            for i, state, reason in out.open_orders[:20]:
                self.say(f"  {i:<22} {state:<12} {reason}")
        self.say(f"\ndemo: {'PASS' if out.passed else 'FAIL'}")

    def log_tail(self, n: int = 30) -> str:
        lines: list[str] = []
        for path in sorted(self.dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-n:]
            lines += [f"{path.name}: {line}" for line in text]
        return "\n".join(lines[-n:])

    # -------------------------------------------------------------- stop

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()  # workers, beat, receiver, runtime; this process's environment back
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                self.sandbox.stop()
        if self.redis_server is not None:
            with contextlib.suppress(Exception):
                self.redis_server.cleanup()
        if self._log_file is not None:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(sys.stderr)
            self._log_file.close()


class DemoError(RuntimeError):
    """The demo could not run; the message says why."""


def _safe_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="payouts demo",
        description="Run Redis, the sandbox gateway (with faults), a worker, beat and the "
        "callback receiver; enqueue payouts; prove the outcome against the "
        "gateway's ledger. Exit 0 only when every check holds.",
    )
    p.add_argument("--payouts", type=int, default=200, help="how many payouts (default 200)")
    p.add_argument("--seed", type=int, default=1, help="seed of the data and the faults")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds for every order to become final or review (default 120)",
    )
    p.add_argument("--no-faults", action="store_true", help="a well-behaved gateway")
    p.add_argument(
        "--no-controls", action="store_true", help="skip the pause and balance-hold drills after the run"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--concurrency", type=int, default=32, help="threads per worker (default 32)")
    p.add_argument("--keep", action="store_true", help="keep the log directory on success")
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help="run on this Redis (an empty database; its orders stay there) instead of a private "
        "one; an exported REDIS_URL is never used",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        type=Path,
        metavar="FILE",
        help="also write the outcome as JSON to FILE; with no FILE, print it as the last line",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.payouts < 1 or args.workers < 1 or args.concurrency < 1 or args.timeout <= 0:
        print("error: --payouts, --workers, --concurrency and --timeout must be positive", file=sys.stderr)
        return 2
    demo = Demo(args)
    outcome: Outcome | None = None
    code = 1
    with terminate_as_interrupt():
        try:
            print(
                f"payouts demo: {args.payouts} payouts, seed {args.seed}, "
                f"{'no faults' if args.no_faults else 'faults on'}",
                flush=True,
            )
            demo.start()
            outcome = demo.run()
            demo.report(outcome)
            code = 0 if outcome.passed else 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping everything the demo started", file=sys.stderr)
            code = 130
        except DemoError as exc:
            print(f"\ndemo failed: {exc}", file=sys.stderr)
            code = 1
        except (OSError, RuntimeError, TimeoutError) as exc:  # a process did not start
            print(f"\ndemo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        finally:
            demo.stop()
    if outcome is not None and args.json is not None:
        doc = json.dumps(
            {
                "passed": outcome.passed,
                "elapsed_s": round(outcome.elapsed_s, 2),
                "counts": dict(outcome.counts),
                "checks": [c.__dict__ for c in outcome.checks],
                "review": outcome.review,
                "p50_s": percentile(outcome.final_times, 50),
                "p95_s": percentile(outcome.final_times, 95),
            },
            default=str,
        )
        if str(args.json) == "-":
            print(doc, flush=True)
        else:
            args.json.write_text(doc + "\n")
    if code == 0 and not args.keep:
        shutil.rmtree(demo.dir, ignore_errors=True)
    else:
        print(f"logs kept in {demo.dir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
