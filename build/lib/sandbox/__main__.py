"""``python -m sandbox``: run the sandbox payout gateway.

Settings are layered: defaults, then ``--config FILE_OR_JSON``, then the environment
(``SANDBOX_PLATFORM_KEY`` / ``SANDBOX_PLATFORM_KEY_FILE``, ``SANDBOX_AUTHORIZATION`` /
``SANDBOX_AUTHORIZATION_FILE``), then the flags given.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sandbox.config import SandboxConfig, env_secret, load_json_arg


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="A stand-in for the IDR payout gateway, with fault injection and a ledger.",
    )
    add = parser.add_argument
    add("--config", metavar="FILE_OR_JSON", help="JSON object of SandboxConfig fields")
    add("--host", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, help="port to bind; 0 picks a free one (default 8099)")
    add("--platform-id", help="merchant id (default PF0001)")
    add("--platform-key", help="merchant key (prefer env SANDBOX_PLATFORM_KEY[_FILE])")
    add("--authorization", help="query token (or env SANDBOX_AUTHORIZATION[_FILE])")
    add("--sign-types", type=_names, help="accepted algorithms, e.g. HMAC-SHA256,MD5")
    add("--banks", type=_names, help="accepted bank_name values, comma separated")
    add("--min-amount", type=int, dest="min_amount_minor", help="minimum amount, minor units")
    add("--max-amount", type=int, dest="max_amount_minor", help="maximum amount, minor units")
    add("--balance", type=int, dest="balance_minor", help="merchant balance (default unlimited)")
    add("--fee", type=int, dest="fee_minor", help="fee per payout, minor units (default 0)")
    add("--number-style", choices=("int", "string"), help="amounts as JSON numbers or strings")
    add("--seed", type=int, help="seed of every random choice (default 0)")
    add("--pending-s", type=float, help="seconds at status 1 (default 1)")
    add("--processing-s", type=float, help="seconds at status 2 (default 3)")
    add("--failure-ratio", type=float, help="share of orders ending in 4/5 (default 0.1)")
    add(
        "--callback-delays",
        type=_floats,
        dest="callback_delays_s",
        help="seconds before each callback retry, comma separated",
    )
    add("--callback-timeout-s", type=float, help="timeout of one callback attempt")
    add("--callback-format", choices=("json", "form"), help="notification body (default json)")
    add("--faults", metavar="FILE_OR_JSON", help="JSON list of fault rules (see sandbox/README.md)")
    add("--backlog", type=int, help="listen backlog (default 4096)")
    add("--quiet", action="store_true", default=None, help="log warnings only")
    return parser


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """Layer defaults, --config, the environment and the flags into one config."""
    data: dict[str, Any] = {}
    if args.config:
        loaded = load_json_arg(args.config)
        if not isinstance(loaded, dict):
            raise ValueError("--config must be a JSON object")
        data.update(loaded)
    for name, env in (
        ("platform_key", "SANDBOX_PLATFORM_KEY"),
        ("authorization", "SANDBOX_AUTHORIZATION"),
    ):
        value = env_secret(env)
        if value:
            data[name] = value
    if args.faults:
        faults = load_json_arg(args.faults)
        data["faults"] = faults.get("rules", []) if isinstance(faults, dict) else faults
    for name, value in vars(args).items():
        if name not in ("config", "faults") and value is not None:
            data[name] = value
    return SandboxConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until interrupted; 2 on a bad setting."""
    from sandbox.faults import FaultBook, FaultRuleError
    from sandbox.server import run

    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        FaultBook(config.seed).parse_all(config.faults)
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as exc:
        kind = "fault rule" if isinstance(exc, FaultRuleError) else "setting"
        print(f"sandbox: bad {kind}: {exc}", file=sys.stderr)
        return 2
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
