"""The sandbox gateway's settings: one dataclass, loadable from JSON and CLI flags."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from .signature import HMAC_SHA256, MD5, SIGN_TYPES

#: Banks accepted by default (docs/gateway.md §9: the real list is UNCONFIRMED; keep it configurable).
DEFAULT_BANKS: Final = ("BCA", "BNI", "BRI", "MANDIRI", "CIMB", "PERMATA", "DANAMON", "BSI")

#: Seconds to wait before each retry of a notification: with the first attempt that is
#: 10 attempts within one hour (docs/gateway.md §5; the real intervals are UNCONFIRMED).
DEFAULT_CALLBACK_DELAYS_S: Final = (15.0, 30.0, 60.0, 120.0, 300.0, 300.0, 600.0, 900.0, 1200.0)

#: Reported as the balance when no balance is configured (unlimited): IDR 10 billion.
UNLIMITED_BALANCE_DISPLAY_MINOR: Final = 1_000_000_000_000

#: Every HTTP answer of the sandbox (gateway API and admin, plain and TLS) carries this
#: header with the value ``"1"``, and so does every notification it posts: the worker can
#: refuse to run a production configuration against it.
SANDBOX_HEADER: Final = "X-Payout-Sandbox"

NUMBER_STYLES: Final = ("int", "string")
CALLBACK_FORMATS: Final = ("json", "form")
#: How a notification body is framed: ``Content-Length`` (default) or
#: ``Transfer-Encoding: chunked`` with no ``Content-Length`` (docs/gateway.md §11.7: callback framing).
CALLBACK_FRAMINGS: Final = ("content-length", "chunked")
#: How list-query records are signed (docs/gateway.md §2a, §11.3):
#: ``order`` (default): in the order's algorithm, ``sign_type`` present on HMAC records;
#: ``spec``: exactly the docs/gateway.md §2a fields, no ``sign_type``; ``sign`` in the order's algorithm
#: over every other field of the record as sent;
#: ``spec_md5``: no ``sign_type``; ``sign`` always MD5 (legacy) whatever the order's algorithm;
#: ``unverifiable``: no ``sign_type``; a ``sign`` no merchant key reproduces (as the gateway's
#: doc examples, which could not be reproduced).
RECORD_SIGNATURES: Final = ("order", "spec", "spec_md5", "unverifiable")
#: How notifications are signed (docs/gateway.md §5): ``order`` (default): in the order's algorithm,
#: ``sign_type`` present for HMAC orders (K-NTF); ``spec``: D-NTF's field list, no
#: ``sign_type`` even for HMAC orders, ``sign`` in the order's algorithm over every other
#: field; ``spec_md5``: no ``sign_type``, ``sign`` always MD5.
CALLBACK_SIGNATURES: Final = ("order", "spec", "spec_md5")
#: What the list query does with its ``payout_cl_id`` filter (docs/gateway.md §2a, §11):
#: ``honour`` (default); ``ignore``: as if it was not sent (other filters, offset and limit
#: honoured); ``ignore_all``: every filter ignored (``payout_cl_id``, ``payout_id``, the
#: ``create_time`` range), offset and limit honoured; ``prefix``: records whose
#: ``payout_cl_id`` starts with the value; ``contains``: records whose ``payout_cl_id``
#: contains it (SQL ``LIKE '%v%'``).
LIST_FILTERS: Final = ("honour", "ignore", "ignore_all", "prefix", "contains")
#: Order of list records: by ``create_time`` then creation, oldest or newest first.
LIST_ORDERS: Final = ("oldest_first", "newest_first")
#: Settings that ``PATCH /_sandbox/settings`` may change while the sandbox runs.
RUNTIME_SETTINGS: Final = (
    "duplicate_check",
    "record_signature",
    "list_filter",
    "list_order",
    "callbacks",
    "callback_framing",
    "callback_statuses",
    "callback_signature",
    "callback_format",
    "sign_zero_values",
    "sign_types",
    "banks",
    "min_amount_minor",
    "max_amount_minor",
    "fee_minor",
    "number_style",
    "pending_s",
    "processing_s",
    "failure_ratio",
)


@dataclass
class SandboxConfig:
    """Everything the sandbox gateway can be told at start.

    Money fields are integers of minor units (IDR x 100). Times are seconds.
    ``faults`` is a list of fault rules (see :mod:`worker.sandbox.faults`).
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
    #: Notification body: JSON (documented) or form-encoded (seen at one integrator, docs/gateway.md §5).
    callback_format: str = "json"
    faults: list[dict[str, Any]] = field(default_factory=list)
    #: Merchant balance; ``None`` is unlimited (never 0018).
    balance_minor: int | None = None
    fee_minor: int = 0
    #: How amounts and fees are written in answers: JSON numbers or digit strings.
    number_style: str = "int"
    #: Answer ``0014`` to a create whose ``payout_cl_id`` already has a payout. Off: a
    #: second create makes a second payout with a new ``payout_id`` (docs/gateway.md §11.8).
    duplicate_check: bool = True
    #: See :data:`RECORD_SIGNATURES`.
    record_signature: str = "order"
    #: See :data:`LIST_FILTERS` and :data:`LIST_ORDERS`.
    list_filter: str = "honour"
    list_order: str = "oldest_first"
    #: Send notifications at all. Off: nothing is posted to any ``notify_url`` (orders that
    #: finish meanwhile are never notified, even when turned on again).
    callbacks: bool = True
    #: See :data:`CALLBACK_FRAMINGS`.
    callback_framing: str = "content-length"
    #: Final statuses that are notified: ``(3,)`` is a gateway that notifies successes only
    #: (docs/gateway.md §5, K-NTF-old: "do not rely on receiving failure callbacks").
    callback_statuses: tuple[int, ...] = (3, 4, 5)
    #: See :data:`CALLBACK_SIGNATURES`.
    callback_signature: str = "order"
    #: Sign fields whose value is ``0`` / ``"0"`` (docs/gateway.md §4.1 step 3, recommended). False:
    #: they are left out of every signature the sandbox makes (callbacks, list records) and
    #: checks (creates), as PHP's ``empty()`` would (docs/gateway.md §11.5, UNCONFIRMED).
    sign_zero_values: bool = True
    #: A second listener serving the same API over TLS with a self-signed certificate:
    #: ``None`` = none, ``0`` = a free port.
    tls_port: int | None = None
    #: Where the TLS certificate and key live (``cert.pem``, ``key.pem``): reused when both
    #: exist, generated there otherwise. ``None``: generated in a temporary directory that
    #: is removed at exit.
    tls_dir: str | None = None
    payout_id_prefix: str = "SBXPOT"
    platform_channel_id: str = "PC0001"
    backlog: int = 4096
    quiet: bool = False

    def __post_init__(self) -> None:
        self.sign_types = tuple(self.sign_types)
        self.banks = tuple(self.banks)
        self.callback_delays_s = tuple(float(d) for d in self.callback_delays_s)
        self.callback_statuses = tuple(self.callback_statuses)
        self.faults = list(self.faults)
        self.validate()

    def validate(self) -> None:  # noqa: C901 — one flat check per setting, each naming its field
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
        for name, allowed in (
            ("callback_framing", CALLBACK_FRAMINGS),
            ("callback_signature", CALLBACK_SIGNATURES),
            ("record_signature", RECORD_SIGNATURES),
            ("list_filter", LIST_FILTERS),
            ("list_order", LIST_ORDERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if any(
            isinstance(s, bool) or not isinstance(s, int) or s not in (3, 4, 5)
            for s in self.callback_statuses
        ):
            raise ValueError("callback_statuses must be final statuses among 3, 4 and 5")
        for name in ("duplicate_check", "callbacks", "sign_zero_values"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        if self.tls_port is not None and not 0 <= self.tls_port <= 65535:
            raise ValueError(f"tls_port must be in [0, 65535] or null, got {self.tls_port}")
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

    def runtime_settings(self) -> dict[str, Any]:
        """The settings that may change while running (:data:`RUNTIME_SETTINGS`), as JSON."""
        data = self.to_dict()
        return {name: data[name] for name in RUNTIME_SETTINGS}

    def with_runtime_changes(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """A validated copy with some :data:`RUNTIME_SETTINGS` changed (``ValueError``
        naming an unknown or read-only key, or a bad value)."""
        if not isinstance(changes, Mapping):
            raise ValueError("settings must be a JSON object")
        unknown = sorted(set(changes) - set(RUNTIME_SETTINGS))
        if unknown:
            raise ValueError(
                f"not a runtime setting: {unknown}; runtime settings are {list(RUNTIME_SETTINGS)}"
            )
        try:
            return replace(self, **dict(changes))
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """JSON-ready fields; the key and token only when ``secrets`` is true."""
        data = asdict(self)
        data["sign_types"] = list(self.sign_types)
        data["banks"] = list(self.banks)
        data["callback_delays_s"] = list(self.callback_delays_s)
        data["callback_statuses"] = list(self.callback_statuses)
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
