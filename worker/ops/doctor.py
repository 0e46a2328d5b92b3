"""``payouts doctor``: a checklist before going live.

``doctor`` checks, in order: the settings, Redis (reachable, no eviction, AOF and
``REDIS_DURABILITY``: the mode and what it protects, the last loss epoch), the
clock against Redis ``TIME``, and the gateway, proving every credential it can without
moving money: a query for an order that does not exist must come back "not found" (the
URL, the route and the Authorization token); the balance answer names the token's merchant
(``GATEWAY_PLATFORM_ID``); a signed list-query record verifies with
``GATEWAY_PLATFORM_KEY``. What only a create can prove is said plainly. It prints one line
per check and exits 1 on any error.
"""

from __future__ import annotations

import argparse
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from worker.settings import ConfigError, Settings, load_settings

#: local clock vs Redis TIME: above this the check warns (request_time skew, SPEC §10)
CLOCK_SKEW_WARN_S = 2.0

#: gateway hosts for which plain http is expected (the sandbox)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "sandbox"})

#: query error codes that mean our configuration is wrong (SPEC §3, §7)
CREDENTIAL_CODES = {
    "0004": "signature verification failed: check GATEWAY_PLATFORM_KEY and GATEWAY_SIGN_TYPE",
    "0005": "Authorization header missing: set GATEWAY_AUTHORIZATION",
    "0006": "invalid Authorization: check GATEWAY_AUTHORIZATION",
    "0027": "host not allowed: register this server's egress IP with the gateway",
    "0020": "wrong API version: check GATEWAY_BASE_URL",
}


@dataclass
class Checklist:
    """Check results, printed as they come: ok, warn or FAIL."""

    quiet: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: every check in order: {"check", "result" (ok, warn, fail), "detail"} (--json)
    checks: list[dict[str, str]] = field(default_factory=list)

    def _line(self, mark: str, what: str, detail: str) -> None:
        self.checks.append({"check": what, "result": mark.lower(), "detail": detail})
        if not self.quiet:
            print(f"[{mark:<4}] {what:<22} {detail}".rstrip(), flush=True)

    def ok(self, what: str, detail: str = "") -> None:
        self._line("ok", what, detail)

    def warn(self, what: str, detail: str) -> None:
        self.warnings.append(f"{what}: {detail}")
        self._line("warn", what, detail)

    def fail(self, what: str, detail: str) -> None:
        self.errors.append(f"{what}: {detail}")
        self._line("FAIL", what, detail)

    def note(self, what: str, detail: str) -> None:
        """What the checklist cannot prove, said plainly (neither a warning nor an error)."""
        self._line("note", what, detail)


# ------------------------------------------------------------------ doctor


def check_settings(report: Checklist) -> Settings | None:
    try:
        s = load_settings()
    except ConfigError as exc:
        report.fail("settings", str(exc))
        return None
    if s.gateway is None:
        report.fail("settings", "missing required setting(s): " + ", ".join(s.gateway_missing))
    else:
        report.ok(
            "settings",
            f"gateway {s.gateway.base_url}, platform {s.gateway.platform_id}, "
            f"sign {s.gateway.sign_type}, query form {s.gateway.query_form}",
        )
    if not s.bank_list:
        report.warn(
            "settings",
            "PAYOUT_BANK_LIST is empty: any bank code is accepted here and "
            "unknown ones are rejected by the gateway (0012)",
        )
    if s.notify_url is None:
        report.warn(
            "settings",
            "PAYOUT_NOTIFY_URL is not set: no callbacks, outcomes are learned by polling only (slower)",
        )
    if s.duplicate_key is None or s.duplicate_window_s <= 0:
        report.warn(
            "settings",
            "duplicate-beneficiary guard off: set DUPLICATE_KEY (a random secret) and DUPLICATE_WINDOW",
        )
    try:
        s.require_pii()
    except ConfigError as exc:
        report.fail("settings", str(exc))
    else:
        assert s.pii_keys is not None
        report.ok(
            "settings",
            f"personal data sealed under key {s.pii_keys.current!r} (PII_KEYS holds "
            f"{', '.join(s.pii_keys.ids)}); erased {s.pii_retention_days:g} days after final",
        )
    if s.approval_above:
        two = f", two approvers from {s.approval_two_above}" if s.approval_two_above else ""
        report.ok("settings", f"approval needed from {s.approval_above} minor units{two}")
    if s.gateway is not None and s.gateway.sign_type == "MD5":
        report.warn(
            "settings",
            "GATEWAY_SIGN_TYPE=MD5 is being retired by the gateway (SPEC §4.2); prefer HMAC-SHA256",
        )
    return s


