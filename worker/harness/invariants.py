"""The two guarantees, checked: our order store against the sandbox's ledger, against itself, and the logs.

One definition for the demo's proof, the chaos run, the property tests and the
integration tests.

What a run must show (docs/decisions.md, "The two guarantees"):

* **never created twice** -- no ``payout_cl_id`` reached the gateway's create endpoint again
  once the gateway had created it (ledger ``create_requests[id].after == 0``), and the ledger
  holds each id at most once;
* **never forgotten** -- every order we stored is final (``succeeded``/``failed``/``rejected``)
  or in ``review`` with a reason, and no record vanished (a Redis restart must not lose one);
* **never wrong** -- ``succeeded`` <-> ledger status 3, ``failed`` <-> 4/5, ``rejected`` <->
  absent from the ledger; same amount and ``payout_id``; the money we call paid equals, to the
  minor unit, the money the gateway paid for our orders; the gateway holds no order we do not
  know;
* **forgeries change nothing** -- an order whose callbacks were signed with a wrong key
  (``callback/wrong_key``) never had one acknowledged, and no state change of it came from a
  callback;
* **the store agrees with itself** -- the events stream the web app reads holds each order's
  transitions exactly as its history does (none lost or doubled by a Redis crash), the
  ``counts`` hash equals a tally of the records, the review index holds exactly the orders
  in review;
* **log hygiene** -- no account number, beneficiary name, platform key, authorization token or
  signature in any log line; every event named ``payout.*`` is JSON and carries ``payout_cl_id``.

A *violation* breaks a guarantee (the run fails). A *note* is worth a look but breaks nothing:
e.g. an order in ``review`` that the gateway does hold (an operator resolves it; nothing is
lost or paid twice).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import redis

from worker import keys
from worker.states import FINAL, OPEN, State, is_allowed

FINAL_STATES = frozenset({"succeeded", "failed", "rejected"})
#: our final state -> the ledger statuses that agree with it
AGREES = {"succeeded": {3}, "failed": {4, 5}}
#: review reasons that can only come from a state that disagreed with the gateway
WRONG_REVIEW = ("conflict", "amount mismatch")
MAX_EXAMPLES = 12


@dataclass(frozen=True)
class Expected:
    """What the runner enqueued for one order."""

    amount: int
    number: str
    name: str


@dataclass
class Verdict:
    """The checker's findings; ``ok`` when there is no violation."""

    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: Counter[str] = field(default_factory=Counter)
    review_reasons: Counter[str] = field(default_factory=Counter)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violate(self, text: str) -> None:
        self.violations.append(text)

    def merge(self, other: Verdict) -> None:
        self.violations += other.violations
        self.notes += other.notes
        self.results.update(other.results)
        self.review_reasons.update(other.review_reasons)
        self.figures.update(other.figures)


def read_orders(client: redis.Redis, ids: Iterable[str], batch: int = 500) -> dict[str, dict[str, Any]]:
    """Every order record with its history, in pipelined batches (``{}`` fields when missing)."""
    ids = list(ids)
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        pipe = client.pipeline(transaction=False)
        for i in chunk:
            pipe.hgetall(keys.order(i))
            pipe.lrange(keys.history(i), 0, -1)
        res = pipe.execute()
        for n, i in enumerate(chunk):
            fields, history = res[2 * n], res[2 * n + 1]
            out[i] = {"fields": fields, "history": [json.loads(h) for h in history]}
    return out


def _review_kind(reason: str) -> str:
    """A short class of a review reason, for the figures ("not found at the gateway 12s after...")."""
    if reason.startswith("not found at the gateway"):
        return "not found at the gateway after the grace period"
    return re.sub(r"[0-9]+", "N", reason)[:80]


