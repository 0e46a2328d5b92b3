"""The console's settings: from the environment (the web process) or from code (a host app).

| variable | default | meaning |
| --- | --- | --- |
| ``CONSOLE_USERS_FILE`` | unset | JSON users file (hashed passwords, roles): the sign-in form |
| ``CONSOLE_SECRET`` / ``_FILE`` | unset | key of the CSRF tokens; required once any identity is configured |
| ``CONSOLE_READ_ONLY`` | ``0`` | ``1``: no controls rendered, every mutation 403 |
| ``CONSOLE_TRUSTED_USER_HEADER`` | unset | with ``CONSOLE_TRUSTED_ROLES_HEADER``: trust these |
| | | headers set by the host app or proxy (which strips client copies) |
| ``CONSOLE_ORIGIN`` | the request's | origin POSTs must come from (``https://desk.example``) |
| ``CONSOLE_IDLE_TIMEOUT_S`` | ``900`` | a session ends after this long without a request |
| ``CONSOLE_ABSOLUTE_TIMEOUT_S`` | ``28800`` | a session ends this long after sign-in |
| ``CONSOLE_LOGIN_THROTTLE_AFTER`` | ``5`` | attempts per user before the doubling delay (429) |
| ``CONSOLE_LOGIN_LOCKOUT_AFTER`` | ``10`` | attempts per user that lock it (an address: 4x both) |
| ``CONSOLE_LOGIN_LOCKOUT_S`` | ``900`` | how long a lockout lasts |
| ``CONSOLE_STEP_UP_ABOVE`` | ``1000000000`` | approvals above this (minor units) ask a fresh TOTP code |
| ``CONSOLE_COOKIE_SECURE`` | ``1`` | ``0`` drops the cookie's Secure attribute (plain-HTTP tests only) |

With neither users nor trusted headers, every request is denied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from worker.console.auth import Identity, TrustedHeader, User, load_users
from worker.console.signin import SignInPolicy
from worker.settings import ConfigError, _read, _secret

TRUE: Final = ("1", "true", "yes", "on")
FALSE: Final = ("0", "false", "no", "off")


@dataclass(frozen=True)
class ConsoleConfig:
    #: who is asking; None = deny everything
    identity: Identity | None = None
    #: HMAC key of the CSRF tokens (at least 16 bytes)
    secret: bytes = b""
    #: the global read-only switch
    read_only: bool = False
    #: the origin mutations must come from; None = the request's scheme://Host
    origin: str | None = None
    #: answer 401 with a Basic challenge (built-in users) rather than 403
    basic_challenge: bool = False
    #: rows per queue page
    page_size: int = 200
    #: CSRF token lifetime
    token_ttl_s: float = 12 * 3600.0
    #: the sign-in form's users (``CONSOLE_USERS_FILE``); exclusive with ``identity``
    users: Mapping[str, User] | None = None
    #: sessions, guessing limits, the second factor
    signin: SignInPolicy = field(default_factory=SignInPolicy)

    def __post_init__(self) -> None:
        if self.identity is not None and self.users is not None:
            raise ConfigError("the console takes an identity function or sign-in users, not both")
        if (self.identity is not None or self.users is not None) and len(self.secret) < 16:
            raise ConfigError(
                "CONSOLE_SECRET must be set (at least 16 characters) when the console has users"
            )


def _bool(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = (_read(env, name) or ("1" if default else "0")).lower()
    if raw not in TRUE + FALSE:
        raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")
    return raw in TRUE


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _read(env, name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


def load_signin_policy(env: Mapping[str, str]) -> SignInPolicy:
    """The ``CONSOLE_*`` sign-in settings; ConfigError names the bad one."""
    d = SignInPolicy()
    idle = _int(env, "CONSOLE_IDLE_TIMEOUT_S", int(d.idle_s), 60, 86400)
    absolute = _int(env, "CONSOLE_ABSOLUTE_TIMEOUT_S", int(d.absolute_s), 60, 7 * 86400)
    if absolute < idle:
        raise ConfigError("CONSOLE_ABSOLUTE_TIMEOUT_S must be at least CONSOLE_IDLE_TIMEOUT_S")
    throttle = _int(env, "CONSOLE_LOGIN_THROTTLE_AFTER", d.throttle_after, 1, 100)
    lockout = _int(env, "CONSOLE_LOGIN_LOCKOUT_AFTER", d.lockout_after, 1, 1000)
    if lockout < throttle:
        raise ConfigError("CONSOLE_LOGIN_LOCKOUT_AFTER must be at least CONSOLE_LOGIN_THROTTLE_AFTER")
    return SignInPolicy(
        idle_s=float(idle),
        absolute_s=float(absolute),
        throttle_after=throttle,
        lockout_after=lockout,
        lockout_s=_int(env, "CONSOLE_LOGIN_LOCKOUT_S", d.lockout_s, 1, 86400),
        step_up_above=_int(env, "CONSOLE_STEP_UP_ABOVE", d.step_up_above, 0, 10**12),
        secure_cookie=_bool(env, "CONSOLE_COOKIE_SECURE", default=True),
    )


def load_console_config(env: Mapping[str, str] | None = None) -> ConsoleConfig:
    """Parse the ``CONSOLE_*`` variables; ConfigError names the bad one."""
    env = os.environ if env is None else env
    users_file = _read(env, "CONSOLE_USERS_FILE")
    user_h, roles_h = _read(env, "CONSOLE_TRUSTED_USER_HEADER"), _read(env, "CONSOLE_TRUSTED_ROLES_HEADER")
    if (user_h is None) != (roles_h is None):
        raise ConfigError("CONSOLE_TRUSTED_USER_HEADER and CONSOLE_TRUSTED_ROLES_HEADER are set together")
    if users_file and user_h:
        raise ConfigError("CONSOLE_USERS_FILE and CONSOLE_TRUSTED_USER_HEADER are exclusive; set one")
    identity: Identity | None = None
    users = load_users(users_file) if users_file else None
    if user_h and roles_h:
        identity = TrustedHeader(user_h, roles_h)
    origin = _read(env, "CONSOLE_ORIGIN")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError("CONSOLE_ORIGIN must be scheme://host[:port], e.g. https://desk.example")
        origin = f"{parts.scheme}://{parts.netloc}"
    secret = _secret(env, "CONSOLE_SECRET")
    return ConsoleConfig(
        identity=identity,
        secret=secret.reveal().encode() if secret else b"",
        read_only=_bool(env, "CONSOLE_READ_ONLY"),
        origin=origin,
        users=users,
        signin=load_signin_policy(env),
    )