def check_redis(report: Checklist, s: Settings) -> bool:
    from worker.connection import redis_for

    client = redis_for(s, pool_size=2, identity_check=False)
    try:
        client.ping()
        info = client.info("server")
        version = info.get("redis_version", "?")
        local = time.time()
        secs, micros = client.time()
        after = time.time()
    except Exception as exc:
        client.close()
        report.fail("redis", f"no answer from REDIS_URL ({type(exc).__name__}: {exc})")
        return False
    where = ""
    if s.redis_sentinels:
        where = f"master {s.redis_sentinel_master!r} via {len(s.redis_sentinels)} sentinel(s), "
    report.ok("redis", f"answers ({where}version {version})")
    try:
        check_durability_mode(report, s, client)
        check_personal_data(report, s, client)
    finally:
        client.close()
    skew = abs((secs + micros / 1e6) - (local + after) / 2)
    if skew > CLOCK_SKEW_WARN_S:
        report.warn(
            "clock",
            f"local clock differs from Redis TIME by {skew:.1f}s: "
            "keep every host NTP-synced (due times and request_time)",
        )
    else:
        report.ok("clock", f"within {skew:.3f}s of Redis TIME")
    return True


def check_durability_mode(report: Checklist, s: Settings, client: Any) -> None:
    """REDIS_DURABILITY: the mode, what it protects, and whether this Redis satisfies it."""
    from worker import keys
    from worker.durability import check_durability

    d = check_durability(client, s)
    for p in d.problems:
        report.fail("redis persistence", p)
    for w in d.warnings:
        report.warn("redis persistence", w)
    if not d.problems:
        report.ok("redis persistence", f"{d.summary()}; maxmemory-policy {d.maxmemory_policy}")
    report.ok("durability", f"{d.mode}: {d.protects}")
    epoch = client.hgetall(keys.LOSS_EPOCH)
    if epoch:
        report.ok(
            "loss epoch",
            f"#{epoch.get('no')} recorded at {_when(epoch.get('detected_at'))}: orders created before it "
            "are queried at the gateway before any create",
        )


def check_personal_data(report: Checklist, s: Settings, client: Any) -> None:
    """How many stored values each PII key still protects (every order is read: SCAN pages),
    and the erasure backlog. A value under a key PII_KEYS lacks, or in plain text, fails."""
    from worker import keys
    from worker.privacy import key_usage

    usage = key_usage(client)
    ring = s.pii_keys
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(usage.items())) or "no orders"
    lost = sorted(k for k in usage if ring is None or k not in ring)
    older = sorted(k for k in usage if ring is not None and k in ring and k != ring.current)
    if lost:
        report.fail(
            "personal data",
            f"values per key {shown}; {', '.join(lost)} not openable with PII_KEYS: those orders go to "
            "review when sent (add the key back, or run `payouts rekey` for plain text)",
        )
    elif older:
        report.warn(
            "personal data",
            f"values per key {shown}: run `payouts rekey` before removing {', '.join(older)} from PII_KEYS",
        )
    else:
        report.ok("personal data", f"values per key {shown}")
    due = int(client.zcount(keys.PII_ERASE, "-inf", repr(time.time())))
    if due > 1000:
        report.warn(
            "personal data", f"{due} final orders past PII_RETENTION_DAYS not erased yet (is beat running?)"
        )


