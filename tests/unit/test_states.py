"""The state machine table."""

from __future__ import annotations

import itertools

import pytest

from worker.states import FINAL, OPEN, TRANSITIONS, State, is_allowed, sources_of

EXPECTED_EDGES = {
    ("received", "submitting"),
    ("received", "review"),
    # after a loss epoch: the gateway has an order whose claim the store lost (it was sent)
    ("received", "unconfirmed"),
    ("submitting", "accepted"),
    ("submitting", "rejected"),
    ("submitting", "unconfirmed"),
    ("submitting", "received"),
    ("accepted", "succeeded"),
    ("accepted", "failed"),
    ("accepted", "review"),
    ("unconfirmed", "accepted"),
    ("unconfirmed", "succeeded"),
    ("unconfirmed", "rejected"),  # a late definitive refusal, then not found (D30)
    ("unconfirmed", "failed"),
    ("unconfirmed", "review"),
    ("unconfirmed", "received"),
    ("succeeded", "review"),
    ("failed", "review"),
    ("rejected", "received"),
    ("review", "succeeded"),
    ("review", "failed"),
    ("review", "received"),
    ("review", "accepted"),  # payouts back-to-polling (a payout_id is known)
    ("review", "unconfirmed"),  # payouts back-to-polling (no payout_id)
    ("received", "awaiting_approval"),
    ("awaiting_approval", "received"),
    ("awaiting_approval", "rejected"),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(State, State)))
def test_every_pair(src: State, dst: State) -> None:
    """Exactly the designed edges (plus operator/conflict edges) are allowed (docs/decisions.md,
    "The order state machine")."""
    assert is_allowed(src, dst) == ((src.value, dst.value) in EXPECTED_EDGES)


def test_names_match_design() -> None:
    """The state names are exactly the designed ones, in their order."""
    assert [s.value for s in State] == [
        "received",
        "submitting",
        "accepted",
        "unconfirmed",
        "succeeded",
        "failed",
        "rejected",
        "review",
        "awaiting_approval",
    ]


def test_groups() -> None:
    """FINAL and OPEN are disjoint, review is neither; a final state is left only for review or by hand."""
    assert FINAL.isdisjoint(OPEN)
    assert State.REVIEW not in FINAL | OPEN
    assert set(TRANSITIONS) == set(State)
    # a final state can only be left for review (conflict) or by an operator
    for s in FINAL:
        assert TRANSITIONS[s] <= {State.REVIEW, State.RECEIVED}
    assert sources_of(State.SUBMITTING) == {State.RECEIVED}
    # an order awaiting approval is never sent from there: approval puts it back to received
    assert State.SUBMITTING not in TRANSITIONS[State.AWAITING_APPROVAL]
    assert State.AWAITING_APPROVAL in OPEN
