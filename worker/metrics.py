"""Prometheus metrics, cluster-wide, served at ``GET /metrics`` on the web process's admin listener.

Two kinds, both read from Redis at scrape time, so one scrape of any web process sees
every worker (no per-worker port, no multiprocess directory):

* **gauges computed from the store**: orders per state (every :class:`State` member, 0
  included), due backlog, the most overdue order, the oldest open order, review, awaiting
  approval, pauses and the balance hold, seconds since the last sweep. One pipelined read
  of O(1)/O(log N) commands per scrape.
* **counters the workers produce**, kept in Redis hashes (``keys.METRIC_*``):
  state changes and the enqueue-to-final histogram are ``HINCRBY`` inside the same
  ``transition.lua``/``create.lua`` step that changes the state (never lost, never
  double counted); gateway requests and their latency are counted in process memory by
  :func:`count_gateway` (a dict update under a lock, ~1 us) and flushed to Redis by a
  daemon thread once a second in one pipeline of ``HINCRBY``/``HINCRBYFLOAT`` -- the
  submit path never waits on Redis for a metric. A SIGKILLed process loses at most its
  last second of gateway counts.

Other engineers add a counter by adding a row to :data:`COUNTERS` and calling
:func:`incr` (buffered the same way). ``prometheus_client`` (the ``metrics`` extra) is
imported only to render a scrape; counting needs nothing but Redis.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis

from worker import keys
from worker.logs import get_logger
from worker.states import State

log = get_logger("payouts.metrics")

#: upper bounds (s) of the enqueue-to-final histogram; the same list is in transition.lua
TIME_TO_FINAL_BUCKETS: Final = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
#: upper bounds (s) of the gateway latency histogram
GATEWAY_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
#: how often each process writes its buffered counts to Redis
FLUSH_INTERVAL_S: Final = 1.0
#: gateway endpoints (the ``endpoint`` label); ``balance`` is the balance poller's call
ENDPOINTS: Final = ("create", "query", "list", "balance")
#: the gateway's documented codes (docs/gateway.md §7): a ``code`` label is one of these,
#: "none" or "other" -- a bounded set, whatever a gateway sends
GATEWAY_CODES: Final = frozenset({f"{n:04d}" for n in range(30)} | {"0050"})
#: the merchant-level create refusals the rules page on (settings.HOLD_CODES_DEFAULT)
MERCHANT_CODES: Final = ("0003", "0004", "0010", "0018", "0027")

# -- the label sets every counter a rule reads is exposed with, at 0, from the first scrape.
# A labelled counter that first appears at 1 reads as an increase of 0 to increase()/rate():
# the first refusal, the first order into review, a first burst of unknown outcomes would
# never alert. Counts of other label sets still appear when they happen.


def known_transitions() -> tuple[tuple[str, str], ...]:
    """("", "received") (stored) and every allowed edge of :data:`worker.states.TRANSITIONS`."""
    from worker.states import TRANSITIONS

    edges = {(src.value, dst.value) for src, dsts in TRANSITIONS.items() for dst in dsts}
    return (("", "received"), *sorted(edges))


def known_gateway_labels() -> tuple[tuple[str, str, str], ...]:
    """(endpoint, outcome, code) of the answers each endpoint is documented or built to give."""
    from worker.gateway import NOT_CREATED

    create = [
        ("create", "accepted", "0000"),
        ("create", "not_sent", "none"),
        ("create", "rate_limited", "none"),
    ]
    create += [("create", "rejected", c) for c in sorted(NOT_CREATED)]
    create += [("create", "unknown", c) for c in ("none", "other", "0000", "0001", "0005", "0006", "0014")]
    query = [
        ("query", "found", "none"),
        ("query", "not_found", "none"),
        ("query", "not_found", "0050"),
        ("query", "rate_limited", "none"),
        *(("query", "error", c) for c in ("none", "other", "0005", "0006")),
    ]
    rest = [
        ("list", "found", "none"),
        ("list", "error", "none"),
        ("balance", "found", "0000"),
        ("balance", "rate_limited", "none"),
        *(("balance", "error", c) for c in ("none", "other", "0005", "0006")),
    ]
    return tuple(create + query + rest)


#: generic counters other modules increment with :func:`incr`: name -> (help, label names)
COUNTERS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {}

#: the state that holds orders for a maker-checker approval (worker/desk/approval.py adds it)
AWAITING_APPROVAL: Final = "awaiting_approval"

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def code_label(code: str | None) -> str:
    """A bounded label value: the gateway's 4-digit code, "none" when there is none, else "other"."""
    if not code:
        return "none"
    return code if code in GATEWAY_CODES else "other"