def _when(stamp: Any) -> str:
    """An epoch-seconds field as ISO-8601 UTC (as it is when it is not a number)."""
    from worker.ops.style import iso

    try:
        return iso(float(stamp)) or "?"
    except (TypeError, ValueError):
        return str(stamp)


def check_gateway(report: Checklist, s: Settings) -> None:
    """Prove what the gateway lets us prove without moving money (docs/gateway.md §2, §3):
    the URL and the token (a query for an unknown id answers "not found"), the platform id
    (the balance answer names the token's merchant), the platform key (a signed query record
    verifies with it); and say plainly what only a create can prove."""
    from worker.gateway import GatewayClient, QueryKind

    if s.gateway is None:
        report.fail("gateway", "not checked: settings incomplete")
        return
    client = GatewayClient(s.gateway, pool_size=1)
    try:
        if not _check_reachable(report, s, client, QueryKind):
            return
        platform_known = _check_platform_id(report, s, client)
        _check_key(report, s, client, platform_known=platform_known)
    finally:
        client.close()
    report.note(
        "not provable here",
        "only a create proves the egress IP allow-list (0027), the service (GATEWAY_SERVICE_ID, "
        "0003/0009/0010), the bank codes (0012) and the amount limits (0028/0029); a merchant-level "
        "refusal holds the order and pauses every bank (PayoutsMerchantCodePause pages)",
    )


def _check_reachable(report: Checklist, s: Settings, client: Any, kinds: Any) -> bool:
    """The route and the Authorization token: an unknown probe id must come back "not found"."""
    assert s.gateway is not None
    probe = f"doctor-{secrets.token_hex(6)}"
    result = client.query_order(probe)
    if client.sandbox_seen:
        if s.allow_sandbox:
            report.warn("gateway", "this is the SANDBOX gateway (PAYOUTS_ALLOW_SANDBOX=1): no money moves")
        else:
            report.fail(
                "gateway",
                "GATEWAY_BASE_URL answers as the sandbox (X-Payout-Sandbox): no money would move; "
                "set the real gateway, or PAYOUTS_ALLOW_SANDBOX=1 for tests and demos",
            )
            return False
    host = urlsplit(s.gateway.base_url).hostname or ""
    if s.gateway.base_url.startswith("http://") and host not in LOCAL_HOSTS:
        report.warn("gateway", "GATEWAY_BASE_URL is plain http: the Authorization token travels unencrypted")
    if result.kind is kinds.NOT_FOUND:
        # only an empty answer or 0050 is "not found" (records of other orders are not)
        report.ok("gateway", f"reachable, GATEWAY_AUTHORIZATION accepted ({result.reason} for a probe id)")
        return True
    if result.reason.startswith("filter not honoured"):
        report.fail(
            "gateway",
            "the list query answered other orders' records for an unknown probe id: it does not "
            'honour the payout_cl_id filter, so "not found" can never be told (set '
            "GATEWAY_QUERY_FORM=single if the deployment serves it, and ask the gateway)",
        )
        return False
    if result.kind is kinds.FOUND:
        report.warn(
            "gateway",
            f"a probe id {probe!r} was reported as existing (status "
            f"{result.status}): is GATEWAY_BASE_URL the real gateway?",
        )
        return True
    found = re.search(r"'(\d{4})'", result.reason)
    code = found.group(1) if found else ""
    hint = CREDENTIAL_CODES.get(code)
    if hint:
        report.fail("gateway", f"{code}: {hint}")
    else:
        report.fail("gateway", f"no usable answer from {s.gateway.base_url} ({result.reason})")
    return False


