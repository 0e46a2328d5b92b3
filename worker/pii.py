"""Personal data at rest: the key ring, the cipher and the masked forms (D72).

An order's account number and name are stored sealed with AES-256-GCM
(``cryptography``). A sealed value is ``<key id>.<base64url(nonce + ciphertext + tag)>``;
its associated data binds the order id and the field name, so a value copied to
another order or another field does not open. An account number is sealed as the bytes
of the integer ``1<digits>`` (8 bytes for 16 digits): with a key id of at most 4
characters, a sealed 16-character ASCII name or 32-digit number is at most 64 bytes, so
the order hash keeps Redis's compact listpack encoding (``hash-max-listpack-value 64``).
Only the process that sends the create (and ``payouts rekey``) opens one; everything
that shows an order reads the masked forms stored beside it (:func:`mask_number`,
:func:`mask_name`).

``PII_KEYS`` (or ``PII_KEYS_FILE``) is ``id:base64key,id:base64key,...``: 32-byte
keys, **the first one seals**, every one opens. The order fingerprint is an HMAC
under a key derived from the sealing key (``<key id>:<16 hex>``), never a plain
hash of the number.

Nothing here prints a key: :class:`KeyRing`'s repr names only the ids, and every
error names the setting and the rule, never the value.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: the personal fields of an order: stored sealed, never in plain text
SEALED_FIELDS: Final = ("name", "number")
#: the masked forms stored beside them (what the console and ``payouts show`` display)
MASK_FIELDS: Final = {"name": "name_mask", "number": "number_mask"}
#: a key id: at most 4 characters, so a sealed value stays within 64 bytes (module doc)
KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,4}")
#: the body of a sealed value: base64url of at least a nonce and a tag
_BODY_RE: Final = re.compile(r"[A-Za-z0-9_-]{38,}")
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
_AAD_PREFIX: Final = b"payouts/pii/v1\x1f"


class KeyRingError(ValueError):
    """PII_KEYS is malformed; the message names the rule, never the key."""


class SealBroken(ValueError):
    """A sealed value does not open: unknown key id, wrong key, moved or altered."""


def _b64decode(text: str) -> bytes:
    text = text.strip()
    pad = "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + pad)
        return base64.b64decode(text + pad, validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError("must be base64") from None


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"payouts/pii/" + purpose).derive(key)


class _Key:
    __slots__ = ("aead", "fp_key", "id")

    def __init__(self, key_id: str, material: bytes) -> None:
        self.id = key_id
        self.aead = AESGCM(_derive(material, b"aes-gcm"))
        self.fp_key = _derive(material, b"fingerprint")

    def __repr__(self) -> str:
        return f"<key {self.id}>"


class KeyRing:
    """The configured keys: the first seals, every one opens. Never shows a key."""

    __slots__ = ("_keys", "current")

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        made: dict[str, _Key] = {}
        for key_id, material in keys:
            if not KEY_ID_RE.fullmatch(key_id):
                raise KeyRingError("each key id must be 1-4 letters, digits, '_' or '-'")
            if key_id in made:
                raise KeyRingError(f"key id {key_id!r} is listed twice")
            if len(material) != KEY_BYTES:
                raise KeyRingError(f"key {key_id!r} must be {KEY_BYTES} bytes (base64 of 32 random bytes)")
            made[key_id] = _Key(key_id, material)
        if not made:
            raise KeyRingError("must list at least one key as id:base64key")
        self._keys: Mapping[str, _Key] = made
        self.current: str = next(iter(made))

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """``id:base64key`` entries separated by commas or new lines, the sealing key first."""
        entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip()]
        pairs = []
        for entry in entries:
            key_id, sep, material = entry.partition(":")
            if not sep or not material:
                raise KeyRingError("each entry must be id:base64key")
            pairs.append((key_id.strip(), _b64decode(material)))
        return cls(pairs)

    @staticmethod
    def generate(key_id: str) -> str:
        """A new ``id:base64key`` entry (32 random bytes) to put first in PII_KEYS."""
        if not KEY_ID_RE.fullmatch(key_id):
            raise KeyRingError("a key id must be 1-4 letters, digits, '_' or '-'")
        return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __repr__(self) -> str:
        return f"KeyRing(ids={list(self._keys)!r}, sealing={self.current!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeyRing)
            and other.ids == self.ids
            and all(other._keys[k].fp_key == self._keys[k].fp_key for k in self.ids)
        )

    def __hash__(self) -> int:
        return hash(self.ids)

    # -- sealing -----------------------------------------------------------------

    def seal(self, payout_cl_id: str, field: str, text: str) -> str:
        """``text`` sealed with the current key, bound to this order and field."""
        key = self._keys[self.current]
        nonce = os.urandom(NONCE_BYTES)
        blob = key.aead.encrypt(nonce, _encode(field, text), _aad(payout_cl_id, field))
        return f"{key.id}.{base64.urlsafe_b64encode(nonce + blob).rstrip(b'=').decode()}"

    def open(self, payout_cl_id: str, field: str, sealed: str) -> str:
        """The text of a value sealed for this order and field, or :class:`SealBroken`."""
        key_id, body = _split(sealed)
        if not key_id:
            raise SealBroken(f"{field}: not a sealed value")
        key = self._keys.get(key_id)
        if key is None:
            raise SealBroken(f"{field}: sealed with key {key_id!r}, which is not in PII_KEYS")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise SealBroken(f"{field}: not a sealed value") from None
        if len(raw) < NONCE_BYTES + 16:
            raise SealBroken(f"{field}: not a sealed value")
        try:
            plain = key.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(payout_cl_id, field))
        except InvalidTag:
            raise SealBroken(
                f"{field}: does not decrypt with key {key_id!r} for this order (wrong key, moved or altered)"
            ) from None
        try:
            return _decode(field, plain)
        except UnicodeDecodeError:  # authenticated, so only a writer with the key made it
            raise SealBroken(f"{field}: not text") from None

    def fingerprint(self, values: Iterable[str], key_id: str | None = None) -> str:
        """``<key id>:<16 hex>``: an HMAC of ``values`` (the payout's fields in order)."""
        kid = self.current if key_id is None else key_id
        key = self._keys.get(kid)
        if key is None:
            raise SealBroken(f"fingerprint: key {kid!r} is not in PII_KEYS")
        msg = "\x1f".join(values).encode()
        return f"{kid}:{hmac.digest(key.fp_key, msg, 'sha256')[:8].hex()}"


def _aad(payout_cl_id: str, field: str) -> bytes:
    return _AAD_PREFIX + payout_cl_id.encode() + b"\x1f" + field.encode()


def _encode(field: str, text: str) -> bytes:
    if field == "number" and text.isascii() and text.isdigit():
        packed = int("1" + text)  # the leading 1 keeps leading zeros
        return packed.to_bytes((packed.bit_length() + 7) // 8, "big")
    return text.encode()


def _decode(field: str, plain: bytes) -> str:
    if field == "number":
        return str(int.from_bytes(plain, "big"))[1:]
    return plain.decode()


def _split(sealed: str) -> tuple[str, str]:
    """(key id, body) of a sealed value; ("", "") for anything else."""
    key_id, sep, body = sealed.partition(".")
    if not sep or not KEY_ID_RE.fullmatch(key_id) or not _BODY_RE.fullmatch(body):
        return "", ""
    return key_id, body


def is_sealed(value: str | None) -> bool:
    """Whether a stored value has the sealed form (says nothing about whether it opens)."""
    return bool(value) and bool(_split(value or "")[0])


def key_id_of(value: str | None) -> str | None:
    """The key id a sealed value or a fingerprint names; None for anything else."""
    if not value:
        return None
    if is_sealed(value):
        return _split(value)[0]
    kid, sep, digest = value.partition(":")
    if sep and KEY_ID_RE.fullmatch(kid) and len(digest) == 16:
        return kid
    return None


def mask_number(number: str) -> str:
    """An account number with all but the last 4 digits hidden (at most 12 characters)."""
    return "*" * max(0, min(len(number), 12) - 4) + number[-4:] if len(number) > 4 else "****"


def mask_name(name: str) -> str:
    """A name cut to its first character: enough to tell two orders apart on a screen."""
    return (name[:1] + "…") if name else ""
