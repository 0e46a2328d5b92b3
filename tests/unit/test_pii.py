"""Personal data at rest (D72): the key ring, the sealed values, the keyed fingerprint."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from worker.pii import KeyRing, SealBroken, is_sealed, key_id_of, mask_name, mask_number
from worker.settings import ConfigError, load_settings

NEW = KeyRing.generate("k2")
OLD = KeyRing.generate("k1")


def test_a_sealed_value_opens_only_for_its_order_and_field() -> None:
    """The order id and the field are the associated data: moved elsewhere, a value does not open."""
    # given
    ring = KeyRing.parse(f"{NEW},{OLD}")
    sealed = ring.seal("ORD-1", "number", "1234567890")
    # then
    assert is_sealed(sealed) and key_id_of(sealed) == "k2" and "1234567890" not in sealed
    assert ring.open("ORD-1", "number", sealed) == "1234567890"
    with pytest.raises(SealBroken, match="moved or altered"):
        ring.open("ORD-2", "number", sealed)  # another order
    with pytest.raises(SealBroken, match="moved or altered"):
        ring.open("ORD-1", "name", sealed)  # another field of the same order


def test_an_altered_value_does_not_open() -> None:
    """Any flipped byte of the nonce, ciphertext or tag is refused (authenticated cipher)."""
    ring = KeyRing.parse(NEW)
    sealed = ring.seal("ORD-1", "name", "Budi Santoso")
    prefix, body = sealed.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for i in range(len(raw)):
        raw[i] ^= 0x01
        bad = prefix + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        raw[i] ^= 0x01
        with pytest.raises(SealBroken):
            ring.open("ORD-1", "name", bad)
    for junk in ("", "1234567890", "k2.", "k2.AAAA", "J. Smith", "k2." + body[:-1] + "!", "k2x9." + body):
        with pytest.raises(SealBroken):
            ring.open("ORD-1", "name", junk)


def test_the_first_key_seals_and_every_key_opens() -> None:
    """Rotation: a ring with a new first key opens what the old key sealed; without the old
    key it is refused naming the key id, and a different key under the same id fails too."""
    old_ring = KeyRing.parse(OLD)
    sealed = old_ring.seal("ORD-1", "number", "99887766")
    rotated = KeyRing.parse(f"{NEW},{OLD}")
    assert rotated.current == "k2" and rotated.ids == ("k2", "k1")
    assert rotated.open("ORD-1", "number", sealed) == "99887766"
    assert key_id_of(rotated.seal("ORD-1", "number", "99887766")) == "k2"
    with pytest.raises(SealBroken, match="'k1', which is not in PII_KEYS"):
        KeyRing.parse(NEW).open("ORD-1", "number", sealed)
    impostor = KeyRing.parse(KeyRing.generate("k1"))
    with pytest.raises(SealBroken, match="does not decrypt"):
        impostor.open("ORD-1", "number", sealed)


def test_the_fingerprint_is_keyed() -> None:
    """The fingerprint is an HMAC: another key gives another value, and it is not the plain
    SHA-256 the store used to keep (which allowed offline guessing of short numbers)."""
    values = ("ORD-1", "5000000", "BCA", "Budi", "1234567890", "")
    a, b = KeyRing.parse(NEW), KeyRing.parse(KeyRing.generate("k2"))
    fp = a.fingerprint(values)
    assert fp.startswith("k2:") and len(fp) == 3 + 16 and key_id_of(fp) == "k2"
    assert fp == a.fingerprint(values) != b.fingerprint(values)
    assert fp[3:] != hashlib.sha256("\x1f".join(values).encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (",", "at least one key"),
        ("k1", "id:base64key"),
        ("k1:not base64!", "base64"),
        ("k1:" + base64.b64encode(b"x" * 16).decode(), "32 bytes"),
        ("bad id:" + base64.b64encode(b"x" * 32).decode(), "key id"),
        (
            "k1:" + base64.b64encode(b"y" * 32).decode() + ",k1:" + base64.b64encode(b"z" * 32).decode(),
            "twice",
        ),
    ],
    ids=["empty", "no-key", "not-base64", "short-key", "bad-id", "same-id-twice"],
)
def test_a_malformed_key_list_names_the_setting_and_never_the_key(text: str, rule: str) -> None:
    """PII_KEYS errors name the setting and the rule; no key material in the message."""
    with pytest.raises(ConfigError) as info:
        load_settings({"PII_KEYS": text})
    msg = str(info.value)
    assert msg.startswith("PII_KEYS: ") and rule in msg, msg
    for part in text.replace(",", ":").split(":"):
        if len(part) > 8:
            assert part not in msg


def test_keys_from_a_file_and_never_in_a_repr(tmp_path: Path) -> None:
    """PII_KEYS_FILE (one entry a line) works; the settings' and the ring's reprs show key ids only."""
    path = tmp_path / "pii.keys"
    path.write_text(f"{NEW}\n{OLD}\n", encoding="utf-8")
    s = load_settings({"PII_KEYS_FILE": str(path)})
    ring = s.require_pii()
    assert ring.ids == ("k2", "k1")
    for text in (repr(s), repr(ring), str(ring)):
        assert NEW.split(":", 1)[1] not in text and OLD.split(":", 1)[1] not in text
    assert "k2" in repr(ring)


def test_missing_keys_name_the_setting() -> None:
    """Without PII_KEYS the process that needs them is told which setting is missing."""
    with pytest.raises(ConfigError, match="PII_KEYS"):
        load_settings({}).require_pii()


def test_masks_show_last_four_digits_and_an_initial() -> None:
    """What the console and ``payouts show`` display: the last four digits, the first character."""
    assert mask_number("1234567890") == "******7890"
    assert mask_number("123") == "****"
    assert mask_name("Budi Santoso") == "B…" and mask_name("") == ""
