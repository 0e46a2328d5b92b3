"""The console's settings: from the environment (the web process) or from code (a host app).

| variable | default | meaning |
| --- | --- | --- |
| ``CONSOLE_USERS_FILE`` | unset | JSON users file (hashed passwords, roles): enables Basic auth |
| ``CONSOLE_SECRET`` / ``_FILE`` | unset | key of the CSRF tokens; required once any identity is configured |
| ``CONSOLE_READ_ONLY`` | ``0`` | ``1``: no controls rendered, every mutation 403 |
| ``CONSOLE_TRUSTED_USER_HEADER`` | unset | with ``CONSOLE_TRUSTED_ROLES_HEADER``: trust these |
| | | headers set by the host app or proxy (which strips client copies) |
| ``CONSOLE_ORIGIN`` | the request's | origin POSTs must come from (``https://desk.example``) |

With neither users nor trusted headers, every request is denied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from worker.console.auth import BasicAuth, Identity, TrustedHeader, load_users
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

    def __post_init__(self) -> None:
        if self.identity is not None and len(self.secret) < 16:
            raise ConfigError(
                "CONSOLE_SECRET must be set (at least 16 characters) when the console has users"
            )


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (_read(env, name) or "0").lower()
    if raw not in TRUE + FALSE:
        raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")
    return raw in TRUE


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
    if users_file:
        identity = BasicAuth(load_users(users_file))
    elif user_h and roles_h:
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
        basic_challenge=users_file is not None,
    )
