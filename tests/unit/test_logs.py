"""worker/logs.py: redaction, the library's loggers (stdlib records whatever the host configured),
and the JSON output of the project's own processes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from worker import logs

NAME = "Budi Santoso"
NUMBER = "1234567890123"


class Collect(logging.Handler):
    """A host's handler: keeps the records and their text under a plain formatter."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def host() -> Iterator[Collect]:
    """A host that configured only the `payouts` logger (DEBUG), not the root one."""
    handler = Collect()
    lib = logging.getLogger("payouts")
    lib.addHandler(handler)
    lib.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        lib.removeHandler(handler)
        lib.setLevel(logging.NOTSET)


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logs._configured = False


def test_redact_text_masks_numbers_signatures_and_quoted_fields() -> None:
    """Digit runs keep their last 4, hex signatures go, quoted personal fields are withheld."""
    # when
    out = logs.redact_text(f"acct {NUMBER} sig {'ab' * 32} {{'name': '{NAME}', 'number': '12'}}")
    # then
    assert NUMBER not in out and "*********0123" in out
    assert "[sig]" in out and "ab" * 32 not in out
    assert NAME not in out and "'name': '[redacted]'" in out


def test_redact_processor_by_key() -> None:
    """Secrets and names withheld, account numbers masked, identifiers and task names kept."""
    # given
    event = {
        "event": "x",
        "platform_key": "k",
        "authorization": "t",
        "name": NAME,
        "number": NUMBER,
        "payout_cl_id": "WD-1",
        "data": {"name": "payouts.submit", "args": [NUMBER]},
    }
    # when
    out = logs.redact(None, "info", dict(event))
    # then
    assert out["platform_key"] == out["authorization"] == out["name"] == "[redacted]"
    assert out["number"] == "*********0123"
    assert out["payout_cl_id"] == "WD-1"
    assert out["data"] == {"name": "payouts.submit", "args": ["*********0123"]}


def test_celery_body_lines_are_withheld() -> None:
    """Celery's unknown-message line keeps its first words and the task id, not the body (D15)."""
    # given
    record = logging.LogRecord(
        "celery", logging.ERROR, "", 0, "Received unregistered task of type %r.\nbody: %s", (), None
    )
    event = {"event": "...", "_record": record, "positional_args": ({"id": "t-1", "task": "payouts.create"},)}
    # when
    out = logs.withhold_bodies(None, "error", event)
    # then
    assert out["event"] == "Received unregistered task of type %r (message body withheld)"
    assert out["task_id"] == "t-1" and out["body_withheld"] is True


def test_order_id_is_lifted_from_celery_args() -> None:
    """A Celery task line's repr'd args give the order id its own field."""
    # when
    out = logs.add_order_id(None, "info", {"event": "Task received", "data": {"args": "('WD-9',)"}})
    # then
    assert out["payout_cl_id"] == "WD-9"


def test_library_records_reach_the_hosts_handlers_redacted(host: Collect) -> None:
    """A library log call is a stdlib record on the logger of its name: through the host's
    handler and formatter, as `event key=value`, with the personal data redacted."""
    # given
    root = logging.getLogger()
    before = (root.handlers[:], root.level, structlog.is_configured())
    # when
    logs.get_logger("payouts.probe").warning(
        "probe", payout_cl_id="WD-1", name=NAME, number=NUMBER, note="two words"
    )
    # then
    assert len(host.records) == 1
    assert host.lines[0] == (
        'WARNING payouts.probe probe payout_cl_id=WD-1 name=[redacted] number=*********0123 note="two words"'
    )
    assert isinstance(host.records[0].msg, logs.Event)
    assert (root.handlers[:], root.level, structlog.is_configured()) == before


def test_the_hosts_levels_decide(host: Collect) -> None:
    """The host's level on the library's logger filters its records before any processing."""
    # given
    logging.getLogger("payouts").setLevel(logging.WARNING)
    log = logs.get_logger("payouts.level")
    # when
    log.info("dropped")
    log.error("kept")
    # then
    assert [r.getMessage() for r in host.records] == ["kept"]


def test_exceptions_are_rendered_and_redacted(host: Collect) -> None:
    """An exception's traceback is text in the record, its personal data masked."""
    # when
    try:
        raise ValueError(f"bad account {NUMBER}")
    except ValueError:
        logs.get_logger("payouts.exc").exception("failed")
    # then
    text = host.lines[0]
    assert "ValueError: bad account *********0123" in text and NUMBER not in text
    assert host.records[0].exc_info is None  # nothing left for a host formatter to print raw


def test_configure_logging_renders_json_for_library_and_foreign_records(
    root_restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The project's own processes: one JSON object per line, on stderr, for the library's
    records and for foreign (Celery, gunicorn) ones alike; nothing on stdout."""
    # given
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr("sys.stdout", out)
    logs.configure_logging("json", "INFO", force=True)
    # when
    logs.get_logger("payouts.probe").info("probe", payout_cl_id="WD-2", number=NUMBER)
    logging.getLogger("celery.worker").warning("foreign %s", NUMBER)
    # then
    lines = [json.loads(line) for line in err.getvalue().splitlines()]
    assert out.getvalue() == ""
    assert lines[0]["event"] == "probe" and lines[0]["payout_cl_id"] == "WD-2"
    assert lines[0]["number"] == "*********0123" and lines[0]["logger"] == "payouts.probe"
    assert lines[0]["level"] == "info" and lines[0]["timestamp"].endswith("Z")
    assert lines[1]["event"] == "foreign *********0123" and lines[1]["logger"] == "celery.worker"


def test_event_text_form() -> None:
    """An Event reads as `event key=value`, metadata left out, odd values quoted."""
    # given
    ev: Any = logs.Event(event="e", level="info", timestamp="t", logger="l", n=3, empty="", d={"a": 1})
    # then
    assert str(ev) == 'e n=3 empty="" d="{\\"a\\": 1}"'
