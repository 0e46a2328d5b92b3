"""The console's own sign-in: server-side sessions, guessing throttled, a TOTP second factor.

* **Sessions** live in Redis (``keys.console_session``, by the SHA-256 of the id: a dump of
  Redis holds no usable cookie). The cookie is ``HttpOnly; Secure; SameSite=Strict``, scoped
  to the console's path; a session ends after ``idle_s`` without a request or ``absolute_s``
  after sign-in, whichever comes first, or at sign-out. Every sign-in (and the second step)
  issues a new id: an id planted before sign-in is never promoted.
* **Guessing** is throttled per user name and per client address (``login.lua``): from the
  5th attempt a delay that doubles (429 with ``Retry-After``), at the 10th a 15-minute
  lockout; an address gets four times the user's limits. Every refusal is audited and
  counted (``console_actions``: ``login:throttled``, ``login:locked``, ``login:denied``).
* **TOTP** (RFC 6238 via ``pyotp``: SHA-1, 6 digits, 30 s, one step of drift) is required to
  sign in for the ``approver`` and ``admin`` roles, and asked again for an approval above
  ``step_up_above``. Each code is accepted once. Secrets are enrolled by
  ``python -m worker.console enrol-totp`` (which prints the provisioning URI once) and
  stored AES-GCM-encrypted under a key derived from ``CONSOLE_SECRET``: never shown again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import redis

from worker import keys
from worker.console.auth import Actor, User
from worker.logs import get_logger

log = get_logger("payouts.console")

#: roles that must pass the second factor to sign in
SECOND_FACTOR_ROLES: Final = frozenset({"approver", "admin"})
COOKIE: Final = "payouts_console"
TOTP_ISSUER: Final = "payout desk"
#: seconds a password-checked session may wait for its TOTP code
PENDING_S: Final = 300


@dataclass(frozen=True)
class SignInPolicy:
    """Timeouts and guessing limits (``CONSOLE_*`` settings; docs/operating.md)."""

    idle_s: float = 15 * 60.0
    absolute_s: float = 8 * 3600.0
    throttle_after: int = 5
    lockout_after: int = 10
    address_factor: int = 4
    lockout_s: int = 15 * 60
    window_s: int = 15 * 60
    max_delay_s: int = 60
    #: approvals of an amount (minor units) above this ask for a fresh TOTP code; 0 = never
    #: (default IDR 10,000,000.00)
    step_up_above: int = 1_000_000_000
    #: the cookie's Secure attribute (only a plain-HTTP test setup turns it off)
    secure_cookie: bool = True


@dataclass(frozen=True)
class Session:
    sid_hash: str
    user: str
    roles: frozenset[str]
    created: float
    #: "password" = waiting for the TOTP code; "full" = signed in
    stage: str

    @property
    def actor(self) -> Actor:
        return Actor(self.user, self.roles)


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def needs_second_factor(roles: frozenset[str]) -> bool:
    return bool(roles & SECOND_FACTOR_ROLES)


class Sessions:
    """Server-side sessions in Redis."""

    def __init__(self, client: redis.Redis, policy: SignInPolicy) -> None:
        self.redis = client
        self.policy = policy

    def create(self, user: User, stage: str, *, now: float | None = None) -> str:
        """A new session id (the cookie's value); only its hash is stored."""
        now = time.time() if now is None else now
        sid = secrets.token_urlsafe(32)
        ttl = PENDING_S if stage != "full" else self.policy.idle_s
        k = keys.console_session(_hash(sid))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            k,
            mapping={
                "user": user.name,
                "roles": ",".join(sorted(user.roles)),
                "created": repr(now),
                "stage": stage,
            },
        )
        pipe.expire(k, max(1, int(min(ttl, self.policy.absolute_s))))
        pipe.execute()
        return sid

    def get(self, sid: str, *, now: float | None = None, touch: bool = True) -> Session | None:
        """The live session of ``sid``, its idle timer restarted; None when it ended."""
        if not sid or len(sid) > 128:
            return None
        now = time.time() if now is None else now
        k = keys.console_session(_hash(sid))
        d: dict[str, str] = self.redis.hgetall(k)  # type: ignore[assignment]
        if not d:
            return None
        created = float(d.get("created", 0))
        if now - created >= self.policy.absolute_s:
            self.redis.delete(k)
            return None
        s = Session(_hash(sid), d["user"], frozenset(d["roles"].split(",")), created, d.get("stage", ""))
        if touch and s.stage == "full":
            left = self.policy.absolute_s - (now - created)
            self.redis.expire(k, max(1, int(min(self.policy.idle_s, left))))
        return s

    def end(self, sid: str) -> None:
        if sid and len(sid) <= 128:
            self.redis.delete(keys.console_session(_hash(sid)))

    def cookie(self, base: str, sid: str) -> str:
        """The Set-Cookie value of a session (no Max-Age: the browser drops it at exit)."""
        secure = "; Secure" if self.policy.secure_cookie else ""
        return f"{COOKIE}={sid}; Path={base or ''}/; HttpOnly{secure}; SameSite=Strict"

    def clear_cookie(self, base: str) -> str:
        secure = "; Secure" if self.policy.secure_cookie else ""
        return f"{COOKIE}=; Path={base or ''}/; Max-Age=0; HttpOnly{secure}; SameSite=Strict"


