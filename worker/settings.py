"""Typed settings, read once from the environment.

Every setting is an environment variable; secrets may instead be read from a file
named by ``<NAME>_FILE``. A missing or malformed value raises :class:`ConfigError`
naming the variable. Secrets are wrapped in :class:`Secret`, whose ``repr`` and
``str`` never show the value.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from worker.pii import KeyRing, KeyRingError

SIGN_TYPES: Final = ("HMAC-SHA256", "MD5")
QUERY_FORMS: Final = ("list", "single")
NOT_FOUND_POLICIES: Final = ("review", "resubmit")
#: how query records' signatures are checked (SPEC §2a lists no sign_type; §11.3 UNCONFIRMED)
RECORD_SIGNATURES: Final = ("order", "md5", "off")
#: merchant-level refusals that hold every order while they last (D21): not "rejected"
HOLD_CODES_DEFAULT: Final = ("0018", "0003", "0004", "0010", "0027")
DURABILITY_MODES: Final = ("strict", "relaxed")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret text, for signing or a header, never for output."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class GatewaySettings:
    """Where and how to reach the payment gateway."""

    base_url: str
    platform_id: str
    platform_key: Secret
    authorization: Secret
    sign_type: str = "HMAC-SHA256"
    #: algorithms accepted on callbacks and query records; never wider than needed
    accepted_sign_types: frozenset[str] = frozenset({"HMAC-SHA256"})
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 15.0
    #: the whole HTTP call (connect, send, answer, body), enforced in code: the threads
    #: pool enforces no Celery time limit (D19)
    total_timeout_s: float = 18.0
    query_form: str = "list"
    max_rps: float = 50.0
    service_id: str = "SVC0004"
    currency: str = "idr"
    #: query records: "order" (the order's own algorithm when the record names none),
    #: "md5" (always MD5) or "off" (not checked) -- an UNCONFIRMED choice, SPEC §11.3
    record_signature: str = "order"
    #: CA bundle (PEM path) trusted for an https GATEWAY_BASE_URL; None = the system's
    ca_file: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything the worker, producer, callbacks and CLI need."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""
    gateway: GatewaySettings | None = None
    gateway_missing: tuple[str, ...] = ()
    notify_url: str | None = None
    log_format: str = "json"
    log_level: str = "INFO"
    bank_list: frozenset[str] = frozenset()
    amount_min_minor: int = 1
    amount_max_minor: int = 9_999_999_999
    sweep_interval_s: float = 10.0
    sweep_batch: int = 500
    check_interval_min_s: float = 30.0
    check_interval_max_s: float = 600.0
    submit_redrive_s: float = 60.0
    submitting_margin_s: float = 30.0
    unconfirmed_first_check_s: float = 5.0
    unconfirmed_grace_s: float = 600.0
    not_found_policy: str = "review"
    max_order_age_s: float = 3 * 86400.0
    unknown_status_review_after: int = 5
    submit_retry_max_s: float = 300.0
    #: a claim older than this when the POST is about to leave is not sent (D7)
    submit_claim_budget_s: float = 5.0
    order_retention_days: float = 30.0
    #: ``payouts health`` fails above this many orders in review (0: never, D25)
    health_max_review: int = 100
    #: ``payouts health`` fails when an order has waited in review longer (0: never, D25)
    health_max_review_age_s: float = 86400.0
    events_maxlen: int = 1_000_000
    result_task: str | None = None
    result_queue: str = "payouts.results"
    worker_concurrency: int = 64
    task_time_limit_s: float = 120.0
    visibility_timeout_s: float = 3600.0
    #: a held order (pause, balance) is tried again this long after
    pause_recheck_s: float = 5.0
    #: create refusal codes that hold the order and pause submissions (D21)
    hold_codes: frozenset[str] = frozenset(HOLD_CODES_DEFAULT)
    #: how often the gateway balance is read (0 = never)
    balance_poll_s: float = 30.0
    #: orders at or above this amount (minor units) need an approval; 0 = approval off
    approval_above: int = 0
    #: orders at or above this amount need a second, different approver; 0 = never
    approval_two_above: int = 0
    #: an approval request expires (-> rejected) this long after it was made
    approval_ttl_s: float = 86400.0
    #: same bank + account + amount again within this window is held (0 = guard off)
    duplicate_window_s: float = 600.0
    #: key of the account-number hash used by the duplicate guard (never the number);
    #: the guard is on only when this is set
    duplicate_key: Secret | None = None
    #: a final result not yet published is re-sent by the sweep after this long
    result_redeliver_s: float = 15.0
    #: a by-name create that exhausted its retries goes to this queue (not acked and lost)
    dead_letter_queue: str = "payouts.dead"
    #: a dead letter's message expires this long after it was parked (its personal data is
    #: sealed; the queue's key expires this long after its last message)
    dead_letter_ttl_s: float = 7 * 86400.0
    #: PII_KEYS / PII_KEYS_FILE: seals the account number and name at rest (the first key
    #: seals, all open); required by every process that stores or sends an order
    pii_keys: KeyRing | None = field(default=None, repr=False)
    #: a final order's personal fields are erased this long after it became final
    pii_retention_days: float = 7.0
    #: allow running against the sandbox gateway (it says so in a response header)
    allow_sandbox: bool = False
    #: "strict": the store's Redis must fsync every write (AOF appendfsync always) and, with
    #: replicas, the claim and the enqueue wait for replica acknowledgements; "relaxed":
    #: appendfsync everysec is accepted with a warning (docs/reliability.md, durability)
    redis_durability: str = "strict"
    #: Redis Sentinel: (host, port) of each sentinel; empty = REDIS_URL names the server
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    redis_sentinel_password: Secret | None = None
    #: replicas that must acknowledge the enqueue's create and the claim (strict mode)
    redis_replica_acks: int = 0
    redis_replica_ack_timeout_s: float = 1.0
    #: a submit waits at most this long for a rate token, then is deferred (a counter)
    submit_token_wait_s: float = 2.0
    #: pages of the list query one check_batch task may read
    check_batch_pages: int = 10
    #: width of one list-query window: a batch's ids are grouped into windows this wide
    check_window_s: float = 300.0
    #: a window reaches this far before the first and after the last submission time
    #: (clock skew and latency between our stamp and the gateway's create_time)
    check_window_margin_s: float = 30.0
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def strict(self) -> bool:
        return self.redis_durability == "strict"

    @property
    def required_replica_acks(self) -> int:
        """Replica acknowledgements each guarded write waits for (0 in relaxed mode)."""
        return self.redis_replica_acks if self.strict else 0

    @property
    def effective_broker_url(self) -> str:
        """The broker: ``CELERY_BROKER_URL`` when set, else the store's Redis: ``REDIS_URL``,
        or under Sentinel ``sentinel://[:password@]host:port/db;...`` (one per sentinel; the
        password and db come from ``REDIS_URL``)."""
        if self.broker_url:
            return self.broker_url
        if not self.redis_sentinels:
            return self.redis_url
        parts = urlsplit(self.redis_url)
        auth = ""
        if parts.password:
            auth = f"{parts.username or ''}:{parts.password}@"
        db = (parts.path or "/0").lstrip("/") or "0"
        return ";".join(f"sentinel://{auth}{h}:{p}/{db}" for h, p in self.redis_sentinels)

    @property
    def call_s(self) -> float:
        """The longest one gateway call takes (its total deadline)."""
        return self.gateway.total_timeout_s if self.gateway else 20.0

    @property
    def lease_s(self) -> float:
        """How long a dispatched order is not dispatched again (the sweep's base lease;
        a longer submit queue lengthens it, worker/sweep.py)."""
        return max(2 * self.sweep_interval_s, self.call_s + self.submit_token_wait_s + 5.0)

    @property
    def max_task_s(self) -> float:
        """The longest any task runs by its own deadlines: submit and check are one
        token wait plus one call; check_batch is its page budget of those."""
        one = self.submit_token_wait_s + self.call_s
        return max(one, self.check_batch_pages * one)

    def require_pii(self) -> KeyRing:
        """The personal-data keys, or a ConfigError naming the setting."""
        if self.pii_keys is None:
            raise ConfigError(
                "missing required setting: PII_KEYS (or PII_KEYS_FILE): the keys that seal account "
                "numbers and names at rest (docs/operating.md, personal data)"
            )
        return self.pii_keys

    def require_gateway(self) -> GatewaySettings:
        """The gateway settings, or a ConfigError naming what is missing."""
        if self.gateway is None:
            names = ", ".join(self.gateway_missing)
            raise ConfigError(f"missing required setting(s): {names}")
        return self.gateway


def _read(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    direct = _read(env, name)
    path = _read(env, f"{name}_FILE")
    if direct is not None and path is not None:
        raise ConfigError(f"{name} and {name}_FILE are both set; set one")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read the file ({exc.strerror})") from None
        if not text:
            raise ConfigError(f"{name}_FILE: the file is empty")
        return Secret(text)
    return Secret(direct) if direct is not None else None


def _pii_keys(env: Mapping[str, str]) -> KeyRing | None:
    secret = _secret(env, "PII_KEYS")
    if secret is None:
        return None
    name = "PII_KEYS_FILE" if _read(env, "PII_KEYS_FILE") else "PII_KEYS"
    try:
        return KeyRing.parse(secret.reveal())
    except KeyRingError as exc:  # names the rule, never the key
        raise ConfigError(f"{name}: {exc}") from None


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = _read(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value >= minimum or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = _read(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _read(env, name)
    if raw is None:
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = _read(env, name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL with a host")
    return raw


def _ca_file(env: Mapping[str, str]) -> str | None:
    path = _read(env, "GATEWAY_CA_FILE")
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError("GATEWAY_CA_FILE must name a readable PEM file")
    return path


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = _read(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/0 (true/false), got {raw!r}")


def _codes(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> frozenset[str]:
    raw = _read(env, name)
    if raw is None:
        return frozenset(default)
    if raw.lower() == "none":
        return frozenset()
    codes = frozenset(c.strip() for c in raw.split(",") if c.strip())
    bad = sorted(c for c in codes if not (len(c) == 4 and c.isdigit()))
    if bad or not codes:
        raise ConfigError(f"{name} must be comma-separated 4-digit gateway codes (or none), got {raw!r}")
    if "0000" in codes:
        raise ConfigError(f"{name} must not contain 0000 (success)")
    return codes


def _sentinels(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    raw = _read(env, "REDIS_SENTINELS")
    if raw is None:
        return ()
    out: list[tuple[str, int]] = []
    for part in raw.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        if not part or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_SENTINELS must be host:port,host:port,...; got {part!r}")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment into :class:`Settings`; raise ConfigError on a bad value."""
    env = os.environ if env is None else env
    redis_url = _url(env, "REDIS_URL", ("redis", "rediss", "unix")) or Settings.redis_url
    broker_url = _read(env, "CELERY_BROKER_URL") or ""

    sign_type = _choice(env, "GATEWAY_SIGN_TYPE", "HMAC-SHA256", SIGN_TYPES)
    accepted_raw = _read(env, "GATEWAY_ACCEPTED_SIGN_TYPES")
    if accepted_raw is None:
        accepted = frozenset({sign_type})
    else:
        accepted = frozenset(p.strip() for p in accepted_raw.split(",") if p.strip())
        bad = accepted - set(SIGN_TYPES)
        if bad or not accepted:
            raise ConfigError(f"GATEWAY_ACCEPTED_SIGN_TYPES must list {' and/or '.join(SIGN_TYPES)}")
        if sign_type not in accepted:
            raise ConfigError("GATEWAY_ACCEPTED_SIGN_TYPES must include GATEWAY_SIGN_TYPE")

    base_url = _url(env, "GATEWAY_BASE_URL", ("http", "https"))
    platform_id = _read(env, "GATEWAY_PLATFORM_ID")
    key = _secret(env, "GATEWAY_PLATFORM_KEY")
    token = _secret(env, "GATEWAY_AUTHORIZATION")
    missing = tuple(
        name
        for name, value in (
            ("GATEWAY_BASE_URL", base_url),
            ("GATEWAY_PLATFORM_ID", platform_id),
            ("GATEWAY_PLATFORM_KEY", key),
            ("GATEWAY_AUTHORIZATION", token),
        )
        if value is None
    )
    connect_s = _float(env, "GATEWAY_CONNECT_TIMEOUT", 3.0, minimum=0.001)
    read_s = _float(env, "GATEWAY_READ_TIMEOUT", 15.0, minimum=0.001)
    total_s = _float(env, "GATEWAY_TOTAL_TIMEOUT", connect_s + read_s, minimum=0.001)
    if total_s < connect_s:
        raise ConfigError("GATEWAY_TOTAL_TIMEOUT must be at least GATEWAY_CONNECT_TIMEOUT")
    gateway = None
    if not missing:
        assert base_url and platform_id and key and token
        gateway = GatewaySettings(
            base_url=base_url.rstrip("/"),
            platform_id=platform_id,
            platform_key=key,
            authorization=token,
            sign_type=sign_type,
            accepted_sign_types=accepted,
            connect_timeout_s=connect_s,
            read_timeout_s=read_s,
            total_timeout_s=total_s,
            query_form=_choice(env, "GATEWAY_QUERY_FORM", "list", QUERY_FORMS),
            max_rps=_float(env, "GATEWAY_MAX_RPS", 50.0),
            service_id=_read(env, "GATEWAY_SERVICE_ID") or "SVC0004",
            record_signature=_choice(env, "GATEWAY_RECORD_SIGNATURE", "order", RECORD_SIGNATURES),
            ca_file=_ca_file(env),
        )

    log_default = "console" if sys.stdout.isatty() else "json"
    banks_raw = _read(env, "PAYOUT_BANK_LIST")
    banks = frozenset(b.strip() for b in (banks_raw or "").split(",") if b.strip())
    token_wait = _float(env, "SUBMIT_TOKEN_WAIT", 2.0)
    pages = _int(env, "CHECK_BATCH_PAGES", 10, minimum=1)
    # What bounds a task is its own deadlines (the threads pool ignores Celery's time
    # limits, D19): a token wait plus one call's total deadline, check_batch a page
    # budget of those. A task that outlives the visibility timeout is delivered twice.
    max_task = max(1, pages) * (token_wait + total_s)
    task_limit = _float(
        env, "TASK_TIME_LIMIT", max(120.0, 4 * (connect_s + read_s), max_task + 30.0), minimum=1
    )
    visibility = _float(env, "BROKER_VISIBILITY_TIMEOUT", 3600.0, minimum=1)
    if max_task * 2 > visibility:
        raise ConfigError(
            "BROKER_VISIBILITY_TIMEOUT must be at least twice the longest task "
            f"(CHECK_BATCH_PAGES x (SUBMIT_TOKEN_WAIT + GATEWAY_TOTAL_TIMEOUT) = {max_task:g}s): "
            "a task that outlives the visibility timeout is delivered twice"
        )
    if task_limit * 2 > visibility:
        raise ConfigError(
            "TASK_TIME_LIMIT must be at most half of BROKER_VISIBILITY_TIMEOUT "
            "(enforced by Celery on prefork and gevent only; on threads the task deadlines are)"
        )
    if max_task >= task_limit:
        raise ConfigError(
            "TASK_TIME_LIMIT must be above the longest task by its own deadlines "
            f"(CHECK_BATCH_PAGES x (SUBMIT_TOKEN_WAIT + GATEWAY_TOTAL_TIMEOUT) = {max_task:g}s)"
        )
    amount_min = _int(env, "PAYOUT_AMOUNT_MIN", 1, minimum=1)
    amount_max = _int(env, "PAYOUT_AMOUNT_MAX", 9_999_999_999, minimum=1)
    if amount_max > 9_999_999_999 or amount_min > amount_max:
        raise ConfigError("PAYOUT_AMOUNT_MIN/MAX must satisfy 1 <= MIN <= MAX <= 9999999999")
    check_min = _float(env, "CHECK_INTERVAL_MIN", 30.0, minimum=0.01)
    margin = _float(env, "SUBMITTING_MARGIN", 30.0)
    claim_budget = _float(
        env, "SUBMIT_CLAIM_BUDGET", min(5.0, (connect_s + read_s + margin) / 2), minimum=0.01
    )
    if claim_budget >= connect_s + read_s + margin:
        raise ConfigError(
            "SUBMIT_CLAIM_BUDGET must be below GATEWAY_CONNECT_TIMEOUT + GATEWAY_READ_TIMEOUT "
            "+ SUBMITTING_MARGIN (the sweep's deadline for a claimed order)"
        )
    approval_above = _int(env, "APPROVAL_ABOVE", 0)
    approval_two = _int(env, "APPROVAL_TWO_ABOVE", 0)
    if approval_two and not approval_above:
        raise ConfigError("APPROVAL_TWO_ABOVE needs APPROVAL_ABOVE (approval is off without it)")
    if approval_two and approval_two < approval_above:
        raise ConfigError("APPROVAL_TWO_ABOVE must be >= APPROVAL_ABOVE")
    sentinels = _sentinels(env)
    sentinel_master = _read(env, "REDIS_SENTINEL_MASTER") or ""
    if sentinels and not sentinel_master:
        raise ConfigError("REDIS_SENTINEL_MASTER is required when REDIS_SENTINELS is set")
    if sentinel_master and not sentinels:
        raise ConfigError("REDIS_SENTINELS is required when REDIS_SENTINEL_MASTER is set")
    if sentinels and urlsplit(redis_url).scheme == "unix":
        raise ConfigError("REDIS_URL must be a redis:// URL (password and db) when REDIS_SENTINELS is set")
    retention_days = _float(env, "ORDER_RETENTION_DAYS", 30.0, minimum=0.0001)
    pii_retention_days = _float(env, "PII_RETENTION_DAYS", min(7.0, retention_days))
    if pii_retention_days > retention_days:
        raise ConfigError(
            "PII_RETENTION_DAYS must be at most ORDER_RETENTION_DAYS (the whole record expires then)"
        )
    return Settings(
        redis_url=redis_url,
        broker_url=broker_url,
        gateway=gateway,
        gateway_missing=missing,
        notify_url=_url(env, "PAYOUT_NOTIFY_URL", ("http", "https")),
        log_format=_choice(env, "LOG_FORMAT", log_default, ("json", "console")),
        log_level=_choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
        bank_list=banks,
        amount_min_minor=amount_min,
        amount_max_minor=amount_max,
        sweep_interval_s=_float(env, "SWEEP_INTERVAL", 10.0, minimum=0.01),
        sweep_batch=_int(env, "SWEEP_BATCH", 500, minimum=1),
        check_interval_min_s=check_min,
        check_interval_max_s=max(check_min, _float(env, "CHECK_INTERVAL_MAX", 600.0)),
        submit_redrive_s=_float(env, "SUBMIT_REDRIVE_AFTER", 60.0, minimum=0.01),
        submitting_margin_s=margin,
        unconfirmed_first_check_s=_float(env, "UNCONFIRMED_FIRST_CHECK", 5.0),
        unconfirmed_grace_s=_float(env, "UNCONFIRMED_GRACE", 600.0),
        not_found_policy=_choice(env, "NOT_FOUND_POLICY", "review", NOT_FOUND_POLICIES),
        max_order_age_s=_float(env, "MAX_ORDER_AGE", 3 * 86400.0, minimum=1),
        unknown_status_review_after=_int(env, "UNKNOWN_STATUS_REVIEW_AFTER", 5, minimum=1),
        submit_retry_max_s=_float(env, "SUBMIT_RETRY_MAX", 300.0, minimum=0.01),
        submit_claim_budget_s=claim_budget,
        order_retention_days=retention_days,
        pii_keys=_pii_keys(env),
        pii_retention_days=pii_retention_days,
        health_max_review=_int(env, "HEALTH_MAX_REVIEW", 100, minimum=0),
        health_max_review_age_s=_float(env, "HEALTH_MAX_REVIEW_AGE", 86400.0, minimum=0.0),
        events_maxlen=_int(env, "EVENTS_MAXLEN", 1_000_000, minimum=100),
        result_task=_read(env, "RESULT_TASK"),
        result_queue=_read(env, "RESULT_QUEUE") or "payouts.results",
        worker_concurrency=_int(env, "WORKER_CONCURRENCY", 64, minimum=1),
        task_time_limit_s=task_limit,
        visibility_timeout_s=visibility,
        pause_recheck_s=_float(env, "PAUSE_RECHECK", 5.0, minimum=0.1),
        hold_codes=_codes(env, "HOLD_CODES", HOLD_CODES_DEFAULT),
        balance_poll_s=_float(env, "BALANCE_POLL_INTERVAL", 30.0),
        approval_above=approval_above,
        approval_two_above=approval_two,
        approval_ttl_s=_float(env, "APPROVAL_TTL", 86400.0, minimum=1),
        duplicate_window_s=_float(env, "DUPLICATE_WINDOW", 600.0),
        duplicate_key=_secret(env, "DUPLICATE_KEY"),
        result_redeliver_s=_float(env, "RESULT_REDELIVER_AFTER", 15.0, minimum=0.1),
        dead_letter_queue=_read(env, "DEAD_LETTER_QUEUE") or "payouts.dead",
        dead_letter_ttl_s=_float(env, "DEAD_LETTER_TTL", 7 * 86400.0, minimum=60),
        allow_sandbox=_bool(env, "PAYOUTS_ALLOW_SANDBOX"),
        redis_durability=_choice(env, "REDIS_DURABILITY", "strict", DURABILITY_MODES),
        redis_sentinels=sentinels,
        redis_sentinel_master=sentinel_master,
        redis_sentinel_password=_secret(env, "REDIS_SENTINEL_PASSWORD"),
        redis_replica_acks=_int(env, "REDIS_REPLICA_ACKS", 1 if sentinels else 0),
        redis_replica_ack_timeout_s=_float(env, "REDIS_REPLICA_ACK_TIMEOUT", 1.0, minimum=0.01),
        submit_token_wait_s=token_wait,
        check_batch_pages=pages,
        check_window_s=_float(env, "CHECK_WINDOW", 300.0, minimum=1),
        check_window_margin_s=_float(env, "CHECK_WINDOW_MARGIN", 30.0),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed on first use."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the CLI's --env handling)."""
    get_settings.cache_clear()