# -- counting (every process) ----------------------------------------------------


class _Buffer:
    """Per-process counts not yet in Redis; flushed by a daemon thread (fork-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: redis.Redis | None = None
        self.incr: dict[tuple[str, str], int] = defaultdict(int)
        self.incr_float: dict[tuple[str, str], float] = defaultdict(float)
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()

    def add(
        self, client: redis.Redis, ints: Sequence[tuple[str, str]], floats: Sequence[tuple[str, str, float]]
    ) -> None:
        with self.lock:
            self.client = client
            for key in ints:
                self.incr[key] += 1
            for k, f, v in floats:
                self.incr_float[(k, f)] += v
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="payouts-metrics", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def flush(self) -> int:
        """Write the buffered counts in one pipeline; on failure they are kept for the next try."""
        with self.lock:
            client, ints, floats = self.client, dict(self.incr), dict(self.incr_float)
            self.incr.clear()
            self.incr_float.clear()
        if client is None or not (ints or floats):
            return 0
        try:
            pipe = client.pipeline(transaction=False)
            for (key, fld), n in ints.items():
                pipe.hincrby(key, fld, n)
            for (key, fld), v in floats.items():
                pipe.hincrbyfloat(key, fld, v)
            pipe.execute()
        except redis.exceptions.RedisError as exc:
            with self.lock:
                for k, n in ints.items():
                    self.incr[k] += n
                for k2, v in floats.items():
                    self.incr_float[k2] += v
            log.warning("metrics.flush_failed", error=type(exc).__name__)
            return 0
        return len(ints) + len(floats)


_buffer = _Buffer()


def _after_fork() -> None:
    global _buffer
    _buffer = _Buffer()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(lambda: _buffer.flush())


def _client(rt: Any) -> redis.Redis:
    return rt if isinstance(rt, redis.Redis) else rt.redis


_LATENCY_LABELS: Final = tuple((float(b), repr(float(b))) for b in GATEWAY_LATENCY_BUCKETS)


def count_gateway(rt: Any, endpoint: str, outcome: str, code: str | None, seconds: float) -> None:
    """Count one gateway request (``rt``: a Runtime or a Redis client): a few microseconds in
    memory, flushed to Redis by the process's metrics thread; never raises on I/O."""
    c = code_label(code)
    le = "+Inf"
    for bound, label in _LATENCY_LABELS:
        if seconds <= bound:
            le = label
            break
    _buffer.add(
        _client(rt),
        (
            (keys.METRIC_GATEWAY, f"{endpoint}|{outcome}|{c}"),
            (keys.METRIC_GATEWAY_LATENCY, f"{endpoint}|{le}"),
            (keys.METRIC_GATEWAY_LATENCY, f"{endpoint}|count"),
        ),
        ((keys.METRIC_GATEWAY_LATENCY, f"{endpoint}|sum", max(0.0, seconds)),),
    )


def incr(rt: Any, name: str, **labels: str) -> None:
    """Add 1 to the generic counter ``name`` (a row of :data:`COUNTERS`) with these labels."""
    if name not in COUNTERS:
        raise KeyError(f"unknown counter {name!r}: add it to worker.metrics.COUNTERS")
    want = COUNTERS[name][1]
    if set(labels) != set(want):
        raise ValueError(f"counter {name} takes labels {want}, got {tuple(labels)}")
    fld = ",".join(f"{k}={str(labels[k]).replace(',', '_').replace('=', '_')}" for k in want)
    _buffer.add(_client(rt), ((keys.metric_counter(name), fld),), ())