def session_id(environ: dict[str, Any]) -> str:
    """The session cookie's value in the request, or ""."""
    for part in str(environ.get("HTTP_COOKIE", "")).split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value.strip()
    return ""


@dataclass(frozen=True)
class Verdict:
    """``login.lua``'s answer: wait ``retry_after_s`` (0 = go ahead)."""

    retry_after_s: int
    result: str = ""
    scope: str = ""


class Throttle:
    """Sign-in attempts per user name and per client address (``worker/lua/login.lua``)."""

    def __init__(self, client: redis.Redis, policy: SignInPolicy) -> None:
        self.redis = client
        self.policy = policy
        src = resources.files("worker").joinpath("lua/login.lua").read_text()
        self._take = client.register_script(src)

    @staticmethod
    def _user_key(name: str) -> str:
        return keys.console_login("user", hashlib.sha256(name.encode("utf-8", "replace")).hexdigest())

    def take(self, name: str, address: str, *, now: float | None = None) -> Verdict:
        p = self.policy
        res = self._take(
            keys=[self._user_key(name), keys.console_login("addr", address[:45] or "-")],
            args=[
                repr(time.time() if now is None else now),
                p.window_s,
                p.throttle_after,
                p.lockout_after,
                p.address_factor,
                p.lockout_s,
                p.max_delay_s,
            ],
        )
        return Verdict(int(res[0]), str(res[1]), str(res[2]))

    def succeeded(self, name: str) -> None:
        """A right password or code: the user's count starts again (the address's does not)."""
        self.redis.delete(self._user_key(name))


# -- TOTP ----------------------------------------------------------------------


def _aead(secret: bytes) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"payouts console totp").derive(secret)
    return AESGCM(key)


class TotpSecrets:
    """Each user's TOTP secret, AES-GCM-encrypted in ``keys.CONSOLE_TOTP`` (user name bound in)."""

    def __init__(self, client: redis.Redis, console_secret: bytes) -> None:
        self.redis = client
        self._aead = _aead(console_secret)

    def enrol(self, user: str, *, replace: bool = False) -> str | None:
        """A new random secret for ``user``, stored; returns its provisioning URI (show it
        once), or None when one exists and ``replace`` is false."""
        import pyotp

        secret = pyotp.random_base32()
        nonce = os.urandom(12)
        sealed = base64.b64encode(nonce + self._aead.encrypt(nonce, secret.encode(), user.encode())).decode()
        if replace:
            self.redis.hset(keys.CONSOLE_TOTP, user, sealed)
        elif not self.redis.hsetnx(keys.CONSOLE_TOTP, user, sealed):
            return None
        return str(pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=TOTP_ISSUER))

    def enrolled(self, user: str) -> bool:
        return bool(self.redis.hexists(keys.CONSOLE_TOTP, user))

    def _secret(self, user: str) -> str | None:
        raw = self.redis.hget(keys.CONSOLE_TOTP, user)
        if raw is None:
            return None
        from cryptography.exceptions import InvalidTag

        blob = base64.b64decode(str(raw))
        try:
            return str(self._aead.decrypt(blob[:12], blob[12:], user.encode()).decode())
        except InvalidTag:
            # CONSOLE_SECRET changed since enrolment (or the value was tampered with)
            log.error("console.totp_unreadable", user=user[:64])
            return None

    def verify(self, user: str, code: str, *, now: float | None = None) -> bool:
        """Whether ``code`` is ``user``'s current code (one 30 s step of drift either way),
        not used before: each step's code is accepted once (a replayed code is refused)."""
        import pyotp

        code = code.strip().replace(" ", "")
        if not (code.isdigit() and len(code) == 6):
            return False
        secret = self._secret(user)
        if secret is None:
            return False
        totp = pyotp.TOTP(secret)
        t = time.time() if now is None else now
        for drift in (0, -1, 1):
            at = t + drift * totp.interval
            if hmac.compare_digest(totp.at(at), code):
                step = totp.timecode(at)
                used = keys.console_totp_used(user, step)
                return bool(self.redis.set(used, "1", nx=True, ex=totp.interval * 4))
        return False
