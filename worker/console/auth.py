"""Who is asking, and what they may do: hashed passwords, identities, roles.

Deny by default: a request without an identity gets 401 (Basic) or 403, and an
identity without the role an action needs gets 403. Passwords are stored as
``scrypt$n$r$p$salt$hash`` (stdlib :func:`hashlib.scrypt`), compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from worker.settings import ConfigError

ROLES: Final = ("viewer", "operator", "approver", "admin")

#: action -> roles allowed to perform it (admin may do everything)
PERMISSIONS: Final[Mapping[str, frozenset[str]]] = {
    "view": frozenset(ROLES),
    "search": frozenset(ROLES),
    "resolve": frozenset({"operator", "admin"}),
    "back_to_polling": frozenset({"operator", "admin"}),
    "resubmit": frozenset({"operator", "admin"}),
    "pause": frozenset({"operator", "admin"}),
    "resume": frozenset({"operator", "admin"}),
    "approve": frozenset({"approver", "admin"}),
    "reject": frozenset({"approver", "admin"}),
}

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class Actor:
    """An authenticated console user."""

    name: str
    roles: frozenset[str]

    def may(self, action: str) -> bool:
        """Deny by default: unknown actions are allowed to nobody."""
        allowed = PERMISSIONS.get(action)
        return allowed is not None and bool(self.roles & allowed)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``password`` (scrypt, random 16-byte salt)."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; malformed hashes never match."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, want)


#: verified against when the user is unknown, so a wrong name costs as much as a wrong password
_DUMMY: Final = hash_password("not a password", salt=b"\0" * 16)


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    roles: frozenset[str]


def parse_users(doc: Any, *, source: str = "CONSOLE_USERS_FILE") -> dict[str, User]:
    """``{"alice": {"password": "scrypt$...", "roles": ["operator"]}, ...}`` -> users."""
    if isinstance(doc, dict) and isinstance(doc.get("users"), dict):
        doc = doc["users"]
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object of users")
    users: dict[str, User] = {}
    for name, entry in doc.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: user {name!r} must be an object")
        pw, roles = entry.get("password"), entry.get("roles")
        if not isinstance(pw, str) or not pw.startswith("scrypt$"):
            raise ConfigError(
                f"{source}: user {name!r}: password must be a scrypt hash "
                "(python -m worker.console hash-password)"
            )
        if not isinstance(roles, list) or not roles or not set(roles) <= set(ROLES):
            raise ConfigError(
                f"{source}: user {name!r}: roles must be a non-empty list of {', '.join(ROLES)}"
            )
        if not name or ":" in name or len(name) > 64:
            raise ConfigError(f"{source}: user name {name!r} must be 1-64 characters without ':'")
        users[name] = User(name, pw, frozenset(roles))
    return users


def load_users(path: str) -> dict[str, User]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"CONSOLE_USERS_FILE: cannot read the file ({exc.strerror})") from None
    except ValueError:
        raise ConfigError("CONSOLE_USERS_FILE: the file is not valid JSON") from None
    return parse_users(doc)


#: an identity provider: the WSGI environ -> the actor, or None (not authenticated)
Identity = Callable[[Mapping[str, Any]], Actor | None]


class BasicAuth:
    """HTTP Basic against hashed passwords; successful checks cached briefly (scrypt is slow on purpose)."""

    def __init__(self, users: Mapping[str, User], *, cache_s: float = 60.0) -> None:
        self.users = dict(users)
        self.cache_s = cache_s
        self._ok: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: Mapping[str, Any]) -> Actor | None:
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            name, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        user = self.users.get(name)
        key = (name, hashlib.sha256(password.encode()).hexdigest())
        now = time.monotonic()
        with self._lock:
            cached = self._ok.get(key, 0.0) > now
        if not cached:
            ok = verify_password(password, user.password_hash if user else _DUMMY)
            if not ok or user is None:
                return None
            with self._lock:
                if len(self._ok) > 1000:
                    self._ok.clear()
                self._ok[key] = now + self.cache_s
        assert user is not None
        return Actor(user.name, user.roles)


class TrustedHeader:
    """The user and roles set by the host app or proxy (which must strip client copies)."""

    def __init__(self, user_header: str, roles_header: str) -> None:
        self.user_key = "HTTP_" + user_header.upper().replace("-", "_")
        self.roles_key = "HTTP_" + roles_header.upper().replace("-", "_")

    def __call__(self, environ: Mapping[str, Any]) -> Actor | None:
        name = str(environ.get(self.user_key, "")).strip()
        roles = {r.strip() for r in str(environ.get(self.roles_key, "")).split(",")} & set(ROLES)
        if not name or not roles or len(name) > 64:
            return None
        return Actor(name, frozenset(roles))
