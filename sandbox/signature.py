"""The gateway's order signature (docs/gateway.md §4), written from that text alone.

The sandbox signs and verifies with this module only; it shares no code with the worker,
so a canonicalisation mistake on one side shows up as a disagreement instead of being made
identically on both (``tests/sandbox/test_signature_agreement.py`` compares the two).

The string to sign (docs/gateway.md §4.1), for MD5 and HMAC-SHA256 alike:

1. every parameter sent (for callbacks and query records: every field received);
2. without ``sign`` and ``sign_type``;
3. without empty values: ``None`` (JSON ``null``) and ``""``. Numeric ``0`` is **kept**:
   it is not an empty value (docs/gateway.md §4.1 step 3 recommends it; UNCONFIRMED, docs/gateway.md §11.5).
   ``drop_zero=True`` is the other reading (PHP's ``empty()``, seen at one integrator):
   ``0`` and ``"0"`` are empty too;
4. sorted by name, ASCII ascending (code-point order; ``"B" < "a"``);
5. joined as ``name=value`` with ``&``; values raw (no URL-encoding, UTF-8 text as is);
   integers as plain digits; lists and objects as compact JSON (``["1","2"]``); JSON
   booleans as ``true`` / ``false`` (the text a JSON body carries);
6. encoded as UTF-8.

``MD5``: ``hex(md5(S + "&" + key))``. ``HMAC-SHA256``: ``hex(hmac_sha256(key, S))``.
Both lowercase (docs/gateway.md §4.2, §4.3); verification compares the exact lowercase text in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Mapping
from typing import Any, Final

MD5: Final = "MD5"
HMAC_SHA256: Final = "HMAC-SHA256"
SIGN_TYPES: Final = frozenset({MD5, HMAC_SHA256})

#: Never part of the string to sign (docs/gateway.md §4.1 step 2).
UNSIGNED_FIELDS: Final = frozenset({"sign", "sign_type"})


def sign_value(value: Any) -> str:
    """The text of one value in the string to sign (docs/gateway.md §4.1 step 5).

    Floats are refused: the gateway's docs forbid sending them (docs/gateway.md §1), and a
    received JSON number is kept as its text by the caller (``parse_float=str``), so a float here is a bug.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    raise TypeError(f"cannot sign a value of type {type(value).__name__}: {value!r}")


def is_empty(value: Any, *, drop_zero: bool = False) -> bool:
    """Empty values are left out of the string to sign: ``None`` and ``""``; with
    ``drop_zero`` also ``0`` and ``"0"`` (never ``False``)."""
    if value is None or value == "":
        return True
    return drop_zero and not isinstance(value, bool) and value in (0, "0")


def sign_string(params: Mapping[str, Any], *, drop_zero: bool = False) -> str:
    """The string to sign: non-empty fields but ``sign``/``sign_type``, sorted, ``k=v&...``."""
    names = sorted(
        name
        for name, value in params.items()
        if name not in UNSIGNED_FIELDS and not is_empty(value, drop_zero=drop_zero)
    )
    return "&".join(f"{name}={sign_value(params[name])}" for name in names)


def sign(params: Mapping[str, Any], key: str, sign_type: str = MD5, *, drop_zero: bool = False) -> str:
    """The lowercase hex signature of ``params`` with ``key`` (docs/gateway.md §4.2 / §4.3)."""
    text = sign_string(params, drop_zero=drop_zero)
    if sign_type == MD5:
        return hashlib.md5(f"{text}&{key}".encode(), usedforsecurity=False).hexdigest()
    if sign_type == HMAC_SHA256:
        return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()
    raise ValueError(f"unknown sign_type {sign_type!r}; expected one of {sorted(SIGN_TYPES)}")


def sign_type_of(params: Mapping[str, Any]) -> str:
    """The algorithm a body names: its ``sign_type``, MD5 when absent or empty (docs/gateway.md §1)."""
    value = params.get("sign_type")
    return MD5 if is_empty(value) else str(value)


def verify(
    params: Mapping[str, Any],
    key: str,
    *,
    allowed: Collection[str] = SIGN_TYPES,
    expected_type: str | None = None,
    drop_zero: bool = False,
) -> bool:
    """True when ``params["sign"]`` is the signature of ``params`` under the algorithm it
    names (absent: MD5), that algorithm is in ``allowed`` and, if given, is
    ``expected_type``. Never raises on hostile input (wrong types give False)."""
    given = params.get("sign")
    if not isinstance(given, str) or not given:
        return False
    sign_type = sign_type_of(params)
    if sign_type not in SIGN_TYPES or sign_type not in allowed:
        return False
    if expected_type is not None and sign_type != expected_type:
        return False
    try:
        wanted = sign(params, key, sign_type, drop_zero=drop_zero)
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(given.encode(), wanted.encode())
