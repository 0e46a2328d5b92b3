"""Fault rules: what can go wrong at the sandbox gateway, and when.

A rule is a JSON object. Common fields (all optional except ``kind``)::

    {
      "kind": "create_lost",        # what goes wrong (table below)
      "mode": "garbled",            # variant, for kinds that have modes
      "probability": 0.1,           # chance a matching request/order is hit (default 1.0)
      "match": "^chaos-",           # regex searched in payout_cl_id (default: everything)
      "times": 3,                   # fire at most this many times (default: unlimited)
      "endpoints": ["create"],      # for latency / rate_limit / query faults
      "name": "lose 10 percent"     # free label, echoed back in GET /_sandbox/faults
    }

A rule with ``match`` only applies to requests that carry a ``payout_cl_id``
(create body, list filter ``payout_cl_id``, the single-form path). Probability draws
are seeded: for a known ``payout_cl_id`` the draw depends only on ``seed``, the
rule's content, the id and how often the rule was asked about that id, so a chaos run
replays the same way whatever the interleaving of requests (two identical rules draw
alike; give one a ``name`` to tell them apart).

Kinds and their own fields:

============================ ================================================================
kind / mode                   effect
============================ ================================================================
``latency``                   sleep before handling. ``seconds`` (fixed), or ``distribution``
                              ``{"type": "uniform", "min": a, "max": b}`` or
                              ``{"type": "normal", "mean": m, "stddev": s}`` (clipped at 0).
                              ``endpoints`` default ``["all"]``.
``create_5xx_before``         answer HTTP ``status`` (default 500) and **do not** create.
``create_lost`` / ``hang``    the order **is** created, then the response is lost: sleep
                              ``seconds`` (default 30) then ``then``: ``"answer"`` (default,
                              the real success body) or ``"close"`` (drop the connection).
``create_lost`` / ``5xx``     order created, answer HTTP ``status`` (default 500).
``create_lost`` / ``empty``   order created, answer HTTP 200 with an empty body.
``create_lost`` / ``garbled`` order created, answer HTTP 200 with a truncated JSON body.
``create_lost`` / ``reset``   order created, the TCP connection is reset (RST).
``create_lost`` / ``code``    order created, answered as a refusal: ``code`` (default
                              ``"0017"``, "failed to create payout record").
``rate_limit``                HTTP 429 once more than ``rps`` requests per second arrive
                              (token bucket of ``burst`` tokens, default ``rps``).
                              ``endpoints`` default ``["create", "query"]``. Never creates.
``query_timeout``             a query hangs ``seconds`` (default 30), then ``then``
                              (``"answer"`` or ``"close"``).
``query_5xx``                 a query answers HTTP ``status`` (default 500).
``invisible``                 an order created while the rule fires is absent from query
                              answers for ``seconds`` after its creation (decided at create).
``callback`` / ``duplicate``  the notification is delivered ``copies`` times (default 2);
                              ``concurrent: true`` sends the copies at the same moment.
``callback`` / ``out_of_order`` after the final notification is acknowledged, a stale one is
                              delivered with ``status`` (default 2) and an older update_time.
``callback`` / ``delay``      wait ``seconds`` before the first delivery attempt.
``callback`` / ``never``      no notification at all.
``callback`` / ``wrong_key``  the notification is signed with ``key`` (default a wrong key).
``outcome``                   not a fault: force the order's final ``status`` (3, 4 or 5),
                              or keep it at 1 or 2 forever ("stuck").
``tls_handshake`` / ``stall`` TLS listener only: accept TCP, never answer the ClientHello for
                              ``seconds`` (30), then ``then``: ``close`` (default), ``reset``
                              or ``proceed`` (finish the handshake late). No HTTP is read.
``tls_handshake`` / ``abort`` TLS listener only: read the ClientHello, then ``how``:
                              ``garbage`` (default), ``alert``, ``close`` or ``reset``.
============================ ================================================================

``endpoints`` names: ``create``, ``query_list``, ``query_single``, ``balance``; ``query``
means both query forms, ``all`` every gateway endpoint (never the ``/_sandbox`` admin).
Callback, invisible and outcome rules are evaluated once per order (when it is created or
reaches its final status); ``times`` then counts orders. ``tls_handshake`` rules are
evaluated once per TCP connection to the TLS listener (``times`` counts connections; they
cannot ``match``: no ``payout_cl_id`` is known before the handshake).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

ENDPOINTS: Final = ("create", "query_list", "query_single", "balance")
_ENDPOINT_ALIASES: Final = {
    "all": ENDPOINTS,
    "query": ("query_list", "query_single"),
}

#: kind -> allowed modes (empty: the kind has no modes).
KINDS: Final[dict[str, tuple[str, ...]]] = {
    "latency": (),
    "create_5xx_before": (),
    "create_lost": ("hang", "5xx", "empty", "garbled", "reset", "code"),
    "rate_limit": (),
    "query_timeout": (),
    "query_5xx": (),
    "invisible": (),
    "callback": ("duplicate", "out_of_order", "delay", "never", "wrong_key"),
    "outcome": (),
    "tls_handshake": ("stall", "abort"),
}

_DEFAULT_ENDPOINTS: Final = {
    "latency": ("all",),
    "rate_limit": ("create", "query"),
    "query_timeout": ("query",),
    "query_5xx": ("query",),
}

_COMMON_FIELDS: Final = frozenset({"kind", "mode", "probability", "match", "times", "name"})
#: kind -> its own fields.
_KIND_FIELDS: Final[dict[str, frozenset[str]]] = {
    "latency": frozenset({"seconds", "distribution", "endpoints"}),
    "create_5xx_before": frozenset({"status"}),
    "create_lost": frozenset({"seconds", "then", "status", "code"}),
    "rate_limit": frozenset({"rps", "burst", "endpoints"}),
    "query_timeout": frozenset({"seconds", "then", "endpoints"}),
    "query_5xx": frozenset({"status", "endpoints"}),
    "invisible": frozenset({"seconds"}),
    "callback": frozenset({"copies", "concurrent", "status", "seconds", "key"}),
    "outcome": frozenset({"status"}),
    "tls_handshake": frozenset({"seconds", "then", "how"}),
}

TLS_STALL_THEN: Final = ("close", "reset", "proceed")
TLS_ABORT_HOW: Final = ("garbage", "alert", "close", "reset")


def _canonical(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


class FaultRuleError(ValueError):
    """A fault rule is malformed; the message names the field and the rule."""


def _number(rule: Mapping[str, Any], name: str, default: float, *, minimum: float = 0.0) -> float:
    value = rule.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise FaultRuleError(f"{name} must be a number >= {minimum}, got {value!r}")
    return float(value)


def _integer(rule: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = rule.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FaultRuleError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


@dataclass
class FaultRule:
    """One validated rule, with its own seeded random stream and counters."""

    kind: str
    spec: dict[str, Any]
    uid: int
    mode: str | None = None
    probability: float = 1.0
    match: re.Pattern[str] | None = None
    times: int | None = None
    endpoints: frozenset[str] = frozenset()
    fired: int = 0
    rng: random.Random = field(default_factory=random.Random)
    # token bucket (rate_limit only)
    tokens: float = 0.0
    refilled_at: float = 0.0

    @classmethod
    def parse(cls, spec: Mapping[str, Any], uid: int, seed: int) -> FaultRule:  # noqa: C901 — one flat check per rule field, each naming the field
        """Validate ``spec``; raise :class:`FaultRuleError` naming the bad field."""
        if not isinstance(spec, Mapping):
            raise FaultRuleError(f"a fault rule must be a JSON object, got {spec!r}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultRuleError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        unknown = set(spec) - _COMMON_FIELDS - _KIND_FIELDS[kind]
        if unknown:
            raise FaultRuleError(f"unknown field(s) {sorted(unknown)} for kind {kind!r}")
        modes = KINDS[kind]
        mode = spec.get("mode")
        if modes and mode not in modes:
            raise FaultRuleError(f"mode of {kind!r} must be one of {list(modes)}, got {mode!r}")
        if not modes and mode is not None:
            raise FaultRuleError(f"kind {kind!r} has no modes, got mode {mode!r}")
        probability = _number(spec, "probability", 1.0)
        if probability > 1:
            raise FaultRuleError(f"probability must be in [0, 1], got {probability!r}")
        match = spec.get("match")
        pattern = None
        if match is not None:
            if not isinstance(match, str):
                raise FaultRuleError(f"match must be a regex string, got {match!r}")
            try:
                pattern = re.compile(match)
            except re.error as exc:
                raise FaultRuleError(f"match is not a valid regex: {exc}") from None
        times = spec.get("times")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
            raise FaultRuleError(f"times must be a non-negative integer, got {times!r}")
        endpoints: set[str] = set()
        for name in spec.get("endpoints", _DEFAULT_ENDPOINTS.get(kind, ())):
            if name in _ENDPOINT_ALIASES:
                endpoints.update(_ENDPOINT_ALIASES[name])
            elif name in ENDPOINTS:
                endpoints.add(name)
            else:
                raise FaultRuleError(
                    f"endpoints entries must be in {[*ENDPOINTS, *_ENDPOINT_ALIASES]}, got {name!r}"
                )
        rule = cls(
            kind=kind,
            spec=dict(spec),
            uid=uid,
            mode=mode,
            probability=probability,
            match=pattern,
            times=times,
            endpoints=frozenset(endpoints),
            rng=random.Random(f"{seed}|rule|{_canonical(spec)}"),
        )
        rule._check_own_fields()
        return rule

    def _check_own_fields(self) -> None:  # noqa: C901 — one flat check per field of the rule's kind, each naming the field
        spec, kind = self.spec, self.kind
        if kind == "tls_handshake":
            self._check_tls_fields()
        elif kind == "latency":
            if "distribution" in spec:
                self._check_distribution(spec["distribution"])
            else:
                _number(spec, "seconds", 0.0)
        elif kind in ("create_5xx_before", "query_5xx") or (kind, self.mode) == (
            "create_lost",
            "5xx",
        ):
            _integer(spec, "status", 500, 500, 599)
        elif kind in ("create_lost", "query_timeout"):
            _number(spec, "seconds", 30.0)
            if spec.get("then", "answer") not in ("answer", "close"):
                raise FaultRuleError(f"then must be 'answer' or 'close', got {spec['then']!r}")
        elif kind == "rate_limit":
            rps = _number(spec, "rps", 10.0)
            if rps <= 0:
                raise FaultRuleError("rps must be > 0")
            burst = _number(spec, "burst", max(1.0, rps), minimum=1.0)
            self.tokens, self.refilled_at = burst, time.monotonic()
        elif kind == "invisible":
            _number(spec, "seconds", 5.0)
        elif kind == "callback":
            _integer(spec, "copies", 2, 1, 100)
            _integer(spec, "status", 2, 0, 5)
            _number(spec, "seconds", 5.0)
            if not isinstance(spec.get("concurrent", False), bool):
                raise FaultRuleError("concurrent must be true or false")
            if not isinstance(spec.get("key", ""), str):
                raise FaultRuleError("key must be a string")
        elif kind == "outcome":
            _integer(spec, "status", 3, 1, 5)

    def _check_tls_fields(self) -> None:
        spec = self.spec
        if "match" in spec:
            raise FaultRuleError(
                "tls_handshake rules cannot match: no payout_cl_id is known before the handshake"
            )
        if self.mode == "stall":
            if "how" in spec:
                raise FaultRuleError("'how' belongs to tls_handshake/abort; stall takes 'then'")
            _number(spec, "seconds", 30.0)
            if spec.get("then", "close") not in TLS_STALL_THEN:
                raise FaultRuleError(f"then must be one of {list(TLS_STALL_THEN)}, got {spec['then']!r}")
        else:
            if "then" in spec or "seconds" in spec:
                raise FaultRuleError("tls_handshake/abort takes only 'how'")
            if spec.get("how", "garbage") not in TLS_ABORT_HOW:
                raise FaultRuleError(f"how must be one of {list(TLS_ABORT_HOW)}, got {spec['how']!r}")

    @staticmethod
    def _check_distribution(dist: Any) -> None:
        if not isinstance(dist, Mapping) or dist.get("type") not in ("uniform", "normal"):
            raise FaultRuleError(
                "distribution must be {'type': 'uniform', 'min', 'max'} "
                "or {'type': 'normal', 'mean', 'stddev'}"
            )
        if dist["type"] == "uniform":
            lo, hi = _number(dist, "min", 0.0), _number(dist, "max", 0.0)
            if hi < lo:
                raise FaultRuleError("distribution max must be >= min")
        else:
            _number(dist, "mean", 0.0)
            _number(dist, "stddev", 0.0)

    # ----------------------------------------------------------------- values

    def get(self, name: str, default: Any) -> Any:
        """A kind-specific field, or its documented default."""
        return self.spec.get(name, default)

    @property
    def label(self) -> str:
        """``kind`` or ``kind:mode``, the key of the ``faults_fired`` stats."""
        return f"{self.kind}:{self.mode}" if self.mode else self.kind

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def sample_latency_s(self) -> float:
        """Seconds to sleep for a latency rule."""
        dist = self.spec.get("distribution")
        if dist is None:
            return float(self.spec.get("seconds", 0.0))
        if dist["type"] == "uniform":
            return self.rng.uniform(float(dist.get("min", 0.0)), float(dist.get("max", 0.0)))
        return max(0.0, self.rng.gauss(float(dist.get("mean", 0.0)), float(dist.get("stddev", 0.0))))

    def take_token(self) -> bool:
        """Token bucket: True when the request may pass."""
        rps = float(self.spec.get("rps", 10.0))
        burst = float(self.spec.get("burst", max(1.0, rps)))
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.refilled_at) * rps)
        self.refilled_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    @property
    def key(self) -> str:
        """The rule's canonical text: seeds its random draws, so the same rule set up again
        (after a reset, or in a new process) draws the same way."""
        return _canonical(self.spec)

    def describe(self) -> dict[str, Any]:
        """The rule as given, plus its id and how often it fired."""
        return {**self.spec, "id": self.uid, "fired": self.fired}


class FaultBook:
    """The active rules, evaluated in order; the first rule of a kind that fires wins."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rules: list[FaultRule] = []
        self.fired: dict[str, int] = {}
        self._next_uid = 1
        self._asked: dict[tuple[int, str], int] = {}

    def parse_all(self, specs: Iterable[Mapping[str, Any]]) -> list[FaultRule]:
        """Validate every spec first, so a bad list changes nothing."""
        if not isinstance(specs, (list, tuple)):
            raise FaultRuleError("fault rules must be a JSON list of objects")
        rules = []
        for offset, spec in enumerate(specs):
            try:
                rules.append(FaultRule.parse(spec, self._next_uid + offset, self.seed))
            except FaultRuleError as exc:
                raise FaultRuleError(f"rule #{offset}: {exc}") from None
        self._next_uid += len(rules)
        return rules

    def replace(self, specs: Iterable[Mapping[str, Any]]) -> None:
        self.rules = self.parse_all(specs)

    def extend(self, specs: Iterable[Mapping[str, Any]]) -> None:
        self.rules.extend(self.parse_all(specs))

    def clear(self) -> None:
        self.rules = []
        self.restart_counts()

    def restart_counts(self) -> None:
        """Keep the rules but start over: fired counts, random streams, token buckets.

        The same requests then meet the same faults as after a fresh start.
        """
        self.fired = {}
        self._asked = {}
        for rule in self.rules:
            rule.fired = 0
            rule.rng = random.Random(f"{self.seed}|rule|{rule.key}")
            if rule.kind == "rate_limit":
                rule.tokens = float(rule.spec.get("burst", max(1.0, float(rule.spec.get("rps", 10.0)))))
                rule.refilled_at = time.monotonic()

    def describe(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self.rules]

    # ------------------------------------------------------------- selection

    def _applies(self, rule: FaultRule, endpoint: str | None, payout_cl_id: str | None) -> bool:
        if rule.exhausted:
            return False
        if endpoint is not None and rule.endpoints and endpoint not in rule.endpoints:
            return False
        if rule.match is None:
            return True
        return payout_cl_id is not None and rule.match.search(payout_cl_id) is not None

    def _draw(self, rule: FaultRule, payout_cl_id: str | None) -> bool:
        if rule.probability >= 1.0:
            return True
        if rule.probability <= 0.0:
            return False
        if payout_cl_id is None:
            return rule.rng.random() < rule.probability
        key = (rule.uid, payout_cl_id)
        asked = self._asked.get(key, 0)
        self._asked[key] = asked + 1
        draw = random.Random(f"{self.seed}|{rule.key}|{payout_cl_id}|{asked}").random()
        return draw < rule.probability

    def record(self, rule: FaultRule) -> None:
        """Count one firing of ``rule``."""
        rule.fired += 1
        self.fired[rule.label] = self.fired.get(rule.label, 0) + 1

    def pick(
        self, kind: str, *, endpoint: str | None = None, payout_cl_id: str | None = None
    ) -> FaultRule | None:
        """The first rule of ``kind`` that fires for this request or order (counted)."""
        for rule in self.rules:
            if rule.kind != kind or not self._applies(rule, endpoint, payout_cl_id):
                continue
            if self._draw(rule, payout_cl_id):
                self.record(rule)
                return rule
        return None

    def pick_all(self, kind: str, *, payout_cl_id: str | None = None) -> list[FaultRule]:
        """Every rule of ``kind`` that fires (callbacks combine, e.g. delay + duplicate)."""
        chosen: list[FaultRule] = []
        seen_modes: set[str | None] = set()
        for rule in self.rules:
            if rule.kind != kind or rule.mode in seen_modes:
                continue
            if self._applies(rule, None, payout_cl_id) and self._draw(rule, payout_cl_id):
                self.record(rule)
                chosen.append(rule)
                seen_modes.add(rule.mode)
        return chosen

    def rate_limited(self, endpoint: str, payout_cl_id: str | None) -> FaultRule | None:
        """The rate-limit rule whose bucket is empty for this request, if any (counted)."""
        for rule in self.rules:
            if rule.kind != "rate_limit" or not self._applies(rule, endpoint, payout_cl_id):
                continue
            if not rule.take_token() and self._draw(rule, payout_cl_id):
                self.record(rule)
                return rule
        return None
