"""`worker/settings.py`: every variable's parse and default, errors that name the variable,
secrets that never show themselves, and the rules between settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TEST_PII_KEYS, TEST_RING
from worker import settings as settings_module
from worker.settings import ConfigError, Secret, Settings, load_settings

#: the gateway's required variables: with these, ``gateway`` is set
GATEWAY = {
    "GATEWAY_BASE_URL": "https://gw.example/",
    "GATEWAY_PLATFORM_ID": "PF0001",
    "GATEWAY_PLATFORM_KEY": "key-1",
    "GATEWAY_AUTHORIZATION": "token-1",
}

#: variable -> (text given, how to read it back, value expected); one row per variable
PARSED: dict[str, tuple[str, Any, Any]] = {
    "REDIS_URL": (
        "rediss://:pw@redis.internal:6380/2",
        lambda s: s.redis_url,
        "rediss://:pw@redis.internal:6380/2",
    ),
    "CELERY_BROKER_URL": ("redis://broker:6379/1", lambda s: s.effective_broker_url, "redis://broker:6379/1"),
    "GATEWAY_BASE_URL": ("https://gw.example/", lambda s: s.gateway.base_url, "https://gw.example"),
    "GATEWAY_PLATFORM_ID": ("PF0001", lambda s: s.gateway.platform_id, "PF0001"),
    "GATEWAY_PLATFORM_KEY": ("key-1", lambda s: s.gateway.platform_key.reveal(), "key-1"),
    "GATEWAY_AUTHORIZATION": ("token-1", lambda s: s.gateway.authorization.reveal(), "token-1"),
    "GATEWAY_SIGN_TYPE": (
        "MD5",
        lambda s: (s.gateway.sign_type, s.gateway.accepted_sign_types),
        ("MD5", {"MD5"}),
    ),
    "GATEWAY_ACCEPTED_SIGN_TYPES": (
        "HMAC-SHA256, MD5",
        lambda s: s.gateway.accepted_sign_types,
        {"HMAC-SHA256", "MD5"},
    ),
    "GATEWAY_CONNECT_TIMEOUT": (
        "2",
        lambda s: (s.gateway.connect_timeout_s, s.gateway.total_timeout_s),
        (2.0, 17.0),
    ),
    "GATEWAY_READ_TIMEOUT": (
        "4.5",
        lambda s: (s.gateway.read_timeout_s, s.gateway.total_timeout_s),
        (4.5, 7.5),
    ),
    "GATEWAY_TOTAL_TIMEOUT": ("20", lambda s: s.gateway.total_timeout_s, 20.0),
    "GATEWAY_QUERY_FORM": ("single", lambda s: s.gateway.query_form, "single"),
    "GATEWAY_RECORD_SIGNATURE": ("md5", lambda s: s.gateway.record_signature, "md5"),
    "GATEWAY_MAX_RPS": ("0", lambda s: s.gateway.max_rps, 0.0),
    "GATEWAY_SERVICE_ID": ("SVC0009", lambda s: s.gateway.service_id, "SVC0009"),
    "PAYOUT_NOTIFY_URL": (
        "https://app.example/payouts/notify",
        lambda s: s.notify_url,
        "https://app.example/payouts/notify",
    ),
    "PAYOUT_BANK_LIST": ("BCA, BNI,,MANDIRI", lambda s: s.bank_list, {"BCA", "BNI", "MANDIRI"}),
    "PAYOUT_AMOUNT_MIN": ("100", lambda s: s.amount_min_minor, 100),
    "PAYOUT_AMOUNT_MAX": ("500000", lambda s: s.amount_max_minor, 500000),
    "LOG_FORMAT": ("console", lambda s: s.log_format, "console"),
    "LOG_LEVEL": ("DEBUG", lambda s: s.log_level, "DEBUG"),
    "SWEEP_INTERVAL": ("2.5", lambda s: s.sweep_interval_s, 2.5),
    "SWEEP_BATCH": ("50", lambda s: s.sweep_batch, 50),
    "CHECK_INTERVAL_MIN": ("3", lambda s: s.check_interval_min_s, 3.0),
    "CHECK_INTERVAL_MAX": ("90", lambda s: s.check_interval_max_s, 90.0),
    "SUBMIT_REDRIVE_AFTER": ("12", lambda s: s.submit_redrive_s, 12.0),
    "SUBMIT_TOKEN_WAIT": ("0.5", lambda s: s.submit_token_wait_s, 0.5),
    "CHECK_BATCH_PAGES": ("3", lambda s: s.check_batch_pages, 3),
    "CHECK_WINDOW": ("60", lambda s: s.check_window_s, 60.0),
    "CHECK_WINDOW_MARGIN": ("5", lambda s: s.check_window_margin_s, 5.0),
    "SUBMITTING_MARGIN": ("10", lambda s: s.submitting_margin_s, 10.0),
    "SUBMIT_CLAIM_BUDGET": ("2", lambda s: s.submit_claim_budget_s, 2.0),
    "UNCONFIRMED_FIRST_CHECK": ("1", lambda s: s.unconfirmed_first_check_s, 1.0),
    "UNCONFIRMED_GRACE": ("0", lambda s: s.unconfirmed_grace_s, 0.0),
    "NOT_FOUND_POLICY": ("resubmit", lambda s: s.not_found_policy, "resubmit"),
    "MAX_ORDER_AGE": ("7200", lambda s: s.max_order_age_s, 7200.0),
    "UNKNOWN_STATUS_REVIEW_AFTER": ("2", lambda s: s.unknown_status_review_after, 2),
    "SUBMIT_RETRY_MAX": ("30", lambda s: s.submit_retry_max_s, 30.0),
    "ORDER_RETENTION_DAYS": ("7", lambda s: s.order_retention_days, 7.0),
    "EVENTS_MAXLEN": ("5000", lambda s: s.events_maxlen, 5000),
    "RESULT_TASK": ("webapp.payout_result", lambda s: s.result_task, "webapp.payout_result"),
    "RESULT_QUEUE": ("webapp.results", lambda s: s.result_queue, "webapp.results"),
    "WORKER_CONCURRENCY": ("8", lambda s: s.worker_concurrency, 8),
    "TASK_TIME_LIMIT": ("600", lambda s: s.task_time_limit_s, 600.0),
    "BROKER_VISIBILITY_TIMEOUT": ("7200", lambda s: s.visibility_timeout_s, 7200.0),
    "PAUSE_RECHECK": ("1", lambda s: s.pause_recheck_s, 1.0),
    "HOLD_CODES": ("0018, 0027", lambda s: s.hold_codes, {"0018", "0027"}),
    "BALANCE_POLL_INTERVAL": ("0", lambda s: s.balance_poll_s, 0.0),
    "APPROVAL_ABOVE": ("1000000", lambda s: s.approval_above, 1000000),
    "APPROVAL_TWO_ABOVE": ("0", lambda s: s.approval_two_above, 0),
    "APPROVAL_TTL": ("3600", lambda s: s.approval_ttl_s, 3600.0),
    "DUPLICATE_WINDOW": ("0", lambda s: s.duplicate_window_s, 0.0),
    "DUPLICATE_KEY": ("dup-key", lambda s: s.duplicate_key.reveal(), "dup-key"),
    "RESULT_REDELIVER_AFTER": ("2", lambda s: s.result_redeliver_s, 2.0),
    "DEAD_LETTER_QUEUE": ("webapp.dead", lambda s: s.dead_letter_queue, "webapp.dead"),
    "PAYOUTS_ALLOW_SANDBOX": ("yes", lambda s: s.allow_sandbox, True),
    "REDIS_DURABILITY": ("relaxed", lambda s: (s.redis_durability, s.strict), ("relaxed", False)),
    "REDIS_REPLICA_ACKS": ("2", lambda s: (s.redis_replica_acks, s.required_replica_acks), (2, 2)),
    "REDIS_REPLICA_ACK_TIMEOUT": ("0.25", lambda s: s.redis_replica_ack_timeout_s, 0.25),
    "REDIS_SENTINEL_PASSWORD": ("sentinel-pw", lambda s: s.redis_sentinel_password.reveal(), "sentinel-pw"),
    "PII_KEYS": (TEST_PII_KEYS, lambda s: s.require_pii().current, TEST_RING.current),
    "PII_RETENTION_DAYS": ("2", lambda s: s.pii_retention_days, 2.0),
    "DEAD_LETTER_TTL": ("3600", lambda s: s.dead_letter_ttl_s, 3600.0),
    "HEALTH_MAX_REVIEW": ("0", lambda s: s.health_max_review, 0),
    "HEALTH_MAX_REVIEW_AGE": ("3600", lambda s: s.health_max_review_age_s, 3600.0),
}

#: variables whose meaning needs another one beside them: (environment, read back, expected)
PARSED_TOGETHER: dict[str, tuple[dict[str, str], Any, Any]] = {
    "REDIS_SENTINELS": (
        {"REDIS_SENTINELS": "s1:26379, [::1]:26380", "REDIS_SENTINEL_MASTER": "mymaster"},
        lambda s: (s.redis_sentinels, s.redis_sentinel_master, s.redis_replica_acks),
        ((("s1", 26379), ("::1", 26380)), "mymaster", 1),
    ),
    "REDIS_SENTINEL_MASTER": (
        {"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "other"},
        lambda s: s.redis_sentinel_master,
        "other",
    ),
    "GATEWAY_CA_FILE": ({}, None, None),  # needs a file: test_ca_file_must_be_a_readable_file
    "PII_KEYS_FILE": ({}, None, None),  # needs a file: test_pii_keys_from_a_file
}

#: variable -> a malformed value it must refuse, naming itself
MALFORMED: dict[str, str] = {
    "REDIS_URL": "http://redis:6379/0",
    "GATEWAY_BASE_URL": "ftp://gw.example",
    "GATEWAY_SIGN_TYPE": "SHA1",
    "GATEWAY_ACCEPTED_SIGN_TYPES": "HMAC-SHA256,SHA1",
    "GATEWAY_CONNECT_TIMEOUT": "soon",
    "GATEWAY_READ_TIMEOUT": "0",
    "GATEWAY_TOTAL_TIMEOUT": "-1",
    "GATEWAY_QUERY_FORM": "both",
    "GATEWAY_RECORD_SIGNATURE": "sometimes",
    "GATEWAY_MAX_RPS": "lots",
    "GATEWAY_CA_FILE": "/nonexistent/ca.pem",
    "PAYOUT_NOTIFY_URL": "notify",
    "PAYOUT_AMOUNT_MIN": "1.5",
    "PAYOUT_AMOUNT_MAX": "0",
    "LOG_FORMAT": "xml",
    "LOG_LEVEL": "chatty",
    "SWEEP_INTERVAL": "nan",
    "SWEEP_BATCH": "0",
    "CHECK_INTERVAL_MIN": "0",
    "CHECK_INTERVAL_MAX": "inf",
    "SUBMIT_REDRIVE_AFTER": "0",
    "SUBMIT_TOKEN_WAIT": "-2",
    "CHECK_BATCH_PAGES": "0",
    "CHECK_WINDOW": "0.5",
    "CHECK_WINDOW_MARGIN": "-1",
    "SUBMITTING_MARGIN": "x",
    "SUBMIT_CLAIM_BUDGET": "60",
    "UNCONFIRMED_FIRST_CHECK": "-1",
    "UNCONFIRMED_GRACE": "ten minutes",
    "NOT_FOUND_POLICY": "retry",
    "MAX_ORDER_AGE": "0",
    "UNKNOWN_STATUS_REVIEW_AFTER": "0",
    "SUBMIT_RETRY_MAX": "0",
    "ORDER_RETENTION_DAYS": "0",
    "EVENTS_MAXLEN": "10",
    "WORKER_CONCURRENCY": "0",
    "TASK_TIME_LIMIT": "0.5",
    "BROKER_VISIBILITY_TIMEOUT": "60",
    "PAUSE_RECHECK": "0",
    "HOLD_CODES": "0018,18",
    "BALANCE_POLL_INTERVAL": "often",
    "APPROVAL_ABOVE": "-1",
    "APPROVAL_TWO_ABOVE": "many",
    "APPROVAL_TTL": "0",
    "DUPLICATE_WINDOW": "-1",
    "RESULT_REDELIVER_AFTER": "0",
    "PAYOUTS_ALLOW_SANDBOX": "maybe",
    "REDIS_DURABILITY": "eventual",
    "REDIS_SENTINELS": "s1",
    "REDIS_SENTINEL_MASTER": "alone",
    "REDIS_REPLICA_ACKS": "-1",
    "REDIS_REPLICA_ACK_TIMEOUT": "0",
    "PII_KEYS": "k1:not-base64!",
    "PII_RETENTION_DAYS": "60",
    "DEAD_LETTER_TTL": "59",
    "PII_KEYS_FILE": "/nonexistent/pii-keys",
    "HEALTH_MAX_REVIEW": "-1",
    "HEALTH_MAX_REVIEW_AGE": "a day",
}

#: variables that are taken as given (any text): names and queues
FREE_TEXT = {
    "CELERY_BROKER_URL",
    "GATEWAY_PLATFORM_ID",
    "GATEWAY_PLATFORM_KEY",
    "GATEWAY_AUTHORIZATION",
    "GATEWAY_SERVICE_ID",
    "PAYOUT_BANK_LIST",
    "RESULT_TASK",
    "RESULT_QUEUE",
    "DEAD_LETTER_QUEUE",
    "DUPLICATE_KEY",
    "REDIS_SENTINEL_PASSWORD",
}


def _variables_read() -> set[str]:
    """Every environment variable worker/settings.py reads (a quoted upper-case name)."""
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    names = set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"', source))
    # secrets are read as NAME and NAME_FILE (an f-string); the tuple constants are values
    return names - {"HMAC-SHA256", "MD5"}


def test_every_variable_has_a_parse_row_and_a_refusal_row() -> None:
    """The tables below cover every variable settings.py reads: none is parsed untested."""
    # given every variable the module reads
    read = _variables_read()
    # then each has a parse row and, unless it is free text, a malformed value
    assert read - set(PARSED) - set(PARSED_TOGETHER) == set()
    assert read - set(MALFORMED) - FREE_TEXT == set()
    assert len(read) >= 60  # the scan found the module's names


@pytest.mark.parametrize("name", sorted(PARSED))
def test_each_variable_is_parsed(name: str) -> None:
    """A well-formed value of each variable lands, typed, in its setting."""
    # given the gateway's required variables and this one
    raw, read, expected = PARSED[name]
    env = {**GATEWAY, name: raw}
    # when parsed
    s = load_settings(env)
    # then
    value = read(s)
    assert (set(value) if isinstance(value, frozenset) else value) == expected


@pytest.mark.parametrize("name", sorted(k for k, v in PARSED_TOGETHER.items() if v[1] is not None))
def test_variables_that_need_a_partner_are_parsed(name: str) -> None:
    """Sentinel settings are parsed together; the replica acks then default to 1."""
    # given
    env_extra, read, expected = PARSED_TOGETHER[name]
    # when
    s = load_settings({**GATEWAY, **env_extra})
    # then
    assert read(s) == expected


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_each_malformed_value_is_refused_naming_the_variable(name: str) -> None:
    """A malformed value stops the parse with a ConfigError whose text names the variable."""
    # given
    env = {**GATEWAY, name: MALFORMED[name]}
    # when / then
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert name in str(err.value)


def test_defaults_with_only_the_gateway_set() -> None:
    """Unset variables take the documented defaults (README "Settings")."""
    # given only the gateway's required variables
    s = load_settings(GATEWAY)
    gw = s.require_gateway()
    # then
    assert (s.redis_url, s.effective_broker_url) == ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0")
    assert (gw.sign_type, set(gw.accepted_sign_types), gw.query_form) == (
        "HMAC-SHA256",
        {"HMAC-SHA256"},
        "list",
    )
    assert (gw.connect_timeout_s, gw.read_timeout_s, gw.total_timeout_s) == (3.0, 15.0, 18.0)
    assert (gw.record_signature, gw.max_rps, gw.service_id, gw.currency, gw.ca_file) == (
        "order",
        50.0,
        "SVC0004",
        "idr",
        None,
    )
    assert s.notify_url is None and s.bank_list == frozenset()
    assert (s.amount_min_minor, s.amount_max_minor) == (1, 9_999_999_999)
    assert s.log_format in ("json", "console") and s.log_level == "INFO"
    assert (s.sweep_interval_s, s.sweep_batch) == (10.0, 500)
    assert (s.check_interval_min_s, s.check_interval_max_s) == (30.0, 600.0)
    assert (s.submit_redrive_s, s.submit_token_wait_s, s.submitting_margin_s) == (60.0, 2.0, 30.0)
    assert s.submit_claim_budget_s == 5.0
    assert (s.check_batch_pages, s.check_window_s, s.check_window_margin_s) == (10, 300.0, 30.0)
    assert (s.unconfirmed_first_check_s, s.unconfirmed_grace_s, s.not_found_policy) == (5.0, 600.0, "review")
    assert (s.max_order_age_s, s.unknown_status_review_after, s.submit_retry_max_s) == (259200.0, 5, 300.0)
    assert (s.order_retention_days, s.events_maxlen) == (30.0, 1_000_000)
    assert (s.result_task, s.result_queue, s.result_redeliver_s) == (None, "payouts.results", 15.0)
    assert s.worker_concurrency == 64 and s.visibility_timeout_s == 3600.0
    # the longest task by its own deadlines: 10 pages x (2 s token + 18 s call) = 200 s
    assert s.max_task_s == 200.0 and s.task_time_limit_s == 230.0
    assert (s.pause_recheck_s, s.balance_poll_s) == (5.0, 30.0)
    assert s.hold_codes == frozenset({"0018", "0003", "0004", "0010", "0027"})
    assert (s.approval_above, s.approval_two_above, s.approval_ttl_s) == (0, 0, 86400.0)
    assert (s.duplicate_window_s, s.duplicate_key) == (600.0, None)
    assert (s.dead_letter_queue, s.dead_letter_ttl_s, s.allow_sandbox) == ("payouts.dead", 604800.0, False)
    assert (s.pii_keys, s.pii_retention_days) == (None, 7.0)
    assert (s.health_max_review, s.health_max_review_age_s) == (100, 86400.0)
    assert (s.redis_durability, s.strict, s.redis_sentinels, s.redis_sentinel_master) == (
        "strict",
        True,
        (),
        "",
    )
    assert (s.redis_replica_acks, s.redis_replica_ack_timeout_s, s.redis_sentinel_password) == (0, 1.0, None)


def test_without_the_gateway_variables_only_workers_refuse() -> None:
    """A web app needs no gateway secrets; asking for the gateway names each missing one."""
    # given nothing but a Redis URL
    s = load_settings({"REDIS_URL": "redis://127.0.0.1:6379/3", "GATEWAY_PLATFORM_ID": "PF0001"})
    # then the settings load, and the gateway's absence names what is missing
    assert s.gateway is None
    with pytest.raises(ConfigError) as err:
        s.require_gateway()
    assert str(err.value) == (
        "missing required setting(s): GATEWAY_BASE_URL, GATEWAY_PLATFORM_KEY, GATEWAY_AUTHORIZATION"
    )


def test_blank_values_count_as_unset() -> None:
    """An empty or blank variable is unset: its default applies."""
    # given
    s = load_settings({**GATEWAY, "SWEEP_INTERVAL": "  ", "RESULT_QUEUE": "", "HOLD_CODES": " "})
    # then
    assert (s.sweep_interval_s, s.result_queue) == (10.0, "payouts.results")
    assert s.hold_codes == frozenset({"0018", "0003", "0004", "0010", "0027"})


def test_hold_codes_none_turns_the_hold_off_and_0000_is_refused() -> None:
    """HOLD_CODES=none holds nothing; a list with 0000 (success) is refused."""
    # given / when
    off = load_settings({**GATEWAY, "HOLD_CODES": "none"})
    # then
    assert off.hold_codes == frozenset()
    with pytest.raises(ConfigError, match="HOLD_CODES must not contain 0000"):
        load_settings({**GATEWAY, "HOLD_CODES": "0018,0000"})


def test_secrets_come_from_the_variable_or_its_file(tmp_path: Path) -> None:
    """NAME or NAME_FILE (stripped); both at once, an empty file or an unreadable one are refused."""
    # given a key in a file
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n", encoding="utf-8")
    env = {k: v for k, v in GATEWAY.items() if k != "GATEWAY_PLATFORM_KEY"}
    # when read through _FILE
    s = load_settings({**env, "GATEWAY_PLATFORM_KEY_FILE": str(key_file)})
    # then
    assert s.require_gateway().platform_key.reveal() == "from-file"
    with pytest.raises(ConfigError, match="GATEWAY_PLATFORM_KEY and GATEWAY_PLATFORM_KEY_FILE are both set"):
        load_settings({**GATEWAY, "GATEWAY_PLATFORM_KEY_FILE": str(key_file)})
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="GATEWAY_PLATFORM_KEY_FILE: the file is empty"):
        load_settings({**env, "GATEWAY_PLATFORM_KEY_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="DUPLICATE_KEY_FILE: cannot read the file"):
        load_settings({**GATEWAY, "DUPLICATE_KEY_FILE": str(tmp_path / "missing")})


def test_secrets_never_show_themselves() -> None:
    """repr and str of a Secret, and of the settings holding it, never contain the value."""
    # given settings holding every kind of secret
    s = load_settings(
        {
            **GATEWAY,
            "GATEWAY_PLATFORM_KEY": "k-very-secret",
            "DUPLICATE_KEY": "d-very-secret",
            "REDIS_SENTINEL_PASSWORD": "s-very-secret",
        }
    )
    # when shown
    shown = repr(s) + str(s) + repr(s.require_gateway()) + str(s.duplicate_key)
    # then
    assert "very-secret" not in shown and "token-1" not in shown
    assert (
        Secret("a") == Secret("a")
        and Secret("a") != Secret("b")
        and repr(Secret("a")) == "Secret('**********')"
    )


def test_an_error_never_quotes_a_secret(tmp_path: Path) -> None:
    """A refused secret names its variable, never its text."""
    # given a key given twice
    key_file = tmp_path / "key"
    key_file.write_text("file-secret", encoding="utf-8")
    # when / then
    with pytest.raises(ConfigError) as err:
        load_settings(
            {**GATEWAY, "GATEWAY_PLATFORM_KEY": "env-secret", "GATEWAY_PLATFORM_KEY_FILE": str(key_file)}
        )
    assert "secret" not in str(err.value).replace("GATEWAY_PLATFORM_KEY", "")


def test_ca_file_must_be_a_readable_file(tmp_path: Path) -> None:
    """GATEWAY_CA_FILE names an existing file, kept as given."""
    # given
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    # when
    s = load_settings({**GATEWAY, "GATEWAY_CA_FILE": str(pem)})
    # then
    assert s.require_gateway().ca_file == str(pem)
    with pytest.raises(ConfigError, match="GATEWAY_CA_FILE"):
        load_settings({**GATEWAY, "GATEWAY_CA_FILE": str(tmp_path)})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"GATEWAY_SIGN_TYPE": "MD5", "GATEWAY_ACCEPTED_SIGN_TYPES": "HMAC-SHA256"},
            "GATEWAY_ACCEPTED_SIGN_TYPES",
        ),
        ({"GATEWAY_CONNECT_TIMEOUT": "5", "GATEWAY_TOTAL_TIMEOUT": "4"}, "GATEWAY_TOTAL_TIMEOUT"),
        ({"PAYOUT_AMOUNT_MIN": "500", "PAYOUT_AMOUNT_MAX": "400"}, "PAYOUT_AMOUNT_MIN/MAX"),
        ({"PAYOUT_AMOUNT_MAX": "10000000000"}, "PAYOUT_AMOUNT_MIN/MAX"),
        ({"APPROVAL_TWO_ABOVE": "5000"}, "APPROVAL_TWO_ABOVE needs APPROVAL_ABOVE"),
        (
            {"APPROVAL_ABOVE": "5000", "APPROVAL_TWO_ABOVE": "4000"},
            "APPROVAL_TWO_ABOVE must be >= APPROVAL_ABOVE",
        ),
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER is required"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS is required"),
        (
            {
                "REDIS_SENTINELS": "s1:26379",
                "REDIS_SENTINEL_MASTER": "m",
                "REDIS_URL": "unix://h/run/redis.sock",
            },
            "REDIS_URL must be a redis:// URL",
        ),
        ({"SUBMITTING_MARGIN": "0", "SUBMIT_CLAIM_BUDGET": "18"}, "SUBMIT_CLAIM_BUDGET must be below"),
        ({"TASK_TIME_LIMIT": "2000"}, "TASK_TIME_LIMIT must be at most half of BROKER_VISIBILITY_TIMEOUT"),
        ({"TASK_TIME_LIMIT": "150"}, "TASK_TIME_LIMIT must be above the longest task"),
        ({"CHECK_BATCH_PAGES": "100"}, "BROKER_VISIBILITY_TIMEOUT must be at least twice the longest task"),
    ],
)
def test_rules_between_settings_name_the_variables(env: dict[str, str], named: str) -> None:
    """Settings that contradict each other are refused; the message names the variables."""
    # when / then
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings({**GATEWAY, **env})


def test_check_interval_max_is_never_below_the_minimum() -> None:
    """CHECK_INTERVAL_MAX below CHECK_INTERVAL_MIN is raised to the minimum."""
    # given / when
    s = load_settings({**GATEWAY, "CHECK_INTERVAL_MIN": "120", "CHECK_INTERVAL_MAX": "60"})
    # then
    assert (s.check_interval_min_s, s.check_interval_max_s) == (120.0, 120.0)


def test_sentinel_broker_url_carries_the_password_and_db() -> None:
    """Under Sentinel the broker URL names each sentinel with REDIS_URL's password and db;
    CELERY_BROKER_URL, when set, wins."""
    # given
    env = {
        **GATEWAY,
        "REDIS_URL": "redis://:pw@ignored:6379/4",
        "REDIS_SENTINELS": "s1:26379,s2:26379",
        "REDIS_SENTINEL_MASTER": "mymaster",
    }
    # when
    s = load_settings(env)
    # then
    assert s.effective_broker_url == "sentinel://:pw@s1:26379/4;sentinel://:pw@s2:26379/4"
    assert (
        load_settings({**env, "CELERY_BROKER_URL": "redis://b:6379/0"}).effective_broker_url
        == "redis://b:6379/0"
    )


def test_relaxed_durability_waits_for_no_replica() -> None:
    """REDIS_REPLICA_ACKS applies in strict mode only."""
    # given / when
    s = load_settings({**GATEWAY, "REDIS_DURABILITY": "relaxed", "REDIS_REPLICA_ACKS": "2"})
    # then
    assert (s.redis_replica_acks, s.required_replica_acks) == (2, 0)


def test_the_claim_budget_defaults_below_half_the_sweeps_deadline() -> None:
    """SUBMIT_CLAIM_BUDGET defaults to at most half of connect + read + margin (D7)."""
    # given short timeouts
    s = load_settings(
        {**GATEWAY, "GATEWAY_CONNECT_TIMEOUT": "1", "GATEWAY_READ_TIMEOUT": "2", "SUBMITTING_MARGIN": "1"}
    )
    # then
    assert s.submit_claim_budget_s == 2.0


def test_settings_are_frozen() -> None:
    """Parsed settings cannot be changed after start-up."""
    # given
    s: Settings = load_settings(GATEWAY)
    # when / then
    with pytest.raises(AttributeError):
        s.sweep_batch = 1  # type: ignore[misc]


def test_pii_keys_from_a_file(tmp_path: Path) -> None:
    """PII_KEYS_FILE gives the key ring; a malformed file is refused naming PII_KEYS_FILE,
    never quoting a key."""
    # given
    keys = tmp_path / "pii"
    keys.write_text(TEST_PII_KEYS + "\n", encoding="utf-8")
    # when
    s = load_settings({**GATEWAY, "PII_KEYS_FILE": str(keys)})
    # then
    assert s.require_pii().current == TEST_RING.current
    keys.write_text("k1:not-base64!", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings({**GATEWAY, "PII_KEYS_FILE": str(keys)})
    assert str(err.value).startswith("PII_KEYS_FILE:") and "not-base64" not in str(err.value)