def check_orders(  # noqa: C901 — one check per invariant of the two guarantees, kept in one place
    expected: Mapping[str, Expected],
    stored: Mapping[str, Mapping[str, Any]],
    ledger: Mapping[str, Any],
) -> Verdict:
    """Compare every enqueued order with its record and the gateway's ledger."""
    v = Verdict()
    entries = ledger.get("orders", [])
    requests_by_id: Mapping[str, Mapping[str, int]] = ledger.get("create_requests", {})
    by_id: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        pid = entry["payout_cl_id"]
        if pid in by_id:
            v.violate(f"created twice: the ledger holds {pid} more than once")
        by_id[pid] = entry
        if pid not in expected:
            v.violate(f"unknown payout at the gateway: {pid} (status {entry['status']})")

    paid_ours = paid_gateway = 0
    forged_orders = forged_attempts = 0
    twice: list[str] = []
    lost: list[str] = []
    wrong: list[str] = []
    for pid, exp in expected.items():
        rec = stored.get(pid) or {}
        fields: Mapping[str, str] = rec.get("fields") or {}
        history: list[Mapping[str, Any]] = rec.get("history") or []
        entry = by_id.get(pid)
        creq = requests_by_id.get(pid) or {}
        if int(creq.get("after", 0)) > 0:
            twice.append(f"{pid}: {creq['after']} create request(s) after the gateway had it")
        if not fields:
            lost.append(f"{pid}: no record in the store")
            continue
        state = fields.get("state", "")
        v.results[state] += 1
        if state not in FINAL_STATES and state != "review":
            lost.append(f"{pid}: still {state} (reason {fields.get('reason', '')!r})")
            continue
        if int(fields.get("amount", -1)) != exp.amount:
            wrong.append(f"{pid}: stored amount {fields.get('amount')} != enqueued {exp.amount}")
        if entry is not None and int(entry["amount"]) != exp.amount:
            wrong.append(f"{pid}: gateway amount {entry['amount']} != ours {exp.amount}")
        if entry is not None and int(entry["status"]) == 3:
            paid_gateway += int(entry["amount"])
        if state == "succeeded":
            paid_ours += exp.amount
        if state in AGREES:
            if entry is None or int(entry["status"]) not in AGREES[state]:
                status = None if entry is None else entry["status"]
                wrong.append(f"{pid}: {state} here, gateway status {status}")
            elif fields.get("payout_id") != entry["payout_id"]:
                wrong.append(f"{pid}: payout_id {fields.get('payout_id')} != gateway {entry['payout_id']}")
        elif state == "rejected":
            if entry is not None:
                wrong.append(f"{pid}: rejected here, but the gateway created it (status {entry['status']})")
        else:  # review
            reason = fields.get("reason", "")
            v.review_reasons[_review_kind(reason)] += 1
            if not reason:
                lost.append(f"{pid}: in review without a reason")
            elif any(w in reason for w in WRONG_REVIEW):
                wrong.append(f"{pid}: review after a disagreement: {reason!r}")
            elif entry is not None:
                v.notes.append(
                    f"{pid}: in review ({reason!r}) but the gateway holds it with status "
                    f"{entry['status']}: not lost, an operator resolves it"
                )
        if entry is not None:
            attempts = entry.get("callback_attempts") or []
            forged = [a for a in attempts if a.get("http_status") == 401]
            if forged:
                forged_orders += 1
                forged_attempts += len(forged)
                if any(a.get("acked") for a in attempts):
                    wrong.append(f"{pid}: a callback signed with a wrong key was acknowledged")
                via_callback = [h for h in history if str(h.get("reason", "")).startswith("callback")]
                if via_callback:
                    wrong.append(f"{pid}: forged callback applied: {via_callback[0]}")

    for label, items in (("created twice", twice), ("lost", lost), ("wrong", wrong)):
        for text in items[:MAX_EXAMPLES]:
            v.violate(f"{label}: {text}")
        if len(items) > MAX_EXAMPLES:
            v.violate(f"{label}: ... and {len(items) - MAX_EXAMPLES} more")
    if paid_ours != paid_gateway:
        v.violate(f"money: we call {paid_ours} minor units paid, the gateway paid {paid_gateway}")
    totals = ledger.get("totals", {})
    v.figures.update(
        {
            "paid_minor_ours": paid_ours,
            "paid_minor_gateway": paid_gateway,
            "gateway_orders": len(entries),
            "create_requests": totals.get("create_requests"),
            "create_requests_after_created": totals.get("after_created"),
            "forged_orders": forged_orders,
            "forged_callbacks_refused": forged_attempts,
            "created_twice": len(twice),
            "lost": len(lost),
            "wrong": len(wrong),
        }
    )
    return v


