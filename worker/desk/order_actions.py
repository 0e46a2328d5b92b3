"""Order actions of the operator desk: check, resolve, resubmit, back to polling.

Shared by its two front ends, the ``payouts`` CLI (``worker.ops``) and the console (``worker.console``).
"""

from __future__ import annotations

import time

from worker.checks import CheckStatus, check_order, gateway_evidence
from worker.errors import InvalidTransition, OrderNotFound, OverrideRequired, PayoutError
from worker.gateway import QueryKind
from worker.moves import move_or_raise
from worker.runtime import Runtime
from worker.states import State
from worker.store import NOW


def resolve(rt: Runtime, payout_cl_id: str, state: State, note: str, *, by: str = "cli") -> None:
    """Close an order in review as succeeded or failed, with the operator's note.

    The web app hears about it like any other final state (RESULT_TASK, at least once).
    """
    if state not in (State.SUCCEEDED, State.FAILED):
        raise PayoutError("resolve takes --state succeeded or failed")
    if not note.strip():
        raise PayoutError("resolve needs --note saying why")
    by = by.strip()[:64] or "cli"
    move_or_raise(
        rt,
        payout_cl_id,
        state,
        sources={State.REVIEW},
        reason=f"operator {by}: {note.strip()[:150]}",
        fields={"resolved_by": by, "resolution_note": note.strip()[:500]},
    )


def resubmit(
    rt: Runtime,
    payout_cl_id: str,
    *,
    force: bool = False,
    note: str | None = None,
    by: str = "cli",
    approved_by: str | None = None,
) -> None:
    """Send a review/rejected order again, only on evidence the gateway never had it.

    Refused when the gateway's query finds the order (or fails, or ignores its filter),
    and when we hold proof it was created there (a ``payout_id``, or a history entry
    reaching accepted/succeeded/failed) -- unless ``force`` with a ``note``, both
    recorded in the history entry of the same atomic transition (D3).

    Final means final (D38): an order whose final state was published to the web app (a
    checker's or the approval deadline's ``rejected`` included) is sent again only with
    ``force``, a ``note`` and ``approved_by``, a second person other than ``by``; the
    store's transition enforces it (transition.lua), so no other path can skip it.
    """
    note = (note or "").strip()
    approved_by = (approved_by or "").strip()[:64]
    by = by.strip()[:64] or "cli"
    if force and not note:
        raise PayoutError("resubmit --force needs --note saying why (it is recorded)")
    order = rt.store.require(payout_cl_id)
    if order.state not in (State.REVIEW, State.REJECTED):
        raise InvalidTransition(payout_cl_id, order.state.value, "received (resubmit)")
    if order.erased:
        raise PayoutError(
            "its account number and name were erased (PII_RETENTION_DAYS or payouts forget): "
            "nothing to send; enqueue the payout again under a new payout_cl_id"
        )
    published = order.state is State.REJECTED or bool(order.fields.get("fin"))
    if published and not (force and approved_by and approved_by != by):
        raise OverrideRequired(payout_cl_id, order.state.value)
    evidence = gateway_evidence(rt, order)
    if evidence and not force:
        raise PayoutError(
            f"the gateway had this order ({evidence}); not resubmitted — "
            "use `payouts resolve`, or --force --note after confirming with the gateway"
        )
    result = rt.gateway.query_order(payout_cl_id, sign_type=order.sign_type)
    if result.kind is QueryKind.ERROR:
        raise PayoutError(f"the gateway query failed ({result.reason}); not resubmitted")
    if result.kind is QueryKind.FOUND:
        raise PayoutError(
            f"the gateway knows this order (status {result.status}); not resubmitted — use `payouts resolve`"
        )
    reason = f"operator {by}: resubmit, gateway confirmed it does not know the order"
    fields: dict[str, object] = {"resubmitted": 1, "resubmitted_at": NOW}
    if force and evidence:
        reason = f"operator {by}: FORCED resubmit despite evidence ({evidence}): {note}"
        fields["forced_by"] = by
    elif note:
        reason += f": {note}"
    if published:
        final = order.fields.get("fin") or order.state.value
        reason = f"operator {by}, approved by {approved_by}: OVERRIDE of published {final}: {note}"
        fields.update(override_by=by, override_approved_by=approved_by)
    move_or_raise(
        rt,
        payout_cl_id,
        State.RECEIVED,
        sources={order.state},
        reason=reason,
        due=time.time() + rt.settings.submit_redrive_s,
        # the operator decided it is wanted: a suspected-duplicate mark no longer holds it
        # (for a published final, two people did: the override)
        fields={**fields, "dup_of": None},
        # nothing recorded since the evidence was read: the same payout_id (or none)
        expect=("payout_id", order.payout_id),
    )
    rt.dispatch.submit(payout_cl_id)


def back_to_polling(rt: Runtime, payout_cl_id: str, *, by: str = "cli", note: str) -> State:
    """Put an order in review back to polling (D10): ``accepted`` when its payout_id is
    known, else ``unconfirmed``; checks and MAX_ORDER_AGE's clock start again. Returns the
    new state. For an order the gateway still processes (status 6 "review", a long bank
    holiday) or whose final callback came while it was in review."""
    note = (note or "").strip()
    if not note:
        raise PayoutError("back-to-polling needs --note saying why")
    order = rt.store.get(payout_cl_id, with_history=False)
    if order is None:
        raise OrderNotFound(payout_cl_id)
    target = State.ACCEPTED if order.payout_id else State.UNCONFIRMED
    now = time.time()
    move_or_raise(
        rt,
        payout_cl_id,
        target,
        sources={State.REVIEW},
        reason=f"operator {by}: back to polling: {note[:150]}",
        due=now,
        fields={"repolled_at": NOW, "checks": 0, "unknown_status_count": 0, "repolled_by": by},
        expect=("payout_id", order.payout_id),
    )
    return target


def check_now(rt: Runtime, payout_cl_id: str) -> CheckStatus:
    """The operator's check: always queries, due or not."""
    return check_order(rt, payout_cl_id, force=True)
