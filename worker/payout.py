"""The payout model and its validation (SPEC §1).

:func:`validate_payout` checks every field and raises one :class:`InvalidPayout`
listing each bad field with its rule, so nothing half-valid is stored or sent.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from worker.errors import FieldError, InvalidPayout
from worker.pii import mask_number

__all__ = ["FIELDS", "Payout", "mask_number", "validate_payout"]

#: merchant order ids: letters, digits and - _ . : (no spaces, no separators of keys)
ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}")
DIGITS_RE: Final = re.compile(r"[0-9]{1,32}")
BANK_RE: Final = re.compile(r"[A-Za-z0-9 _.&-]{1,16}")
AMOUNT_MAX_MINOR: Final = 9_999_999_999  # Integer(10)
FIELDS: Final = ("payout_cl_id", "amount", "bank_name", "name", "number", "notify_url")


@dataclass(frozen=True)
class Payout:
    """A validated payout request. ``amount`` is in minor units (IDR x 100)."""

    payout_cl_id: str
    amount: int
    bank_name: str
    name: str
    number: str
    notify_url: str | None = None

    def fingerprint_values(self) -> tuple[str, ...]:
        """What the order fingerprint covers (every field, in order): the store keys it with
        an HMAC (worker/pii.py) to tell a repeated enqueue from a conflicting one."""
        return tuple(str(v) if v is not None else "" for v in asdict(self).values())

    def __repr__(self) -> str:
        return (
            f"Payout(payout_cl_id={self.payout_cl_id!r}, amount={self.amount}, "
            f"bank_name={self.bank_name!r}, name='***', number={mask_number(self.number)!r})"
        )


def _check_id(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("payout_cl_id", "must be a string")
    text: str = value
    if not ID_RE.fullmatch(value):
        raise FieldError(
            "payout_cl_id",
            "must be 1-32 characters of letters, digits, '_', '-', '.', ':' starting with a letter or digit",
        )
    return text


def _check_amount(value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError("amount", "must be an integer of minor units (IDR x 100), not a float or string")
    if not minimum <= value <= maximum:
        raise FieldError("amount", f"must be between {minimum} and {maximum} minor units")
    return value


#: Unicode categories refused in text fields: controls (Cc: C0, DEL and C1), format
#: characters (Cf) and line/paragraph separators (Zl, Zp)
_HIDDEN: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _check_text(field: str, value: Any, max_len: int) -> str:
    if not isinstance(value, str):
        raise FieldError(field, "must be a string")
    if value != value.strip() or not value:
        raise FieldError(field, "must be non-empty without leading or trailing spaces")
    if len(value) > max_len:
        raise FieldError(field, f"must be at most {max_len} characters (never truncated)")
    if any(unicodedata.category(c) in _HIDDEN for c in value):
        # C0/C1 controls, line breaks, and format characters (bidi overrides, zero-width)
        # that make a name read differently on a screen than it is sent to the bank (D32)
        raise FieldError(field, "must not contain control or invisible formatting characters")
    _check_utf8(field, value)
    return value


def _check_utf8(field: str, value: str) -> None:
    # a lone surrogate is a valid Python str that neither Redis nor the gateway can take
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError(field, "must be valid Unicode text (no lone surrogates)") from None


def _check_bank(value: Any, banks: Collection[str]) -> str:
    text = _check_text("bank_name", value, 16)
    if not BANK_RE.fullmatch(text):
        raise FieldError("bank_name", "must be a bank code of letters, digits and spaces")
    if banks and text not in banks:
        raise FieldError("bank_name", "must be one of the configured banks (PAYOUT_BANK_LIST)")
    return text


def _check_number(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("number", "must be a string of digits")
    if not DIGITS_RE.fullmatch(value):
        raise FieldError("number", "must be 1-32 digits")
    return value


def _check_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError("notify_url", "must be a string")
    if len(value) > 256:
        raise FieldError("notify_url", "must be at most 256 characters")
    _check_utf8("notify_url", value)
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. "http://[::1": urlsplit raises on a malformed netloc
        host = None
    if not host or parts.scheme not in ("http", "https") or " " in value:
        raise FieldError("notify_url", "must be an http(s) URL with a host")
    return value


def validate_payout(
    data: Mapping[str, Any],
    *,
    banks: Collection[str] = (),
    amount_min: int = 1,
    amount_max: int = AMOUNT_MAX_MINOR,
) -> Payout:
    """Check every field of ``data``; return a :class:`Payout` or raise InvalidPayout."""
    problems: list[FieldError] = []
    values: dict[str, Any] = {}
    unknown = sorted(set(data) - set(FIELDS))
    problems.extend(FieldError(name[:40] or repr(name), "is not a payout field") for name in unknown)
    checks = {
        "payout_cl_id": _check_id,
        "amount": lambda v: _check_amount(v, amount_min, amount_max),
        "bank_name": lambda v: _check_bank(v, banks),
        "name": lambda v: _check_text("name", v, 16),
        "number": _check_number,
        "notify_url": _check_url,
    }
    for field, check in checks.items():
        if field not in data and field != "notify_url":
            problems.append(FieldError(field, "is required"))
            continue
        try:
            values[field] = check(data.get(field))
        except FieldError as exc:
            problems.append(exc)
    if problems:
        raise InvalidPayout(problems)
    return Payout(**values)