def flush() -> int:
    """Write this process's buffered counts now (worker shutdown, tests)."""
    return _buffer.flush()


def discard() -> None:
    """Drop this process's unwritten counts and forget their store (a process that moves to
    another store; tests, whose stores come and go): they are never written anywhere else."""
    with _buffer.lock:
        _buffer.incr.clear()
        _buffer.incr_float.clear()
        _buffer.client = None


# -- scraping (the web process) ---------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape reads, in one pipelined round trip."""

    now: float
    counts: Mapping[str, str]
    due_backlog: int
    oldest_due: float | None
    oldest_open: float | None
    open_total: int
    review: int
    pauses: Mapping[str, str]
    sweep_last: str | None
    transitions: Mapping[str, str]
    time_to_final: Mapping[str, str]
    gateway: Mapping[str, str]
    gateway_latency: Mapping[str, str]
    held: Mapping[str, str]
    counters: Mapping[str, Mapping[str, str]]
    #: console actions by "action:result" (worker/console/audit.py), allowed and denied
    console_actions: Mapping[str, str]
    #: ids in the never-expiring tombstone hash (keys.IDS): one per order ever stored (D56)
    tombstones: int = 0


def read_snapshot(client: redis.Redis, *, now: float | None = None) -> Snapshot:
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.COUNTS)
    pipe.zcount(keys.DUE, "-inf", repr(now))
    pipe.zrange(keys.DUE, 0, 0, withscores=True)
    pipe.zrange(keys.OPEN_SINCE, 0, 0, withscores=True)
    pipe.zcard(keys.OPEN_SINCE)
    pipe.zcard(keys.REVIEW)
    pipe.hgetall(keys.PAUSE)
    pipe.get(keys.SWEEP_LAST)
    pipe.hgetall(keys.METRIC_TRANSITIONS)
    pipe.hgetall(keys.METRIC_TIME_TO_FINAL)
    pipe.hgetall(keys.METRIC_GATEWAY)
    pipe.hgetall(keys.METRIC_GATEWAY_LATENCY)
    pipe.hgetall(keys.HELD)
    pipe.hgetall(keys.CONSOLE_ACTIONS)
    pipe.hlen(keys.IDS)
    names = sorted(COUNTERS)
    for name in names:
        pipe.hgetall(keys.metric_counter(name))
    r = pipe.execute()
    text = _text_map
    return Snapshot(
        now=now,
        counts=text(r[0]),
        due_backlog=int(r[1]),
        oldest_due=float(r[2][0][1]) if r[2] else None,
        oldest_open=float(r[3][0][1]) if r[3] else None,
        open_total=int(r[4]),
        review=int(r[5]),
        pauses=text(r[6]),
        sweep_last=_text(r[7]) if r[7] is not None else None,
        transitions=text(r[8]),
        time_to_final=text(r[9]),
        gateway=text(r[10]),
        gateway_latency=text(r[11]),
        held=text(r[12]),
        console_actions=text(r[13]),
        tombstones=int(r[14]),
        counters={n: text(v) for n, v in zip(names, r[15:], strict=True)},
    )


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _text_map(m: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in m.items()}


def _pause_facts(raw: Mapping[str, str]) -> Iterator[tuple[str, str, str, float | None]]:
    """(scope, source, reason, since) per active pause; malformed entries still count as paused."""
    import json

    for scope, doc in sorted(raw.items()):
        try:
            d = json.loads(doc)
        except ValueError:
            d = {}
        if not isinstance(d, dict):
            d = {}
        since = d.get("since")
        try:
            since_f = float(since) if since is not None else None
        except (TypeError, ValueError):
            since_f = None
        yield scope, str(d.get("source") or "operator"), str(d.get("reason") or "")[:64], since_f


