"""``python -m sandbox``: run the sandbox payout gateway.

Settings are layered: defaults, then ``--config FILE_OR_JSON``, then the environment
(``SANDBOX_PLATFORM_KEY`` / ``SANDBOX_PLATFORM_KEY_FILE``, ``SANDBOX_AUTHORIZATION`` /
``SANDBOX_AUTHORIZATION_FILE``), then the flags given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sandbox.config import (
    CALLBACK_FRAMINGS,
    CALLBACK_SIGNATURES,
    LIST_FILTERS,
    LIST_ORDERS,
    RECORD_SIGNATURES,
    SandboxConfig,
    env_secret,
    load_json_arg,
)


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    # `payouts sandbox` runs this parser too: name the command the way it was typed
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    parser = argparse.ArgumentParser(
        prog="payouts sandbox" if invoked == "payouts" else "python -m sandbox",
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
    add(
        "--callback-framing",
        choices=CALLBACK_FRAMINGS,
        help="notification framing: content-length (default) or chunked",
    )
    add(
        "--callbacks",
        type=_on_off,
        metavar="on|off",
        help="send notifications at all (default on)",
    )
    add(
        "--callback-statuses",
        type=lambda text: [int(part) for part in _names(text)],
        metavar="3,4,5",
        help="final statuses that are notified, e.g. 3 (default 3,4,5)",
    )
    add(
        "--callback-signature",
        choices=CALLBACK_SIGNATURES,
        help="how notifications are signed (default order; spec = no sign_type, as D-NTF)",
    )
    add(
        "--sign-zero-values",
        type=_on_off,
        metavar="on|off",
        help="sign fields whose value is 0 (default on; off drops them, as PHP empty())",
    )
    add(
        "--duplicate-check",
        type=_on_off,
        metavar="on|off",
        help="answer 0014 to a repeated payout_cl_id (default on; off creates a second payout)",
    )
    add(
        "--record-signature",
        choices=RECORD_SIGNATURES,
        help="how list-query records are signed (default order; spec = SPEC 2a, no sign_type)",
    )
    add(
        "--list-filter",
        choices=LIST_FILTERS,
        help="what the list query does with payout_cl_id (default honour)",
    )
    add("--list-order", choices=LIST_ORDERS, help="list records order (default oldest_first)")
    add("--tls-port", type=int, help="also serve the API over TLS on this port (0: free port)")
    add("--tls-dir", help="where the TLS cert.pem/key.pem are reused or generated")
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
