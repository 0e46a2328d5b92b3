"""Structured logging: structlog for our events, stdlib logging (Celery's) through
the same processors, JSON when not on a terminal, and redaction of secrets and
personal data before anything is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

#: keys whose values are never written, whatever the event
SECRET_KEYS: Final = frozenset(
    {"sign", "signature", "platform_key", "key", "authorization", "token", "password", "name"}
)
#: keys holding account numbers: masked to the last 4 digits
NUMBER_KEYS: Final = frozenset({"number", "account_number"})
#: any long run of digits in free text (account numbers) is masked the same way
_DIGITS: Final = re.compile(r"(?<![0-9A-Za-z_.-])[0-9]{9,32}(?![0-9A-Za-z_.-])")
_HEX_SIG: Final = re.compile(r"\b[0-9a-f]{32}(?:[0-9a-f]{32})?\b")

#: keys whose values are identifiers, never personal data: left as they are
_PLAIN_KEYS: Final = frozenset(
    {"timestamp", "level", "logger", "task_id", "payout_cl_id", "payout_id", "task", "from", "to", "outcome"}
)

_configured = False


def _mask_digits(match: re.Match[str]) -> str:
    text = match.group(0)
    return "*" * (len(text) - 4) + text[-4:]


def redact_text(text: str) -> str:
    """Mask digit runs that could be account numbers and hex strings that could be signatures."""
    return _HEX_SIG.sub("[sig]", _DIGITS.sub(_mask_digits, text))


def _redact_value(key: str, value: Any) -> Any:
    if key in SECRET_KEYS:
        return "[redacted]"
    if key in NUMBER_KEYS:
        text = str(value)
        return "*" * max(0, len(text) - 4) + text[-4:]
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide secrets, names and account numbers."""
    for key in list(event_dict):
        if key in _PLAIN_KEYS:
            continue
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def _redact_exception(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask the traceback text ``format_exc_info`` just rendered."""
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = redact_text(exc)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        redact,
    ]


def configure_logging(fmt: str = "json", level: str = "INFO", *, force: bool = False) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    global _configured
    if _configured and not force:
        return
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            # every field was redacted before it got here (the structlog chain and
            # foreign_pre_chain both end with `redact`): only the traceback text is new
            _redact_exception,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs full URLs with query strings at DEBUG; keep it quiet
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    _configured = True


def get_logger(name: str = "payouts") -> Any:
    return structlog.stdlib.get_logger(name)