def check_store(
    stored: Mapping[str, Mapping[str, Any]],
    events: Iterable[Mapping[str, str]],
    counts: Mapping[str, int],
    review_ids: Iterable[str],
) -> Verdict:
    """The events stream, the counts hash and the review index against the order records."""
    v = Verdict()
    seen: dict[str, list[tuple[str, str]]] = {}
    for e in events:
        seen.setdefault(e.get("payout_cl_id", ""), []).append((e.get("from", ""), e.get("to", "")))
    mismatched: list[str] = []
    tally: Counter[str] = Counter()
    for pid, rec in stored.items():
        fields = rec.get("fields") or {}
        if not fields:
            continue
        tally[fields.get("state", "")] += 1
        history = [(str(h.get("from", "")), str(h.get("to", ""))) for h in rec.get("history") or []]
        if seen.get(pid, []) != history:
            mismatched.append(f"{pid}: events {seen.get(pid, [])} != history {history}")
    for text in mismatched[:MAX_EXAMPLES]:
        v.violate(f"events stream: {text}")
    if len(mismatched) > MAX_EXAMPLES:
        v.violate(f"events stream: ... and {len(mismatched) - MAX_EXAMPLES} more")
    wrong_counts = {k: (int(counts.get(k, 0)), n) for k, n in tally.items() if int(counts.get(k, 0)) != n}
    wrong_counts.update({k: (int(n), 0) for k, n in counts.items() if k not in tally and int(n) != 0})
    if wrong_counts:
        v.violate(f"counts hash != records (hash, records): {wrong_counts}")
    in_review = {p for p, r in stored.items() if (r.get("fields") or {}).get("state") == "review"}
    indexed = set(review_ids)
    if indexed != in_review:
        v.violate(f"review index: {len(indexed - in_review)} extra, {len(in_review - indexed)} missing")
    v.figures["events_checked"] = sum(len(x) for x in seen.values())
    return v


# --------------------------------------------------------------------------- logs

_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]{9,32}(?![0-9])")
#: a ``payout.*`` event rendered by structlog's console renderer: logging was never configured
_CONSOLE_EVENT = re.compile(r"\[(?:debug|info|warning|error|critical)\s*\]\s+payout\.")
_HEX_SIG = re.compile(r"(?<![0-9A-Za-z])(?:[0-9a-f]{64}|[0-9a-f]{32})(?![0-9A-Za-z])")


def check_logs(  # noqa: C901 — one check per log rule, kept in one place
    paths: Iterable[Path],
    *,
    numbers: set[str],
    name_pattern: re.Pattern[str] | None,
    secrets: Mapping[str, str],
) -> Verdict:
    """Log hygiene over every line of ``paths`` (JSON or not).

    ``numbers``: every account number enqueued; ``name_pattern`` matches every beneficiary
    name enqueued (the runner makes them distinctive); ``secrets``: label -> literal text.
    """
    v = Verdict()
    leaks: list[str] = []
    unbound: list[str] = []
    lines = json_lines = payout_events = 0
    errors: Counter[str] = Counter()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, start=1):
                lines += 1
                where = f"{path.name}:{n}"
                for label, secret in secrets.items():
                    if secret and secret in line:
                        leaks.append(f"{where}: the {label}")
                for run in _DIGIT_RUN.findall(line):
                    if run in numbers:
                        leaks.append(f"{where}: an account number (…{run[-4:]})")
                if name_pattern is not None and name_pattern.search(line):
                    leaks.append(f"{where}: a beneficiary name")
                if _HEX_SIG.search(line):
                    leaks.append(f"{where}: a hex string shaped like a signature")
                if not line.startswith("{"):
                    if _CONSOLE_EVENT.search(line):
                        unbound.append(f"{where}: not JSON (logging not configured in this process)")
                    continue
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                json_lines += 1
                event = str(doc.get("event", ""))
                if doc.get("level") in ("error", "critical"):
                    errors[event[:60]] += 1
                if event.startswith("payout."):
                    payout_events += 1
                    if not doc.get("payout_cl_id"):
                        unbound.append(f"{where}: {event}")
    for label, items in (("log leak", leaks), ("payout event without payout_cl_id or JSON", unbound)):
        for text in items[:MAX_EXAMPLES]:
            v.violate(f"{label}: {text}")
        if len(items) > MAX_EXAMPLES:
            v.violate(f"{label}: ... and {len(items) - MAX_EXAMPLES} more")
    v.figures.update(
        {
            "log_lines": lines,
            "log_json_lines": json_lines,
            "log_payout_events": payout_events,
            "log_errors_by_event": dict(errors.most_common(8)),
        }
    )
    return v


