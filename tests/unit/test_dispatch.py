"""The runtime's dispatcher (D63): what the Celery-backed one publishes, and that a runtime
publishes only through the dispatcher it was given."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import RecordingDispatcher
from worker.celery_app import CeleryDispatcher
from worker.celeryconf import SUBMIT_TASK
from worker.dispatch import Dispatcher


class FakeApp:
    """Stands in for the Celery app: records each ``send_task`` call."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append((name, options))


def test_a_submit_carries_only_the_order_id() -> None:
    """submit() sends the submit task by name with the order id as its one argument."""
    # given
    app = FakeApp()
    dispatch: Dispatcher = CeleryDispatcher(app, "webapp.results")  # type: ignore[arg-type]
    # when
    dispatch.submit("WD-1")
    # then
    assert app.sent == [(SUBMIT_TASK, {"args": ["WD-1"]})]


def test_a_result_goes_to_the_result_queue_as_keyword_arguments() -> None:
    """result() sends the web app's task to RESULT_QUEUE with the payload as kwargs (a copy)."""
    # given
    app = FakeApp()
    payload = {"payout_cl_id": "WD-1", "state": "succeeded"}
    # when
    CeleryDispatcher(app, "webapp.results").result("webapp.payout_result", payload)  # type: ignore[arg-type]
    # then
    ((name, options),) = app.sent
    assert name == "webapp.payout_result"
    assert options == {"kwargs": payload, "queue": "webapp.results"} and options["kwargs"] is not payload


def test_the_recording_dispatcher_is_a_dispatcher_that_can_fail() -> None:
    """The tests' recorder records both messages and raises on each while broken."""
    # given
    recorder: Dispatcher = RecordingDispatcher()
    # when
    recorder.submit("WD-2")
    recorder.result("t", {"a": 1})
    # then
    assert isinstance(recorder, RecordingDispatcher)
    assert recorder.submits == ["WD-2"] and recorder.results == [("t", {"a": 1})]
    recorder.broken = True
    with pytest.raises(ConnectionError):
        recorder.submit("WD-3")
    assert recorder.submits == ["WD-2"]