def _with_zeros(raw: Mapping[str, str], fields: Iterator[str] | Sequence[str]) -> dict[str, str]:
    """``raw`` with every field of ``fields`` it lacks at "0"."""
    out = dict.fromkeys(fields, "0")
    out.update(raw)
    return out


def _histogram(
    raw: Mapping[str, str], bounds: tuple[float, ...]
) -> dict[str, tuple[list[tuple[str, float]], float]]:
    """From "label|le" / "label|sum" fields (non-cumulative buckets): label value -> (cumulative
    buckets, sum). A bound is written as Lua ``tostring`` ("60") or Python ``repr`` ("0.25")."""
    per: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[str, float] = defaultdict(float)
    for fld, v in raw.items():
        lv, _, part = fld.rpartition("|")
        if part == "sum":
            sums[lv] += float(v)
        elif part == "count":
            per[lv]
        else:
            try:
                le = float(part)  # "+Inf" -> inf
            except ValueError:
                continue
            per[lv][next((float(b) for b in bounds if le <= b), float("inf"))] += float(v)
    out: dict[str, tuple[list[tuple[str, float]], float]] = {}
    for lv, counts in per.items():
        cum, buckets = 0.0, []
        for b in bounds:
            cum += counts.get(float(b), 0.0)
            buckets.append((repr(float(b)), cum))
        buckets.append(("+Inf", cum + counts.get(float("inf"), 0.0)))
        out[lv] = (buckets, sums.get(lv, 0.0))
    return out


