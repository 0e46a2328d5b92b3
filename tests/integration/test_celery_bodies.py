"""D15: Celery logs a message's raw body when it cannot decode it or does not know its task;
with a by-name create that body is the beneficiary's name and account number."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import Stack
from worker.celery_app import app
from worker.celeryconf import CREATE_TASK
from worker.harness.processes import wait_for

NAME = "Rina Wulandari"
NUMBER = "9988776655443322"


def fields(pid: str) -> dict[str, Any]:
    return {"payout_cl_id": pid, "amount": 1_500_000, "bank_name": "BCA", "name": NAME, "number": NUMBER}


def test_unknown_task_and_undecodable_bodies_are_withheld(stack: Stack) -> None:
    """A misspelled task name and a pickled create are logged as one JSON line each, with the
    task id and name but neither the body nor the headers' reprs (no name, no account number)."""
    # given: a running worker (the stack fixture)
    # when
    app.send_task("payouts.creat", kwargs=fields("typo-1"))
    app.send_task(CREATE_TASK, kwargs=fields("pickled-1"), serializer="pickle")

    def withheld() -> list[dict[str, Any]]:
        found = [d for d in stack.json_logs() if d.get("body_withheld")]
        return found if len(found) >= 2 else []

    lines = wait_for(withheld, 30, interval_s=0.3, what="two withheld-body lines")
    # then
    events = sorted(d["event"] for d in lines)
    assert events[1] == "Received unregistered task (message body withheld)", events
    # a pickled body: ContentDisallowed, reported as an invalid (or undecodable) message
    assert events[0] in (
        "Received invalid task message (message body withheld)",
        "Can't decode message body (message body withheld)",
    ), events
    unknown = next(d for d in lines if d["event"].startswith("Received unregistered"))
    assert unknown["task"] == "payouts.creat" and unknown["task_id"]
    text = stack.logs()
    assert NAME not in text and "Wulandari" not in text
    assert NUMBER not in text and NUMBER[:-4] not in text
    for line in text.splitlines():
        assert isinstance(json.loads(line), dict), line
