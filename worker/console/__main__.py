"""``python -m worker.console hash-password`` (reads the password from stdin or a prompt)."""

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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