def collect_families(snap: Snapshot) -> list[Any]:
    """The metric families of one snapshot (prometheus_client objects)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
    )

    now = snap.now
    fams: list[Any] = []
    orders = GaugeMetricFamily(
        "payouts_orders", "Orders per state (final states are cumulative until retention)", labels=["state"]
    )
    for s in State:
        orders.add_metric([s.value], float(int(snap.counts.get(s.value, 0) or 0)))
    fams.append(orders)
    fams.append(
        GaugeMetricFamily(
            "payouts_open_orders", "Open orders (not final, not in review)", value=snap.open_total
        )
    )
    fams.append(
        GaugeMetricFamily(
            "payouts_due_backlog",
            "Due-index entries past their due time (open orders; final ones owing a result)",
            value=snap.due_backlog,
        )
    )
    overdue = max(0.0, now - snap.oldest_due) if snap.oldest_due is not None else 0.0
    fams.append(
        GaugeMetricFamily(
            "payouts_oldest_due_overdue_seconds",
            "How far the most overdue open order is past due",
            value=overdue,
        )
    )
    oldest_open = max(0.0, now - snap.oldest_open) if snap.oldest_open is not None else 0.0
    fams.append(
        GaugeMetricFamily(
            "payouts_oldest_open_order_age_seconds",
            "Age of the oldest open order (since it was stored or last resubmitted)",
            value=oldest_open,
        )
    )
    fams.append(GaugeMetricFamily("payouts_review_orders", "Orders waiting in review", value=snap.review))
    fams.append(
        GaugeMetricFamily(
            "payouts_tombstones",
            "Ids in the never-expiring tombstone hash (one per order ever stored, ~90 B each; D56)",
            value=snap.tombstones,
        )
    )
    fams.append(
        GaugeMetricFamily(
            "payouts_awaiting_approval_orders",
            "Orders held for an approval (0 when approval is not in use)",
            value=int(snap.counts.get(AWAITING_APPROVAL, 0) or 0),
        )
    )
    pauses = list(_pause_facts(snap.pauses))
    fams.append(
        GaugeMetricFamily("payouts_paused", "1 while any pause or hold is active", value=int(bool(pauses)))
    )
    fams.append(
        GaugeMetricFamily(
            "payouts_balance_hold",
            "1 while a balance hold (pause with source=balance) is active",
            value=int(any(src == "balance" for _, src, _, _ in pauses)),
        )
    )
    info = InfoMetricFamily("payouts_pause", "One series per active pause", labels=["scope", "source"])
    age = GaugeMetricFamily(
        "payouts_pause_age_seconds", "How long each active pause has lasted", labels=["scope", "source"]
    )
    for scope, src, reason, since in pauses:
        info.add_metric([scope, src], {"reason": reason})
        age.add_metric([scope, src], max(0.0, now - since) if since is not None else 0.0)
    fams += [info, age]
    sweep_age = now - float(snap.sweep_last) if snap.sweep_last else float("inf")
    fams.append(
        GaugeMetricFamily(
            "payouts_sweep_last_age_seconds",
            "Seconds since the last completed sweep (+Inf: never)",
            value=sweep_age,
        )
    )
    trans = CounterMetricFamily(
        "payouts_transitions", "State changes (from '' = stored)", labels=["from", "to"]
    )
    for fld, v in sorted(_with_zeros(snap.transitions, ("|".join(e) for e in known_transitions())).items()):
        src, _, dst = fld.partition("|")
        trans.add_metric([src, dst], float(v))
    fams.append(trans)
    ttf = HistogramMetricFamily(
        "payouts_time_to_final_seconds", "From enqueue to a final state", labels=["state"]
    )
    finals = (f"{st.value}|count" for st in State if st.value in ("succeeded", "failed", "rejected"))
    ttf_raw = _with_zeros(snap.time_to_final, finals)
    for lv, (buckets, total) in sorted(_histogram(ttf_raw, TIME_TO_FINAL_BUCKETS).items()):
        ttf.add_metric([lv], buckets, total)
    fams.append(ttf)
    gw = CounterMetricFamily(
        "payouts_gateway_requests",
        "Gateway requests by endpoint, outcome and error code",
        labels=["endpoint", "outcome", "code"],
    )
    for fld, v in sorted(_with_zeros(snap.gateway, ("|".join(k) for k in known_gateway_labels())).items()):
        parts = fld.split("|")
        if len(parts) == 3:
            gw.add_metric(parts, float(v))
    fams.append(gw)
    lat = HistogramMetricFamily(
        "payouts_gateway_request_duration_seconds", "Gateway request latency", labels=["endpoint"]
    )
    latency_raw = _with_zeros(snap.gateway_latency, (f"{e}|count" for e in ENDPOINTS))
    for lv, (buckets, total) in sorted(_histogram(latency_raw, GATEWAY_LATENCY_BUCKETS).items()):
        lat.add_metric([lv], buckets, total)
    fams.append(lat)
    held = CounterMetricFamily(
        "payouts_held_submits",
        "Submit attempts held back by a pause or hold (worker.desk.gate), by kind",
        labels=["kind"],
    )
    for kind, v in sorted(snap.held.items()):
        held.add_metric([kind], float(v))
    fams.append(held)
    console = CounterMetricFamily(
        "payouts_console_actions",
        "Operator console actions by action and result (ok, denied, conflict, invalid, error)",
        labels=["action", "result"],
    )
    for fld, v in sorted(snap.console_actions.items()):
        action, _, result = fld.rpartition(":")
        console.add_metric([action, result], float(v))
    fams.append(console)
    for name in sorted(COUNTERS):
        help_text, label_names = COUNTERS[name]
        fam = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=list(label_names))
        for fld, v in sorted(snap.counters.get(name, {}).items()):
            vals = dict(p.split("=", 1) for p in fld.split(",") if "=" in p)
            fam.add_metric([vals.get(n, "") for n in label_names], float(v))
        fams.append(fam)
    return fams


class _Collector:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Any]:
        yield from collect_families(read_snapshot(self.client))


def render(client: redis.Redis) -> bytes:
    """The Prometheus text exposition of the whole cluster (raises RedisError if Redis is down)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(client))
    return generate_latest(registry)