# --------------------------------------------------------------------------- store, exhaustively


def all_order_ids(client: redis.Redis) -> list[str]:
    """Every stored order id (SCAN: fine in a test database, never in the worker)."""
    prefix = keys.order("")
    return sorted(k[len(prefix) :] for k in client.scan_iter(match=prefix + "*", count=1000))


def check_invariants(
    client: redis.Redis, *, create_requests: Mapping[str, Mapping[str, int]] | None = None
) -> dict[str, str]:
    """Assert every invariant; return {payout_cl_id: state}.

    * each order's history is a chain ``"" -> received -> ...`` of edges the table allows,
      ending at the stored state; a final state is only ever left for ``review``;
    * ``payouts:counts`` equals the number of orders in each state;
    * an order is in the due-index iff it is open; in the review index iff in review;
    * the events stream holds exactly one entry per history entry, in the same order;
    * with ``create_requests`` (the sandbox ledger): at most one create per order.
    """
    states: dict[str, str] = {}
    history_total = 0
    histories: dict[str, list[tuple[str, str]]] = {}
    for pid in all_order_ids(client):
        state = client.hget(keys.order(pid), "state")
        assert isinstance(state, str), pid
        states[pid] = state
        entries = [json.loads(h) for h in client.lrange(keys.history(pid), 0, -1)]
        assert entries, f"{pid}: no history"
        chain = [(str(e["from"]), str(e["to"])) for e in entries]
        histories[pid] = chain
        history_total += len(chain)
        assert chain[0] == ("", "received"), f"{pid}: history starts {chain[0]}"
        for (prev_from, prev_to), (src, dst) in pairwise(chain):
            assert src == prev_to, f"{pid}: history broken at {prev_from}->{prev_to}, {src}->{dst}"
        for src, dst in chain[1:]:
            assert is_allowed(State(src), State(dst)), f"{pid}: {src} -> {dst} not allowed"
            # a final state is left only for review -- or, for rejected (nothing was created),
            # by the operator's resubmit back to received
            if State(src) in FINAL and (src, dst) != (State.REJECTED.value, State.RECEIVED.value):
                assert dst == State.REVIEW.value, f"{pid}: final {src} replaced by {dst}"
        assert chain[-1][1] == state, f"{pid}: history ends {chain[-1]}, state {state}"

    actual = Counter(states.values())
    counts = {k: int(v) for k, v in client.hgetall(keys.COUNTS).items()}
    for s in State:
        assert counts.get(s.value, 0) == actual.get(s.value, 0), (
            f"counts[{s.value}]={counts.get(s.value, 0)}, actual {actual.get(s.value, 0)}"
        )

    due = set(client.zrange(keys.DUE, 0, -1))
    open_ids = {pid for pid, s in states.items() if State(s) in OPEN}
    # a final order stays scheduled while its result message (RESULT_TASK) is not yet published
    pending = {pid for pid in states if client.hget(keys.order(pid), "result_pending") == "1"}
    scheduled = open_ids | pending
    assert due == scheduled, f"due-index {sorted(due ^ scheduled)} differ; states {states}"
    review = set(client.zrange(keys.REVIEW, 0, -1))
    assert review == {pid for pid, s in states.items() if s == State.REVIEW.value}

    events: list[tuple[str, dict[str, str]]] = client.xrange(keys.EVENTS, "-", "+")  # type: ignore[assignment]
    assert len(events) == history_total, f"{len(events)} events, {history_total} history entries"
    by_order: dict[str, list[tuple[str, str]]] = {}
    for _, fields in events:
        by_order.setdefault(fields["payout_cl_id"], []).append((fields["from"], fields["to"]))
    assert by_order == histories

    if create_requests is not None:
        for pid in states:
            total = int(create_requests.get(pid, {}).get("total", 0))
            assert total <= 1, f"{pid}: {total} create requests at the gateway"
    return states


def describe(client: redis.Redis, pid: str) -> dict[str, Any]:
    """An order's fields and history, for assertion messages."""
    return {
        "fields": client.hgetall(keys.order(pid)),
        "history": [json.loads(h) for h in client.lrange(keys.history(pid), 0, -1)],
    }
