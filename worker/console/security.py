"""CSRF tokens, the same-origin check, and the headers every console answer carries."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any, Final

#: no script at all: the pages are plain forms; styles only from our own origin
CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)

HEADERS: Final = (
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


def csrf_token(secret: bytes, user: str, *, now: float | None = None) -> str:
    """A token bound to the user and its issue time (a signed, stateless synchronizer token)."""
    ts = str(int(time.time() if now is None else now))
    sig = hmac.new(secret, f"csrf|{user}|{ts}".encode(), hashlib.sha256).hexdigest()
    return f"{ts}.{sig}"


def csrf_valid(secret: bytes, user: str, token: str, *, ttl_s: float, now: float | None = None) -> bool:
    ts, _, sig = token.partition(".")
    if not ts.isdigit() or not sig:
        return False
    now = time.time() if now is None else now
    if not (now - ttl_s <= int(ts) <= now + 60):
        return False
    want = hmac.new(secret, f"csrf|{user}|{ts}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, sig)


def request_origin(environ: Mapping[str, Any]) -> str:
    """scheme://host of this request as the server sees it."""
    host = str(environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}")
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


def same_origin(environ: Mapping[str, Any], expected: str | None) -> tuple[bool, str]:
    """Fetch metadata first (``Sec-Fetch-Site``), else ``Origin``; neither present = refused.

    Under ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` on form posts;
    ``Sec-Fetch-Site`` (which pages cannot set) then decides. A real Origin must match.
    """
    site = environ.get("HTTP_SEC_FETCH_SITE")
    origin = environ.get("HTTP_ORIGIN")
    if site is not None and site != "same-origin":
        return False, f"Sec-Fetch-Site is {str(site)[:20]}"
    if origin is not None and origin != "null":
        if origin != (expected or request_origin(environ)):
            return False, "Origin does not match"
        return True, ""
    if site == "same-origin":
        return True, ""
    return False, "no Origin or Sec-Fetch-Site header"
