"""Settings and pure helpers of the operator controls."""

from __future__ import annotations

import pytest

from worker.desk.duplicates import beneficiary_digest
from worker.desk.pausing import Pause, _parse
from worker.payout import Payout
from worker.settings import HOLD_CODES_DEFAULT, ConfigError, load_settings

BASE = {"REDIS_URL": "redis://127.0.0.1:1/0"}


def test_defaults_are_safe() -> None:
    """Approval off, duplicate guard off without a key, the D21 hold codes, the sandbox refused."""
    # given / when
    s = load_settings(BASE)
    # then
    assert s.approval_above == 0 and s.approval_two_above == 0 and s.approval_ttl_s == 86400
    assert s.duplicate_key is None and s.duplicate_window_s == 600
    assert s.hold_codes == frozenset(HOLD_CODES_DEFAULT) == {"0018", "0003", "0004", "0010", "0027"}
    assert s.allow_sandbox is False and s.dead_letter_queue == "payouts.dead"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"APPROVAL_TWO_ABOVE": "5"}, "APPROVAL_TWO_ABOVE needs APPROVAL_ABOVE"),
        ({"APPROVAL_ABOVE": "10", "APPROVAL_TWO_ABOVE": "5"}, "APPROVAL_TWO_ABOVE must be >="),
        ({"APPROVAL_ABOVE": "-1"}, "APPROVAL_ABOVE"),
        ({"APPROVAL_TTL": "0"}, "APPROVAL_TTL"),
        ({"HOLD_CODES": "18"}, "HOLD_CODES"),
        ({"HOLD_CODES": "0000,0018"}, "HOLD_CODES"),
        ({"PAYOUTS_ALLOW_SANDBOX": "maybe"}, "PAYOUTS_ALLOW_SANDBOX"),
        ({"DUPLICATE_WINDOW": "x"}, "DUPLICATE_WINDOW"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], named: str) -> None:
    """A malformed control setting raises ConfigError naming it."""
    # given / when / then
    with pytest.raises(ConfigError, match=named):
        load_settings({**BASE, **env})


def test_hold_codes_configurable() -> None:
    """HOLD_CODES replaces the table; "none" turns the hold off (every refusal is final)."""
    # given / when / then
    assert load_settings({**BASE, "HOLD_CODES": "0018, 0027"}).hold_codes == {"0018", "0027"}
    assert load_settings({**BASE, "HOLD_CODES": "none"}).hold_codes == frozenset()


def test_digest_is_keyed_and_hides_the_number() -> None:
    """The duplicate digest depends on the key, bank, number and amount; it never contains the number."""
    # given
    p = Payout("a", 5_000_000, "BCA", "Wati", "4455667788")
    # when
    d = beneficiary_digest("k1", p)
    # then
    assert "4455667788" not in d and len(d) == 32
    assert d == beneficiary_digest("k1", Payout("other-id", 5_000_000, "BCA", "Other", "4455667788"))
    assert d != beneficiary_digest("k2", p)
    assert d != beneficiary_digest("k1", Payout("a", 5_000_001, "BCA", "Wati", "4455667788"))
    assert d != beneficiary_digest("k1", Payout("a", 5_000_000, "BNI", "Wati", "4455667788"))


def test_pause_record_round_trip() -> None:
    """A pause is stored as JSON {reason, by, since, source[, need]} and read back the same."""
    # given
    p = Pause("*", "gateway 0018", "worker", 12.5, "balance", 700)
    # when
    back = _parse("*", p.as_json())
    # then
    assert back == p
    assert p.public() == {
        "scope": "*",
        "reason": "gateway 0018",
        "by": "worker",
        "since": 12.5,
        "source": "balance",
        "need": 700,
    }
    assert _parse("BCA", "not json").reason == "unreadable pause record"
