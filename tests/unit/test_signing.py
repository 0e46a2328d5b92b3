"""Signatures exactly per docs/gateway.md §4."""

from __future__ import annotations

import pytest

from tests.vectors import SPEC_EXAMPLE, SPEC_KEY, SPEC_SIGN
from worker import signing


def test_spec_worked_example_md5() -> None:
    """docs/gateway.md §4.4: the published MD5 signature is reproduced exactly."""
    expected_string = (
        "amount=100000&name=王小头&notify_url=http://localhost:52630/gateway/test-notification"
        "&number=6216667451674374&payout_cl_id=test_gateway_1707220674&platform_id=PF0001"
        "&request_time=1707220674&service_id=SVC0004"
    )
    assert signing.string_to_sign(SPEC_EXAMPLE) == expected_string
    assert signing.sign(SPEC_EXAMPLE, SPEC_KEY, "MD5") == SPEC_SIGN


def test_integer_values_sign_as_plain_digits() -> None:
    """An int and its digit string sign the same (request_time=1707220674)."""
    as_ints = {**SPEC_EXAMPLE, "amount": 100000, "request_time": 1707220674}
    assert signing.sign(as_ints, SPEC_KEY, "MD5") == SPEC_SIGN


def test_hmac_example_from_spec() -> None:
    """docs/gateway.md §4.3: HMAC-SHA256 over the sorted string, key not appended, sign_type excluded."""
    params = {
        "amount": 50000,
        "notify_url": "https://your-domain.com/callback",
        "payment_cl_id": "DEVPM00014581",
        "platform_id": "PF0002",
        "request_time": 1595504136,
        "service_id": "SVC0001",
        "sign_type": "HMAC-SHA256",
    }
    sig = signing.sign(params, "ThisIsYourSecretKey123", "HMAC-SHA256")
    assert sig == "d8857715eece9c4b52b5e128ba541ee918effdc052c1152f6d1db0be7f1db509"
    assert len(sig) == 64


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_values_dropped_zero_kept(empty: object) -> None:
    """Empty values are not signed; numeric 0 is (docs/gateway.md §4.1 step 3, our choice)."""
    assert signing.string_to_sign({"b": empty, "a": 0, "c": "x"}) == "a=0&c=x"


def test_sign_and_sign_type_excluded() -> None:
    """`sign` and `sign_type` are not part of the string to sign."""
    assert signing.string_to_sign({"sign": "abc", "sign_type": "MD5", "z": "1"}) == "z=1"


def test_floats_and_bools_refused() -> None:
    """Floats and booleans are refused in signed parameters (money is never a float)."""
    with pytest.raises(TypeError):
        signing.sign({"amount": 5000000.0}, "k")
    with pytest.raises(TypeError):
        signing.sign({"flag": True}, "k")


def test_unknown_sign_type_refused() -> None:
    """An unknown sign_type is refused by name."""
    with pytest.raises(ValueError, match="sign_type"):
        signing.sign({"a": "1"}, "k", "SHA1")


def test_verify_roundtrip_both_modes() -> None:
    """Both algorithms verify their own signature and refuse another key or tampered data."""
    for mode in ("MD5", "HMAC-SHA256"):
        params = {"a": "1", "b": "x"}
        if mode == "HMAC-SHA256":
            params["sign_type"] = mode
        params["sign"] = signing.sign(params, "key", mode)
        assert signing.verify(params, "key")
        assert not signing.verify(params, "other-key")
        tampered = {**params, "a": "2"}
        assert not signing.verify(tampered, "key")


def test_verify_refuses_md5_downgrade() -> None:
    """A notice signed MD5 (or with no sign_type) is refused where only HMAC is allowed."""
    params = {"a": "1"}
    params["sign"] = signing.sign(params, "key", "MD5")
    assert signing.verify(params, "key", allowed={"MD5"})
    assert not signing.verify(params, "key", allowed={"HMAC-SHA256"})
    assert not signing.verify(params, "key", expected_type="HMAC-SHA256")


def test_verify_uppercase_hex_accepted_missing_sign_refused() -> None:
    """An uppercase hex signature verifies; a missing sign does not."""
    params = {"a": "1"}
    params["sign"] = signing.sign(params, "key", "MD5").upper()
    assert signing.verify(params, "key")
    assert not signing.verify({"a": "1"}, "key")
