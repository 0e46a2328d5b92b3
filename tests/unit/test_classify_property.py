"""classify_create never turns a doubtful answer into a final one.

For any HTTP status and body: ACCEPTED only for ``0000`` with a payout_id, REJECTED
only for a listed NOT_CREATED code with a status below 500, RATE_LIMITED only for
429; everything else -- 5xx, empty, garbled, non-object, unknown codes, 0014, 0000
without a payout_id -- is UNKNOWN (the order may exist: query, never resend).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.gateway import NOT_CREATED, Outcome, classify_create

SETTINGS = settings(derandomize=True, max_examples=400, deadline=None, database=None)

STATUS = st.one_of(
    st.sampled_from([200, 201, 202, 204, 301, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504]),
    st.integers(100, 599),
)
CODES = st.one_of(
    st.sampled_from(sorted(NOT_CREATED)),
    st.sampled_from(["0000", "0001", "0005", "0006", "0014", "0050", "9999", "", "0", "00"]),
    st.text(max_size=6),
    st.integers(-10, 100),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
PAYOUT_IDS = st.one_of(st.just("POT00000001"), st.text(max_size=12), st.integers(), JSON)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = draw(st.dictionaries(st.text(max_size=10), JSON, max_size=3))
    if draw(st.booleans()):
        doc["error_code"] = draw(CODES)
    if draw(st.booleans()):
        doc["data"] = draw(st.one_of(st.fixed_dictionaries({"payout_id": PAYOUT_IDS}), JSON))
    if draw(st.booleans()):
        doc["error_msg"] = draw(st.text(max_size=20))
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def has_payout_id(doc: Any) -> bool:
    data = doc.get("data") if isinstance(doc, dict) else None
    pid = data.get("payout_id") if isinstance(data, dict) else None
    return isinstance(pid, (str, int)) and not isinstance(pid, bool) and bool(str(pid).strip())


def allowed(status: int, doc: Any) -> set[Outcome]:
    """Every outcome the rules allow for this answer (a parsed JSON document or None)."""
    if status == 429:
        return {Outcome.RATE_LIMITED}
    if status >= 500 or not isinstance(doc, dict):
        return {Outcome.UNKNOWN}
    code = doc.get("error_code")
    if code == "0000" and has_payout_id(doc):
        return {Outcome.ACCEPTED}
    if isinstance(code, str) and code in NOT_CREATED:
        return {Outcome.REJECTED}
    return {Outcome.UNKNOWN}


@SETTINGS
@given(status=STATUS, doc=answers())
def test_json_answers(status: int, doc: dict[str, Any]) -> None:
    """A JSON object answer is final only for 0000+payout_id or a NOT_CREATED code below 500."""
    result = classify_create(status, encode(doc))
    assert result.outcome in allowed(status, doc), (status, doc, result)
    if result.outcome is Outcome.ACCEPTED:
        assert result.payout_id


@SETTINGS
@given(
    status=STATUS,
    body=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"",
                b" ",
                b"\n\t",
                b"{",
                b'{"error_code":"0000"',
                b"null",
                b"[]",
                b"0",
                b'"0000"',
                b"<html>502 Bad Gateway</html>",
                b"\xff\xfe",
                b'{"a":NaN}',
            ]
        ),
        JSON.map(encode),
    ),
)
def test_any_bytes(status: int, body: bytes) -> None:
    """Empty, garbled, non-object or non-UTF-8 bodies, and any 5xx, are UNKNOWN; never raises."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        doc = None
    result = classify_create(status, body)
    assert result.outcome in allowed(status, doc), (status, body, result)


@SETTINGS
@given(status=st.integers(500, 599), code=st.sampled_from([*sorted(NOT_CREATED), "0000"]))
def test_5xx_is_unknown_whatever_the_body(status: int, code: str) -> None:
    """Even a documented refusal or a 0000 with payout_id is UNKNOWN under a 5xx status."""
    body = encode({"error_code": code, "data": {"payout_id": "POT1"}})
    assert classify_create(status, body).outcome is Outcome.UNKNOWN


@SETTINGS
@given(status=STATUS.filter(lambda s: s < 500 and s != 429), payout_id=PAYOUT_IDS)
def test_0000_is_accepted_only_with_a_payout_id(status: int, payout_id: Any) -> None:
    """0000 is ACCEPTED only with a non-empty string or integer payout_id; else UNKNOWN."""
    doc = {"error_code": "0000", "data": {"payout_id": payout_id}}
    result = classify_create(status, encode(doc))
    assert result.outcome in allowed(status, doc), (status, doc, result)
