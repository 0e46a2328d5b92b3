"""Exceptions, shaped by what the caller does next.

Gateway answers are values, not exceptions: :class:`worker.gateway.Outcome` says
whether a create was not sent, refused, accepted or has an unknown outcome, and the
submission code branches on it. Only what a caller must stop for is raised here.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.settings import ConfigError


class PayoutError(Exception):
    """Base of every error this package raises on purpose."""


class FieldError(PayoutError):
    """One field broke one rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class InvalidPayout(PayoutError):
    """The payout's data broke one or more rules; nothing was stored or sent."""

    def __init__(self, problems: Sequence[FieldError]) -> None:
        self.problems = list(problems)
        text = "; ".join(str(p) for p in self.problems)
        super().__init__(f"invalid payout: {text}")

    @property
    def fields(self) -> list[str]:
        return [p.field for p in self.problems]


class DuplicatePayout(PayoutError):
    """The payout_cl_id already names an order with different data, or was used before."""

    def __init__(self, payout_cl_id: str, *, expired: bool = False) -> None:
        if expired:
            text = (
                f"payout_cl_id {payout_cl_id!r} was used before and its order has expired: "
                "ids are never reused (use a new payout_cl_id)"
            )
        else:
            text = f"payout_cl_id {payout_cl_id!r} already exists with different data"
        super().__init__(text)
        self.payout_cl_id = payout_cl_id
        #: the id's order expired (ORDER_RETENTION_DAYS); its tombstone refuses it forever
        self.expired = expired


class OrderNotFound(PayoutError):
    """No order is stored under that payout_cl_id."""


class InvalidTransition(PayoutError):
    """The order is not in a state that allows the requested move."""

    def __init__(self, payout_cl_id: str, current: str | None, target: str) -> None:
        super().__init__(f"order {payout_cl_id!r} is {current}, cannot move to {target}")
        self.payout_cl_id = payout_cl_id
        self.current = current
        self.target = target


class ApprovalRefused(PayoutError):
    """A maker-checker rule forbids this approval (own order, same approver twice, no name)."""


class LossEpochPending(PayoutError):
    """The claim was refused: the order existed before a loss epoch and was not checked at
    the gateway since (its earlier claim may have been lost with the server's last writes)."""

    def __init__(self, payout_cl_id: str, epoch_no: str, epoch_at: float) -> None:
        super().__init__(f"order {payout_cl_id!r} predates loss epoch {epoch_no}: query it first")
        self.payout_cl_id = payout_cl_id
        self.epoch_no = epoch_no
        self.epoch_at = epoch_at


class OverrideRequired(PayoutError):
    """Refused: the order's final state was published; sending it again needs an explicit
    override by two different people (``resubmit --force --approved-by``), D38."""

    def __init__(self, payout_cl_id: str, state: str) -> None:
        super().__init__(
            f"order {payout_cl_id!r} reached a final state that was published to the web app "
            f"(now {state}): not sendable again without --force, a --note and a second person's "
            "--approved-by"
        )
        self.payout_cl_id = payout_cl_id


class NotDurable(PayoutError):
    """A write was applied by the Redis master but not acknowledged by enough replicas in time.

    Retryable: repeating the same call (same id, same data) is idempotent."""

    def __init__(self, what: str, payout_cl_id: str, acks: int, needed: int, timeout_s: float) -> None:
        super().__init__(
            f"{what} of {payout_cl_id!r} not acknowledged by {needed} Redis replica(s) within "
            f"{timeout_s:g}s (REDIS_REPLICA_ACKS, REDIS_REPLICA_ACK_TIMEOUT; got {acks}): "
            "retry the same call, it is idempotent"
        )
        self.payout_cl_id = payout_cl_id
        self.acks = acks
        self.needed = needed
        #: the script's reply of the write that was applied on the master (transitions)
        self.result: list[object] | None = None


class PersonalDataUnreadable(PayoutError):
    """An order's sealed personal data does not open (unknown or wrong key, a value moved from
    another order or altered, or erased): the order is never sent; it goes to review."""

    def __init__(self, payout_cl_id: str, reason: str) -> None:
        super().__init__(f"order {payout_cl_id!r}: personal data unreadable: {reason}")
        self.payout_cl_id = payout_cl_id
        self.reason = reason


__all__ = [
    "ApprovalRefused",
    "ConfigError",
    "DuplicatePayout",
    "FieldError",
    "InvalidPayout",
    "InvalidTransition",
    "LossEpochPending",
    "NotDurable",
    "OrderNotFound",
    "OverrideRequired",
    "PayoutError",
    "PersonalDataUnreadable",
]
