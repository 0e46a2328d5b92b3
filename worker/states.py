"""The order state machine (docs/decisions.md, "The order state machine").

The table :data:`TRANSITIONS` is the single source of truth: the Lua
compare-and-set receives its allowed "from" states from :func:`sources_of`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class State(StrEnum):
    #: stored, not yet sent
    RECEIVED = "received"
    #: one worker has claimed it; the create request may be in flight
    SUBMITTING = "submitting"
    #: the gateway answered 0000 with a payout_id; waiting for the final status
    ACCEPTED = "accepted"
    #: the create's outcome is unknown; learned from a query or callback, never by resending
    UNCONFIRMED = "unconfirmed"
    #: final: the gateway reports the transfer done
    SUCCEEDED = "succeeded"
    #: final: the gateway reports it cancelled or failed; no money left
    FAILED = "failed"
    #: final: the gateway definitively refused the create
    REJECTED = "rejected"
    #: needs a person; left only by an operator command
    REVIEW = "review"
    #: held before sending until a checker approves (APPROVAL_ABOVE, duplicate guard);
    #: open and scheduled: its due time is the approval deadline (APPROVAL_TTL)
    AWAITING_APPROVAL = "awaiting_approval"


S = State

#: allowed moves: from-state -> the states it may go to
TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    S.RECEIVED: frozenset({S.SUBMITTING, S.REVIEW, S.AWAITING_APPROVAL, S.UNCONFIRMED}),
    S.SUBMITTING: frozenset({S.ACCEPTED, S.REJECTED, S.UNCONFIRMED, S.RECEIVED}),
    S.ACCEPTED: frozenset({S.SUCCEEDED, S.FAILED, S.REVIEW}),
    S.UNCONFIRMED: frozenset({S.ACCEPTED, S.SUCCEEDED, S.FAILED, S.REVIEW, S.RECEIVED, S.REJECTED}),
    S.SUCCEEDED: frozenset({S.REVIEW}),
    S.FAILED: frozenset({S.REVIEW}),
    S.REJECTED: frozenset({S.RECEIVED}),
    S.REVIEW: frozenset({S.SUCCEEDED, S.FAILED, S.RECEIVED, S.ACCEPTED, S.UNCONFIRMED}),
    S.AWAITING_APPROVAL: frozenset({S.RECEIVED, S.REJECTED}),
}
# Notes on the less obvious edges:
# - received -> unconfirmed: after a loss epoch, the gateway has an order whose claim the
#   store lost (its create was sent): recorded as sent, never created again.
# - unconfirmed -> received: only NOT_FOUND_POLICY=resubmit, after the gateway confirmed
#   (past the grace period) it does not know the order.
# - unconfirmed -> rejected: the create's own definitive refusal arrived after the sweep's
#   deadline (kept as late_reject_code) and a query then confirms the gateway lacks it.
# - succeeded/failed -> review: a later, conflicting final report (never overwritten).
# - rejected/review -> received: the operator's `payouts resubmit`, after a query confirms
#   the gateway does not know the order.
# - review -> succeeded/failed: the operator's `payouts resolve`.
# - review -> accepted/unconfirmed: the operator's `payouts back-to-polling` (accepted when
#   a payout_id is known, else unconfirmed); polling resumes, the age clock restarts.
# - received -> awaiting_approval: at enqueue (APPROVAL_ABOVE, duplicate guard), or by the
#   pre-send gate for an order that needs approval and has none (never sent unapproved).
# - awaiting_approval -> received: `payouts approve` (the last approval needed);
#   awaiting_approval -> rejected: `payouts reject`, or APPROVAL_TTL expiry (the sweep).

#: the gateway reported the outcome; nothing more will happen by itself
FINAL: Final = frozenset({S.SUCCEEDED, S.FAILED, S.REJECTED})
#: the worker still owes this order work: each has a due time in the due-index
#: (awaiting_approval is open: due at its approval deadline, when the sweep expires it)
OPEN: Final = frozenset({S.RECEIVED, S.SUBMITTING, S.ACCEPTED, S.UNCONFIRMED, S.AWAITING_APPROVAL})
#: states that say the gateway may hold the order
AT_GATEWAY: Final = frozenset({S.ACCEPTED, S.UNCONFIRMED, S.SUCCEEDED, S.FAILED})
#: states only the gateway's own word leads to: an order that ever reached one of them
#: was created there, whatever a later query says (no resubmit without --force)
KNOWN_AT_GATEWAY: Final = frozenset({S.ACCEPTED, S.SUCCEEDED, S.FAILED})


def sources_of(target: State) -> frozenset[State]:
    """Every state that may move to ``target``."""
    return frozenset(src for src, dsts in TRANSITIONS.items() if target in dsts)


def is_allowed(source: State, target: State) -> bool:
    """Whether the table allows ``source -> target``."""
    return target in TRANSITIONS[source]
