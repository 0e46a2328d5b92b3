"""The one seam through which an order moves: :func:`move`.

Every state change of the product goes through here, beside the store's atomic
transition (``transition.lua``, where the rules live: allowed edges, the loss-epoch
guard, final-means-final, the approval deadline, "a result is owed"). This module adds
what every move needs on the Python side, so no entry point can forget it:

* the one ``payout.transition`` log event per applied state change;
* a move into a final state is handed to result delivery (:func:`worker.results.deliver`:
  RESULT_TASK, at least once; the flag itself is written by the Lua step).

Field-only updates (``target=None``) and quiet moves (counted, not logged, D20) write
no history and log nothing here.
"""

from __future__ import annotations

from typing import Any

from worker.errors import InvalidTransition
from worker.logs import get_logger
from worker.results import deliver
from worker.runtime import Runtime
from worker.states import FINAL, State

log = get_logger("payouts.moves")

#: moves an operator should notice in the logs (warning rather than info)
_LOUD: frozenset[State] = frozenset({State.REVIEW, State.UNCONFIRMED})


def moved(rt: Runtime, payout_cl_id: str, prev: State, target: State, reason: str, **log_fields: Any) -> None:
    """What follows an applied move: the log event, and result delivery for a final state."""
    if prev is target:
        return
    emit = log.warning if target in _LOUD else log.info
    emit(
        "payout.transition",
        payout_cl_id=payout_cl_id,
        **{"from": prev.value, "to": target.value},
        reason=reason[:200],
        **log_fields,
    )
    if target in FINAL:
        deliver(rt, payout_cl_id)


def move(
    rt: Runtime,
    payout_cl_id: str,
    target: State | None,
    *,
    reason: str,
    log_fields: dict[str, Any] | None = None,
    **kw: Any,
) -> State | None:
    """:meth:`worker.store.OrderStore.transition`, then :func:`moved` when a state changed.

    Returns the previous state when applied, None when refused (as the store does).
    """
    prev = rt.store.transition(payout_cl_id, target, reason=reason, **kw)
    if prev is not None and target is not None and not kw.get("quiet"):
        moved(rt, payout_cl_id, prev, target, reason, **(log_fields or {}))
    return prev


def move_or_raise(rt: Runtime, payout_cl_id: str, target: State, *, reason: str, **kw: Any) -> State:
    """Like :func:`move`, raising InvalidTransition when refused."""
    prev = move(rt, payout_cl_id, target, reason=reason, **kw)
    if prev is None:
        current = rt.store.state_of(payout_cl_id)
        raise InvalidTransition(payout_cl_id, current.value if current else None, target)
    return prev
