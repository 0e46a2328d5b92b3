"""Classification of the gateway's answers to the create request."""

from __future__ import annotations

import json

import pytest

from worker.gateway import NOT_CREATED, Outcome, classify_create


def body(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_accepted_needs_payout_id() -> None:
    """0000 counts as accepted only with a payout_id; without one the outcome is unknown."""
    r = classify_create(200, body(error_code="0000", data={"payout_id": "POT1"}))
    assert (r.outcome, r.payout_id) == (Outcome.ACCEPTED, "POT1")
    assert classify_create(200, body(error_code="0000")).outcome is Outcome.UNKNOWN


@pytest.mark.parametrize("code", sorted(NOT_CREATED))
def test_documented_not_created_codes_reject(code: str) -> None:
    """Each documented 'not created' code classifies as rejected."""
    assert classify_create(200, body(error_code=code, error_msg="x")).outcome is Outcome.REJECTED


@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (500, b""),
        (502, body(error_code="0018")),
        (503, b"<html>"),
        (200, b""),
        (200, b"   "),
        (200, b"{garbled"),
        (200, b"[1,2]"),
        (200, body(error_code="0014")),
        (200, body(error_code="0001")),
        (200, body(error_code="9999")),
        (200, body()),
        (404, b"not json"),
    ],
)
def test_unknown_outcomes_never_fail(status: int, raw: bytes) -> None:
    """Timeouts, 5xx, empty/garbled bodies, 0014 and unknown codes are unknown, never final."""
    assert classify_create(status, raw).outcome is Outcome.UNKNOWN


def test_429_is_rate_limited() -> None:
    """HTTP 429 classifies as rate limited (not sent)."""
    assert classify_create(429, b"").outcome is Outcome.RATE_LIMITED
