"""Validation of the web app's payout data (SPEC §1)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.errors import InvalidPayout
from worker.payout import Payout, mask_number, validate_payout
from worker.pii import KeyRing

GOOD: dict[str, Any] = {
    "payout_cl_id": "ORD-2026-0001",
    "amount": 5_000_000,
    "bank_name": "BCA",
    "name": "Budi Santoso",
    "number": "1234567890",
}


def test_valid_payout() -> None:
    """A valid payout validates to the same fields; notify_url defaults to None."""
    p = validate_payout(GOOD)
    assert p == Payout(**GOOD)
    assert p.notify_url is None


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("payout_cl_id", "", "1-32 characters"),
        ("payout_cl_id", "x" * 33, "1-32 characters"),
        ("payout_cl_id", "has space", "1-32 characters"),
        ("payout_cl_id", 123, "string"),
        ("amount", 5000.0, "integer"),
        ("amount", True, "integer"),
        ("amount", "5000", "integer"),
        ("amount", 0, "between"),
        ("amount", 10_000_000_000, "between"),
        ("bank_name", "B" * 17, "at most 16"),
        ("bank_name", "", "non-empty"),
        ("name", "A very long beneficiary name", "never truncated"),
        ("name", " Budi", "leading or trailing"),
        ("name", "Bu\ndi", "control"),
        ("name", "Bu\x85di", "control"),  # C1 control (NEL)
        ("name", "Budi\u202eosnaS", "invisible formatting"),  # right-to-left override
        ("name", "Bu\u200bdi", "invisible formatting"),  # zero-width space
        ("bank_name", "BCA\u2066", "invisible formatting"),  # left-to-right isolate
        ("name", "Bu\u2028di", "control"),  # line separator
        ("number", "12-34", "digits"),
        ("number", "1" * 33, "digits"),
        ("number", 1234, "string"),
        ("notify_url", "ftp://x.example/cb", "http(s)"),
        ("notify_url", "http://" + "a" * 250 + ".com", "256"),
    ],
)
def test_bad_field_names_field_and_rule(field: str, value: Any, rule: str) -> None:
    """Each bad field is named with its rule."""
    with pytest.raises(InvalidPayout) as info:
        validate_payout({**GOOD, field: value})
    assert info.value.fields == [field]
    assert rule in str(info.value)


def test_all_problems_reported_at_once() -> None:
    """Every bad or missing field is reported in one InvalidPayout."""
    with pytest.raises(InvalidPayout) as info:
        validate_payout({"payout_cl_id": "ok", "amount": 1.5, "extra": 1})
    assert set(info.value.fields) == {"extra", "amount", "bank_name", "name", "number"}


def test_bank_list_enforced_when_configured() -> None:
    """With a bank list configured, other banks are refused."""
    validate_payout(GOOD, banks={"BCA", "BNI"})
    with pytest.raises(InvalidPayout, match="bank_name"):
        validate_payout(GOOD, banks={"BNI"})


def test_amount_limits_configurable() -> None:
    """An amount below the configured minimum is refused."""
    with pytest.raises(InvalidPayout, match="amount"):
        validate_payout(GOOD, amount_min=10_000_000)


def test_error_text_never_contains_the_account_number() -> None:
    """A validation error never quotes the account number."""
    with pytest.raises(InvalidPayout) as info:
        validate_payout({**GOOD, "number": "9876543210x"})
    assert "9876543210" not in str(info.value)


def test_repr_masks_personal_data() -> None:
    """A payout's repr masks the account number and hides the name."""
    text = repr(validate_payout(GOOD))
    assert "1234567890" not in text and "Budi" not in text
    assert mask_number("1234567890") == "******7890"


def test_fingerprint_tells_data_apart() -> None:
    """Equal data has equal fingerprints; a different amount a different one (keyed, D72)."""
    ring = KeyRing.parse(KeyRing.generate("k1"))
    a = validate_payout(GOOD)
    fp = ring.fingerprint(a.fingerprint_values())
    assert fp == ring.fingerprint(validate_payout(dict(GOOD)).fingerprint_values())
    assert fp != ring.fingerprint(validate_payout({**GOOD, "amount": 5_000_001}).fingerprint_values())
