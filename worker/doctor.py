"""``payouts doctor`` (a checklist before going live) and ``payouts health`` (liveness).

``doctor`` checks, in order: the settings, Redis (reachable, no eviction, AOF), the
clock against Redis ``TIME``, and the gateway (a query for an order that does not
exist must come back "not found": that proves the URL, the route and the
Authorization token). It prints one line per check and exits 1 on any error.

``health`` is for container health checks. It judges progress, not the process:
a worker can stay alive after a broker reconnect without consuming anything
(celery#8030). It exits 1 when Redis does not answer, when the sweep has not
completed for ``--max-sweep-age`` seconds, or when the oldest due order is more
than ``--max-late`` seconds past its due time; it prints one line either way.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from config.settings import ConfigError, Settings, load_settings
from worker import keys

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

    def _line(self, mark: str, what: str, detail: str) -> None:
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
        report.ok("settings", f"gateway {s.gateway.base_url}, platform {s.gateway.platform_id}, "
                              f"sign {s.gateway.sign_type}, query form {s.gateway.query_form}")  # fmt: skip
    if not s.bank_list:
        report.warn("settings", "PAYOUT_BANK_LIST is empty: any bank code is accepted here and "
                                "unknown ones are rejected by the gateway (0012)")  # fmt: skip
    if s.notify_url is None:
        report.warn("settings", "PAYOUT_NOTIFY_URL is not set: no callbacks, outcomes are "
                                "learned by polling only (slower)")  # fmt: skip
    if s.gateway is not None and s.gateway.sign_type == "MD5":
        report.warn("settings", "GATEWAY_SIGN_TYPE=MD5 is being retired by the gateway "
                                "(SPEC §4.2); prefer HMAC-SHA256")  # fmt: skip
    return s


def check_redis(report: Checklist, s: Settings) -> bool:
    from worker.health import check_redis_persistence
    from worker.runtime import make_redis

    client = make_redis(s.redis_url, pool_size=2)
    try:
        client.ping()
        info = client.info("server")
        version = info.get("redis_version", "?")
        local = time.time()
        secs, micros = client.time()
        after = time.time()
    except Exception as exc:
        report.fail("redis", f"no answer from REDIS_URL ({type(exc).__name__}: {exc})")
        return False
    finally:
        client.close()
    report.ok("redis", f"answers (version {version})")
    problems, warnings = check_redis_persistence(s.redis_url)
    for p in problems:
        report.fail("redis persistence", p)
    for w in warnings:
        report.warn("redis persistence", w)
    if not problems and not warnings:
        report.ok("redis persistence", "maxmemory-policy noeviction, AOF on")
    skew = abs((secs + micros / 1e6) - (local + after) / 2)
    if skew > CLOCK_SKEW_WARN_S:
        report.warn("clock", f"local clock differs from Redis TIME by {skew:.1f}s: "
                             "keep every host NTP-synced (due times and request_time)")  # fmt: skip
    else:
        report.ok("clock", f"within {skew:.3f}s of Redis TIME")
    return True


def check_gateway(report: Checklist, s: Settings) -> None:
    from worker.gateway import GatewayClient, QueryKind

    if s.gateway is None:
        report.fail("gateway", "not checked: settings incomplete")
        return
    client = GatewayClient(s.gateway, pool_size=1)
    probe = f"doctor-{secrets.token_hex(6)}"
    try:
        result = client.query_order(probe)
    finally:
        client.close()
    host = urlsplit(s.gateway.base_url).hostname or ""
    if s.gateway.base_url.startswith("http://") and host not in LOCAL_HOSTS:
        report.warn("gateway", "GATEWAY_BASE_URL is plain http: the Authorization token "
                               "travels unencrypted")  # fmt: skip
    if result.kind is QueryKind.NOT_FOUND:
        report.ok("gateway", f"reachable, Authorization accepted ({result.reason} for a probe id)")
        return
    if result.kind is QueryKind.FOUND:
        report.warn("gateway", f"a probe id {probe!r} was reported as existing (status "
                               f"{result.status}): is GATEWAY_BASE_URL the real gateway?")  # fmt: skip
        return
    found = re.search(r"'(\d{4})'", result.reason)
    code = found.group(1) if found else ""
    hint = CREDENTIAL_CODES.get(code)
    if hint:
        report.fail("gateway", f"{code}: {hint}")
    else:
        report.fail("gateway", f"no usable answer from {s.gateway.base_url} ({result.reason})")


def run_doctor(*, skip_gateway: bool = False) -> int:
    report = Checklist()
    s = check_settings(report)
    if s is not None:
        check_redis(report, s)
        if not skip_gateway:
            check_gateway(report, s)
    n_err, n_warn = len(report.errors), len(report.warnings)
    verdict = "FAIL" if n_err else "ok"
    print(f"doctor: {verdict}: {n_err} error(s), {n_warn} warning(s)", flush=True)
    return 1 if n_err else 0


# ------------------------------------------------------------------ health


@dataclass(frozen=True)
class Health:
    healthy: bool
    line: str


def assess_health(s: Settings, *, max_late_s: float | None = None,
                  max_sweep_age_s: float | None = None, now: float | None = None) -> Health:  # fmt: skip
    """Progress-based liveness: Redis answers, the sweep runs, due orders are picked up."""
    from worker.runtime import make_redis

    max_late = max_late_s if max_late_s is not None else max(3 * s.sweep_interval_s, 60.0)
    max_sweep = max_sweep_age_s if max_sweep_age_s is not None else 3 * s.sweep_interval_s
    client = make_redis(s.redis_url, pool_size=2)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zrange(keys.DUE, 0, 0, withscores=True)
        pipe.zcard(keys.DUE)
        pipe.get(keys.SWEEP_LAST)
        pipe.zcard(keys.REVIEW)
        oldest, open_n, last, review_n = pipe.execute()
    except Exception as exc:
        return Health(False, f"unhealthy: Redis does not answer ({type(exc).__name__})")
    finally:
        client.close()
    now = time.time() if now is None else now
    late = max(0.0, now - float(oldest[0][1])) if oldest else 0.0
    sweep_age = now - float(last) if last else None
    sweep_txt = "never" if sweep_age is None else f"{sweep_age:.1f}s ago"
    facts = f"open={open_n} review={review_n} oldest_due_late={late:.1f}s last_sweep={sweep_txt}"
    if sweep_age is not None and sweep_age > max_sweep:
        return Health(False, f"unhealthy: no sweep for {sweep_age:.0f}s (> {max_sweep:g}s); {facts}")
    if late > max_late:
        return Health(False, f"unhealthy: order {oldest[0][0]} is {late:.0f}s past due "
                             f"(> {max_late:g}s); {facts}")  # fmt: skip
    return Health(True, f"healthy: {facts}")


def run_health(args: argparse.Namespace) -> int:
    try:
        s = load_settings()
    except ConfigError as exc:
        print(f"unhealthy: configuration error: {exc}", flush=True)
        return 1
    result = assess_health(s, max_late_s=args.max_late, max_sweep_age_s=args.max_sweep_age)
    print(result.line, flush=True)
    return 0 if result.healthy else 1


def build_parser(prog: str = "payouts doctor") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Check settings, Redis, the clock and the gateway (exit 1 on any error). "
                    "With --health (or `payouts health`): a one-line progress-based liveness check.",
    )  # fmt: skip
    p.add_argument("--health", action="store_true", help="liveness check only (see above)")
    p.add_argument("--max-late", type=float, default=None, metavar="S",
                   help="health: the oldest due order may be this late "
                        "(default max(3*SWEEP_INTERVAL, 60))")  # fmt: skip
    p.add_argument("--max-sweep-age", type=float, default=None, metavar="S",
                   help="health: last sweep may be this old (default 3*SWEEP_INTERVAL)")  # fmt: skip
    p.add_argument("--skip-gateway", action="store_true",
                   help="doctor: do not query the gateway")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "payouts health" if "--health" in argv else "payouts doctor"
    args = build_parser(prog).parse_args(argv)
    if args.health:
        return run_health(args)
    return run_doctor(skip_gateway=args.skip_gateway)


if __name__ == "__main__":
    raise SystemExit(main())
