"""The console's actions as one table: action -> role, form fields, desk function.

The console (:mod:`worker.console.app`) runs every row the same way: the guard (role,
read-only switch, same origin, CSRF), the form's fields, the order in the state the form
expects (409 otherwise), the checks named in the row, then the desk function -- the same
one the ``payouts`` CLI calls. No row holds a rule of its own about orders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from worker.desk import approval, order_actions, pausing
from worker.runtime import Runtime
from worker.states import State


@dataclass(frozen=True)
class Form:
    """What an action read from its form, checked, for the desk function."""

    by: str
    payout_cl_id: str = ""
    expect: State | None = None
    note: str = ""
    #: the value of a choice field (resolve's target state)
    choice: str = ""
    #: the bank of a scope action (None = every bank)
    bank: str | None = None


@dataclass(frozen=True)
class Action:
    """One row: ``permission`` (auth.PERMISSIONS), the note field and whether it is required,
    the allowed values of the ``state`` field, the console's checks before the call
    ("maker": maker-checker; "step_up": a fresh TOTP code above the threshold), and the desk
    function. ``on`` is "order" (names an order by ``payout_cl_id`` + ``expect_state``) or
    "scope" (names a bank, or every bank)."""

    permission: str
    desk: Callable[[Runtime, Form], object]
    on: str = "order"
    note: str = ""
    note_required: bool = False
    choices: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()


def _expect(f: Form) -> State:
    assert f.expect is not None
    return f.expect


# fmt: off
ACTIONS: Final[Mapping[str, Action]] = {
    "resolve": Action(
        "resolve", lambda rt, f: order_actions.resolve(rt, f.payout_cl_id, State(f.choice), f.note, by=f.by),
        note="note", note_required=True, choices=("succeeded", "failed"),
    ),
    "back_to_polling": Action(
        "back_to_polling",
        lambda rt, f: order_actions.back_to_polling(rt, f.payout_cl_id, by=f.by, note=f.note),
        note="note", note_required=True,
    ),
    "resubmit": Action(
        "resubmit", lambda rt, f: order_actions.resubmit(rt, f.payout_cl_id, note=f.note or None, by=f.by),
        note="note",
    ),
    "approve": Action(
        "approve", lambda rt, f: approval.approve(rt, f.payout_cl_id, by=f.by, expect_state=_expect(f)),
        checks=("maker", "step_up"),
    ),
    "reject": Action(
        "reject",
        lambda rt, f: approval.reject(rt, f.payout_cl_id, by=f.by, note=f.note, expect_state=_expect(f)),
        note="reason", note_required=True,
    ),
    "pause": Action(
        "pause", lambda rt, f: pausing.pause(rt, reason=f.note, by=f.by, bank=f.bank),
        on="scope", note="reason", note_required=True,
    ),
    "resume": Action(
        "resume", lambda rt, f: pausing.resume(rt, by=f.by, bank=f.bank),
        on="scope",
    ),
}
# fmt: on

#: every action a POST may name (``/do/<name>``): the table's, and the bulk approval (each
#: selected order through the "approve" row, none above the step-up amount)
NAMES: Final = frozenset({*ACTIONS, "bulk_approve"})
