"""Structured logging: structlog for our events, stdlib logging (Celery's) through
the same processors, JSON when not on a terminal, and redaction of secrets and
personal data before anything is rendered.

The library behaves in its host: :func:`get_logger` returns a structlog logger over the
stdlib logger of that name with the library's own processor chain (redaction included),
whatever the host configured -- structlog's global configuration is never read or changed,
so a host that uses structlog keeps its own. Every record reaches stdlib ``logging`` (the
host's handlers, levels and filters); nothing is printed, and the root logger is touched
only by :func:`configure_logging`, which the project's own processes call (worker, beat,
the gunicorn web process, the CLI), never an import or a mounted WSGI app. A record's
message is the redacted event dict; rendered as text (a host's ``%(message)s``) it reads
``event key=value ...``.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import structlog

from worker.payout import ID_RE

#: keys whose values are never written, whatever the event
SECRET_KEYS: Final = frozenset(
    {"sign", "signature", "platform_key", "key", "authorization", "token", "password"}
)
#: keys that hold a person's name -- except a Celery task name (``name`` in Celery's own
#: log context and events is the task's dotted name, e.g. ``payouts.submit``: kept)
NAME_KEYS: Final = frozenset({"name", "beneficiary", "account_name"})
_TASK_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
#: keys holding account numbers: masked to the last 4 digits
NUMBER_KEYS: Final = frozenset({"number", "account_number"})
#: any long run of digits in free text (account numbers) is masked the same way
_DIGITS: Final = re.compile(r"(?<![0-9A-Za-z_.-])[0-9]{9,32}(?![0-9A-Za-z_.-])")
_HEX_SIG: Final = re.compile(r"\b[0-9a-f]{32}(?:[0-9a-f]{32})?\b")
#: a secret or personal field inside a repr/JSON text: ``'name': 'Dewi'`` -> ``'name': '[redacted]'``
_QUOTED_FIELD: Final = re.compile(
    r"""(?P<k>['"](?:name|number|account_number|sign|signature|platform_key|authorization|token|password)['"]\s*[:=]\s*)"""
    r"""(?P<q>['"])(?P<v>(?:\\.|(?!(?P=q)).)*)(?P=q)"""
)

#: keys whose values are identifiers, never personal data: left as they are
_PLAIN_KEYS: Final = frozenset(
    {
        "timestamp",
        "level",
        "logger",
        "task_id",
        "payout_cl_id",
        "payout_id",
        "task",
        "id",
        "from",
        "to",
        "outcome",
    }
)
#: Celery log lines that embed a raw message body (D15): the body is withheld
_BODY_TEMPLATES: Final = (
    "Received and deleted unknown message",
    "Received unregistered task",
    "Received invalid task message",
    "Can't decode message body",
)

_configured = False


def _mask_digits(match: re.Match[str]) -> str:
    text = match.group(0)
    return "*" * (len(text) - 4) + text[-4:]


def _mask_field(match: re.Match[str]) -> str:
    k, q = match.group("k"), match.group("q")
    return f"{k}{q}[redacted]{q}"


def redact_text(text: str) -> str:
    """Mask quoted secret/name/number fields in reprs, digit runs that could be account
    numbers, and hex strings that could be signatures."""
    return _HEX_SIG.sub("[sig]", _DIGITS.sub(_mask_digits, _QUOTED_FIELD.sub(_mask_field, text)))


def _redact_value(key: str, value: Any) -> Any:
    if key in SECRET_KEYS:
        return "[redacted]"
    if key in NAME_KEYS:
        if isinstance(value, str) and _TASK_NAME.fullmatch(value):
            return value  # a Celery task name, not a person's
        return "[redacted]"
    if key in NUMBER_KEYS:
        text = str(value)
        return "*" * max(0, len(text) - 4) + text[-4:]
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value("", v) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide secrets, names and account numbers."""
    for key in list(event_dict):
        if key in _PLAIN_KEYS:
            continue
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def withhold_bodies(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor (foreign records): Celery's decode-error, unknown-task and invalid-task
    lines print the whole message body and headers -- the beneficiary's name and account number
    for a by-name create. Keep the first line, the task id and name; drop the rest (D15)."""
    # the record's args (ProcessorFormatter(pass_foreign_args=True)); never rendered
    args = event_dict.pop("positional_args", None) or ()
    record = event_dict.get("_record")
    msg = getattr(record, "msg", None)
    if not isinstance(msg, str) or not msg.startswith(_BODY_TEMPLATES):
        return event_dict
    headers = next((a for a in args if isinstance(a, Mapping)), {}) if isinstance(args, tuple) else {}
    first = msg.split("\n", 1)[0].split(":", 1)[0].replace(" of type %s", "").rstrip(".")
    event_dict["event"] = first + " (message body withheld)"
    event_dict["body_withheld"] = True
    for src, dst in (("id", "task_id"), ("task", "task")):
        if isinstance(headers, Mapping) and isinstance(headers.get(src), str):
            event_dict[dst] = headers[src][:64]
    exc = event_dict.pop("exc_info", None)
    if exc:
        info = sys.exc_info() if exc is True else exc
        if isinstance(info, tuple) and info[0] is not None:
            event_dict["error"] = info[0].__name__
    return event_dict


def _order_id_from_repr(text: Any, *, positional: bool) -> str | None:
    if not isinstance(text, str) or len(text) > 4096:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if positional and isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    elif not positional and isinstance(value, dict):
        value = value.get("payout_cl_id")
    else:
        return None
    return value if isinstance(value, str) and ID_RE.fullmatch(value) else None


def add_order_id(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: Celery's own task lines (received, succeeded, retry, failure) carry
    the order id only inside ``data.args``/``data.kwargs`` (a repr); lift it to ``payout_cl_id``."""
    if event_dict.get("payout_cl_id"):
        return event_dict
    data = event_dict.get("data")
    if isinstance(data, Mapping):
        found = _order_id_from_repr(data.get("args"), positional=True) or _order_id_from_repr(
            data.get("kwargs"), positional=False
        )
        if found:
            event_dict["payout_cl_id"] = found
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
        withhold_bodies,
        structlog.stdlib.ExtraAdder(),
        add_order_id,
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
        pass_foreign_args=True,
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
    # Python warnings (e.g. Celery's "running as superuser") become JSON lines too
    logging.captureWarnings(True)
    _configured = True


def say_json(msg: str, f: TextIO | None = None, *, logger: str = "celery.worker") -> None:
    """Write one JSON log line straight to ``f`` (stderr by default), without the logging lock:
    for text Celery prints from signal handlers (``worker: Warm shutdown``)."""
    line = {
        "event": redact_text(str(msg)),
        "level": "info",
        "logger": logger,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
    }
    out = f or sys.__stderr__
    if out is None:
        return
    try:
        out.write(json.dumps(line) + "\n")
        out.flush()
    except (OSError, ValueError):
        pass


class Event(dict[str, Any]):
    """A record's message: the redacted event dict (read as such by :func:`configure_logging`'s
    formatter); as text for a host's formatter, ``event key=value ...`` without the metadata."""

    def __str__(self) -> str:
        parts = [str(self.get("event", ""))]
        for k, v in self.items():
            if k in _META_KEYS:
                continue
            text = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
            parts.append(f"{k}={json.dumps(text, ensure_ascii=False) if (' ' in text or not text) else text}")
        return " ".join(parts)


_META_KEYS: Final = frozenset({"event", "timestamp", "level", "logger"})


def _to_record(
    _: Any, method: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Last processor of the library chain: the stdlib call's arguments (as structlog's
    ``wrap_for_formatter``, with an :class:`Event` as the message)."""
    return (Event(event_dict),), {"extra": {"_logger": None, "_name": method}}


def _library_processors() -> list[Any]:
    return [
        structlog.stdlib.filter_by_level,  # the host's levels decide, before any work
        *_shared_processors(),
        structlog.processors.format_exc_info,
        _redact_exception,
        _to_record,
    ]


class _LibraryLogger(structlog.stdlib.BoundLogger):
    """``exception()`` as an error with ``exc_info``: the traceback is rendered (and redacted) by
    the library's chain, so the stdlib record carries no raw ``exc_info`` a host would print."""

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self.error(event, *args, **kw)


def get_logger(name: str = "payouts") -> Any:
    """The library's logger ``name``: stdlib ``logging.getLogger(name)`` behind the library's own
    structlog chain (redaction always applied; structlog's global configuration not used)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_library_processors(),
        wrapper_class=_LibraryLogger,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
