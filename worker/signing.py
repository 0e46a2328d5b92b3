"""Request and notification signatures, exactly as docs/gateway.md §4 defines them.

The string to sign is built from every parameter except ``sign`` and
``sign_type``, dropping empty values (``None`` and ``""``; numeric ``0`` is kept,
docs/gateway.md §4.1 step 3), sorted by name in ASCII order and joined as ``name=value``
with ``&``. Values are used raw: no URL-encoding, UTF-8 text as is, integers as
plain digits.

* MD5 (legacy): ``md5(S + "&" + key)``, lowercase hex, 32 characters.
* HMAC-SHA256: ``hmac_sha256(key, S)``, lowercase hex, 64 characters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Final

HMAC_SHA256: Final = "HMAC-SHA256"
MD5: Final = "MD5"
SIGN_TYPES: Final = frozenset({HMAC_SHA256, MD5})

#: Fields never part of the string to sign.
_UNSIGNED: Final = frozenset({"sign", "sign_type"})


def _text(value: Any) -> str:
    """The text a value is signed as."""
    if isinstance(value, bool):
        raise TypeError("booleans have no defined signing text")
    if isinstance(value, float):
        raise TypeError("floats are never signed or sent; use integer minor units")
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def string_to_sign(params: Mapping[str, Any]) -> str:
    """Build the canonical ``k=v&k=v`` string of docs/gateway.md §4.1."""
    pairs = []
    for name in sorted(params):
        if name in _UNSIGNED:
            continue
        value = params[name]
        if value is None or value == "":
            continue
        pairs.append(f"{name}={_text(value)}")
    return "&".join(pairs)


def sign(params: Mapping[str, Any], key: str, sign_type: str = HMAC_SHA256) -> str:
    """Return the lowercase hex signature of ``params`` under ``key``."""
    text = string_to_sign(params)
    if sign_type == HMAC_SHA256:
        return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()
    if sign_type == MD5:
        return hashlib.md5(f"{text}&{key}".encode()).hexdigest()  # noqa: S324 - the gateway's legacy scheme
    raise ValueError(f"sign_type must be one of {sorted(SIGN_TYPES)}")


def verify(
    params: Mapping[str, Any],
    key: str,
    allowed: frozenset[str] | set[str] = SIGN_TYPES,
    expected_type: str | None = None,
    absent_type: str = MD5,
) -> bool:
    """Check ``params["sign"]`` in constant time.

    The algorithm is the one the message names (``sign_type``); a message naming none
    is checked with ``absent_type`` (MD5 by docs/gateway.md §4.2; callers pass the order's own
    algorithm where the gateway's record and notice examples carry no ``sign_type``). It
    must be in ``allowed``, and equal ``expected_type`` when given (the algorithm the
    order was created with), so an HMAC deployment never accepts an MD5-signed notice.
    """
    received = params.get("sign")
    if not isinstance(received, str) or not received or not received.isascii():
        return False
    raw_type = params.get("sign_type")
    sign_type = str(raw_type) if raw_type not in (None, "") else absent_type
    if sign_type not in allowed:
        return False
    if expected_type is not None and sign_type != expected_type:
        return False
    try:
        expected = sign(params, key, sign_type)
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(expected.encode(), received.strip().lower().encode())
