"""``python -m worker.console hash-password`` (reads the password from stdin or a prompt);
``python -m worker.console enrol-totp --user NAME`` (prints the provisioning URI once)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from worker.console.auth import ROLES, hash_password


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.console")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("hash-password", help="print the scrypt hash for a CONSOLE_USERS_FILE entry")
    s.add_argument("--user", help="also print a users-file entry for this user")
    s.add_argument("--roles", default="viewer", help=f"comma-separated: {', '.join(ROLES)}")
    e = sub.add_parser(
        "enrol-totp",
        help="give a user a new TOTP secret (stored encrypted in Redis); prints its URI once",
    )
    e.add_argument("--user", required=True)
    e.add_argument("--replace", action="store_true", help="replace an enrolled secret (a lost phone)")
    args = parser.parse_args(argv)
    if args.cmd == "enrol-totp":
        return enrol_totp(args.user, replace=args.replace)
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
    if len(password) < 12:
        print("refused: use a password of at least 12 characters", file=sys.stderr)
        return 2
    digest = hash_password(password)
    if args.user:
        roles = [r.strip() for r in args.roles.split(",") if r.strip()]
        bad = set(roles) - set(ROLES)
        if bad or not roles:
            print(f"refused: roles must be of {', '.join(ROLES)}", file=sys.stderr)
            return 2
        import json

        print(json.dumps({args.user: {"password": digest, "roles": roles}}))
    else:
        print(digest)
    return 0


def enrol_totp(user: str, *, replace: bool) -> int:
    """Store a new TOTP secret for ``user`` (REDIS_URL, CONSOLE_SECRET) and print its URI.

    The URI (``otpauth://totp/...``, what the QR code of an authenticator app holds) is
    printed once, here, for the user to add; the secret is never shown again.
    """
    from worker.console.config import load_console_config
    from worker.console.signin import TotpSecrets
    from worker.runtime import get_runtime
    from worker.settings import ConfigError

    if not user or ":" in user or len(user) > 64:
        print("refused: --user must be 1-64 characters without ':'", file=sys.stderr)
        return 2
    try:
        config = load_console_config()
        if len(config.secret) < 16:
            raise ConfigError("CONSOLE_SECRET must be set (the TOTP secrets are encrypted with it)")
        uri = TotpSecrets(get_runtime().redis, config.secret).enrol(user, replace=replace)
    except ConfigError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if uri is None:
        print(f"refused: {user} already has a TOTP secret; --replace gives a new one", file=sys.stderr)
        return 1
    print("Add this to the user's authenticator app now (it is not shown again):", file=sys.stderr)
    print(uri)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