def _check_platform_id(report: Checklist, s: Settings, client: Any) -> bool:
    """GATEWAY_PLATFORM_ID against the merchant the token belongs to (the balance answer);
    True when the answer decided it (ok or fail)."""
    assert s.gateway is not None
    code, data = client.balance_answer()
    ours = s.gateway.platform_id
    theirs = data.get("platform_id")
    if code != "0000":
        report.warn(
            "gateway platform",
            f"GATEWAY_PLATFORM_ID not proven: the balance endpoint answered {code or 'nothing usable'}",
        )
    elif theirs in (None, ""):
        report.warn(
            "gateway platform", "GATEWAY_PLATFORM_ID not proven: the balance answer names no platform_id"
        )
    elif str(theirs) != ours:
        report.fail(
            "gateway platform",
            f"GATEWAY_PLATFORM_ID is {ours!r} but the gateway's balance answer for this "
            f"GATEWAY_AUTHORIZATION names {str(theirs)[:16]!r}: every create would be refused",
        )
    else:
        report.ok("gateway platform", f"GATEWAY_PLATFORM_ID {ours} is the token's merchant (balance answer)")
    return True


def _check_key(report: Checklist, s: Settings, client: Any, *, platform_known: bool) -> None:
    """GATEWAY_PLATFORM_KEY through the gateway's own signed answers: list-query records."""
    from worker import signing

    assert s.gateway is not None
    g = s.gateway
    not_proven = "GATEWAY_PLATFORM_KEY not proven: "
    if g.record_signature == "off":
        report.warn(
            "gateway key",
            not_proven + "GATEWAY_RECORD_SIGNATURE=off (query records are not checked); only the "
            "first create proves it (a 0004 holds the order and pauses every bank)",
        )
        return
    code, records = client.recent_records(limit=10)
    signed = [r for r in records if isinstance(r.get("sign"), str) and r.get("sign")]
    if code != "0000" or not signed:
        why = (
            f"the list query answered {code or 'nothing usable'}"
            if code != "0000"
            else "the gateway holds no signed order of this merchant yet"
        )
        report.warn(
            "gateway key",
            f"{not_proven}{why}; only the first create proves it (a 0004 holds the order and "
            "pauses every bank: PayoutsMerchantCodePause pages)",
        )
        return
    key = g.platform_key.reveal()
    types = (
        [signing.MD5]
        if g.record_signature == "md5"
        else [g.sign_type, *sorted(set(signing.SIGN_TYPES) - {g.sign_type})]
    )
    ok = [r for r in signed if any(signing.verify(r, key, absent_type=t) for t in types)]
    if not ok:
        report.fail(
            "gateway key",
            f"none of the gateway's {len(signed)} signed order record(s) verifies with "
            "GATEWAY_PLATFORM_KEY: the key is wrong (every create would answer 0004 and pause "
            "every bank), or the records are signed another way (GATEWAY_RECORD_SIGNATURE)",
        )
        return
    ids = {str(r.get("platform_id")) for r in ok if r.get("platform_id") not in (None, "")}
    if not platform_known and ids and ids != {g.platform_id}:
        report.fail(
            "gateway platform",
            f"GATEWAY_PLATFORM_ID is {g.platform_id!r} but the signed records name {sorted(ids)[0][:16]!r}",
        )
    report.ok("gateway key", f"GATEWAY_PLATFORM_KEY verifies {len(ok)} of {len(signed)} signed record(s)")


def run_doctor(*, skip_gateway: bool = False, as_json: bool = False) -> int:
    """Run every check; one line per check, then the verdict (``as_json``: one JSON object)."""
    from worker.ops.style import Answer, emit

    report = Checklist(quiet=as_json)
    s = check_settings(report)
    if s is not None:
        check_redis(report, s)
        if not skip_gateway:
            check_gateway(report, s)
    n_err, n_warn = len(report.errors), len(report.warnings)
    verdict = "FAIL" if n_err else "ok"
    text = f"doctor: {verdict}: {n_err} error(s), {n_warn} warning(s)"
    return emit(Answer(text, {"checks": report.checks}, code=1 if n_err else 0), as_json=as_json)


def build_parser(prog: str = "payouts doctor") -> argparse.ArgumentParser:
    from worker.ops.style import parser

    p = parser(prog, "Check settings, Redis, the clock and the gateway (exit 1 on any error).")
    p.add_argument("--skip-gateway", action="store_true", help="do not query the gateway")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_doctor(skip_gateway=args.skip_gateway, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
