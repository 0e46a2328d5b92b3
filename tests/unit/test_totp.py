"""RFC 6238 Appendix B's published test vectors, through pyotp as the console uses it."""

from __future__ import annotations

import base64
import hashlib

import pyotp
import pytest

pytestmark = pytest.mark.unit

#: the RFC's seeds: the ASCII digits "1234567890" repeated to 20, 32 and 64 bytes
SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
#: (unix time, SHA-1, SHA-256, SHA-512): RFC 6238 Appendix B, 8 digits, 30 s steps
VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("t", "sha1", "sha256", "sha512"), VECTORS)
def test_rfc6238_vectors(t: int, sha1: str, sha256: str, sha512: str) -> None:
    """pyotp's TOTP gives the RFC's codes for each algorithm at each time."""
    for name, want in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
        secret = base64.b32encode(SEEDS[name]).decode()
        totp = pyotp.TOTP(secret, digits=8, digest=getattr(hashlib, name), interval=30)
        assert totp.at(t) == want, (name, t)
        # the 6-digit code the console asks for is the same value's last six digits
        assert pyotp.TOTP(secret, digest=getattr(hashlib, name)).at(t) == want[-6:]
