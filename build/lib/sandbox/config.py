"""The sandbox gateway's settings: one dataclass, loadable from JSON and CLI flags."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from worker.signing import HMAC_SHA256, MD5, SIGN_TYPES

#: Banks accepted by default (SPEC §9: the real list is UNCONFIRMED; keep it configurable).
DEFAULT_BANKS: Final = ("BCA", "BNI", "BRI", "MANDIRI", "CIMB", "PERMATA", "DANAMON", "BSI")

#: Seconds to wait before each retry of a notification: with the first attempt that is
#: 10 attempts within one hour (SPEC §5; the real intervals are UNCONFIRMED).
DEFAULT_CALLBACK_DELAYS_S: Final = (15.0, 30.0, 60.0, 120.0, 300.0, 300.0, 600.0, 900.0, 1200.0)

#: Reported as the balance when no balance is configured (unlimited): IDR 10 billion.
UNLIMITED_BALANCE_DISPLAY_MINOR: Final = 1_000_000_000_000

NUMBER_STYLES: Final = ("int", "string")
CALLBACK_FORMATS: Final = ("json", "form")


@dataclass
class SandboxConfig:
    """Everything the sandbox gateway can be told at start.

    Money fields are integers of minor units (IDR x 100). Times are seconds.
    ``faults`` is a list of fault rules (see :mod:`sandbox.faults`).
    """

    host: str = "127.0.0.1"
    #: 0 means "any free port"; the listening line names the port chosen.
    port: int = 8099
    platform_id: str = "PF0001"
    platform_key: str = field(default="sandbox-secret-key", repr=False)
    #: The token expected in the ``Authorization`` header of queries (no ``Bearer``).
    authorization: str = field(default="sandbox-token", repr=False)
    #: Signature algorithms accepted on create; orders are answered in their own.
    sign_types: tuple[str, ...] = (HMAC_SHA256, MD5)
    banks: tuple[str, ...] = DEFAULT_BANKS
    min_amount_minor: int = 1_000_000
    max_amount_minor: int = 9_999_999_999
    #: Seconds an order stays at status 1 (pending), then at 2 (processing).
    pending_s: float = 1.0
    processing_s: float = 3.0
    #: Share of orders that end failed (status 4 or 5, half each) instead of 3.
    failure_ratio: float = 0.1
    seed: int = 0
    callback_delays_s: tuple[float, ...] = DEFAULT_CALLBACK_DELAYS_S
    callback_timeout_s: float = 10.0
    #: Notification body: JSON (documented) or form-encoded (seen at one integrator, SPEC §5).
    callback_format: str = "json"
    faults: list[dict[str, Any]] = field(default_factory=list)
    #: Merchant balance; ``None`` is unlimited (never 0018).
    balance_minor: int | None = None
    fee_minor: int = 0
    #: How amounts and fees are written in answers: JSON numbers or digit strings.
    number_style: str = "int"
    payout_id_prefix: str = "SBXPOT"
    platform_channel_id: str = "PC0001"
    backlog: int = 4096
    quiet: bool = False

    def __post_init__(self) -> None:
        self.sign_types = tuple(self.sign_types)
        self.banks = tuple(self.banks)
        self.callback_delays_s = tuple(float(d) for d in self.callback_delays_s)
        self.faults = list(self.faults)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        bad = [t for t in self.sign_types if t not in SIGN_TYPES]
        if not self.sign_types or bad:
            raise ValueError(f"sign_types must be a non-empty subset of {sorted(SIGN_TYPES)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if not 0.0 <= self.failure_ratio <= 1.0:
            raise ValueError(f"failure_ratio must be in [0, 1], got {self.failure_ratio}")
        for name in ("pending_s", "processing_s", "callback_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if any(d < 0 for d in self.callback_delays_s):
            raise ValueError("callback_delays_s must all be >= 0")
        if not 0 < self.min_amount_minor <= self.max_amount_minor:
            raise ValueError("need 0 < min_amount_minor <= max_amount_minor")
        if self.balance_minor is not None and self.balance_minor < 0:
            raise ValueError("balance_minor must be >= 0 or null")
        if self.fee_minor < 0:
            raise ValueError("fee_minor must be >= 0")
        if self.callback_format not in CALLBACK_FORMATS:
            raise ValueError(f"callback_format must be one of {CALLBACK_FORMATS}")
        if self.number_style not in NUMBER_STYLES:
            raise ValueError(f"number_style must be one of {NUMBER_STYLES}")
        if not self.platform_key:
            raise ValueError("platform_key must not be empty")

    # ------------------------------------------------------------- loading

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxConfig:
        """Build from a JSON object; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown sandbox config key(s): {sorted(unknown)}")
        return cls(**dict(data))

    def with_overrides(self, **overrides: Any) -> SandboxConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **overrides)

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """JSON-ready fields; the key and token only when ``secrets`` is true."""
        data = asdict(self)
        data["sign_types"] = list(self.sign_types)
        data["banks"] = list(self.banks)
        data["callback_delays_s"] = list(self.callback_delays_s)
        if not secrets:
            data.pop("platform_key")
            data.pop("authorization")
        return data


def load_json_arg(value: str) -> Any:
    """Parse ``value`` as inline JSON when it looks like JSON, else read it as a file."""
    text = value.strip()
    if text.startswith(("{", "[")):
        return json.loads(text)
    return json.loads(Path(value).read_text(encoding="utf-8"))


def env_secret(name: str) -> str | None:
    """``$NAME``, or the content of the file named by ``$NAME_FILE``."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return None
