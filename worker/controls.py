"""Operator controls of the payout desk: pause, balance hold, approval, duplicate guard.

* **Pause** (kill switch): ``keys.PAUSE`` is a hash, scope ("*" = every bank, else a bank
  code) -> JSON {reason, by, since, source[, need]}. While a scope is paused no create
  request leaves for it: :func:`pre_send` is asked before the claim and again right
  before the POST. Held orders stay ``received`` (their due time moves on, nothing else
  is written); queries, callbacks and the sweep's checks go on.
* **Balance hold** (D21): a merchant-level refusal (``HOLD_CODES``: 0018 and the codes
  that refuse every order while they last) puts the order back to ``received`` and
  pauses every bank automatically (source "balance" or "merchant_code"). The sweep polls
  the gateway balance (:func:`poll_balance`); a "balance" pause ends when the available
  balance covers the held order, or when an operator resumes. Within an hour of a 0018,
  an order larger than the last polled available balance is not sent (the balance
  endpoint alone never stops sending: it may disagree with the create's own check).
* **Approval** (maker-checker): with ``APPROVAL_ABOVE`` set, or for a suspected
  duplicate, an order waits in ``awaiting_approval`` (open, due at its deadline) until
  :func:`approve` (by someone other than ``requested_by``; two people at or above
  ``APPROVAL_TWO_ABOVE``) or :func:`reject`; the sweep rejects it at ``APPROVAL_TTL``.
* **Duplicate guard**: :func:`duplicate_of` keys a keyed hash (HMAC-SHA256 with
  ``DUPLICATE_KEY``) of bank + account number + amount, never the number itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from worker import keys
from worker.errors import ApprovalRefused, InvalidTransition, OrderNotFound, PayoutError
from worker.logs import get_logger
from worker.moves import move
from worker.payout import BANK_RE, Payout
from worker.runtime import Runtime
from worker.settings import Settings
from worker.states import State
from worker.store import Order, now_plus, stamp

log = get_logger("payouts.controls")

__all__ = [
    "ApprovalRefused",
    "Hold",
    "Pause",
    "approve",
    "approve_many",
    "pause",
    "paused_for",
    "pauses",
    "pre_send",
    "reject",
    "resume",
]

ALL: Final = "*"
SOURCES: Final = ("operator", "balance", "merchant_code")
#: the pause sources the balance poller may end by itself
AUTO_RESUMABLE: Final = frozenset({"balance"})
#: how long after a 0018 the polled balance gates sending
BALANCE_LOW_S: Final = 3600

# delete a pause only if it is still the one we read (an operator may have replaced it)
_DELETE_IF_SAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class Pause:
    """One pause: ``scope`` "*" (every bank) or a bank code."""

    scope: str
    reason: str
    by: str
    since: float
    source: str = "operator"
    #: for a balance hold: the amount (minor units) that must be available to resume
    need: int | None = None
    #: the record as stored (compare-and-delete uses it), "" when built here
    raw: str = field(default="", compare=False, repr=False)

    def as_json(self) -> str:
        doc: dict[str, object] = {
            "reason": self.reason,
            "by": self.by,
            "since": round(self.since, 3),
            "source": self.source,
        }
        if self.need is not None:
            doc["need"] = self.need
        return json.dumps(doc, sort_keys=True, ensure_ascii=False)

    def public(self) -> dict[str, object]:
        return {"scope": self.scope, **json.loads(self.as_json())}


def _parse(scope: str, raw: str) -> Pause:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = {"reason": "unreadable pause record", "source": "operator"}
    need = doc.get("need")
    return Pause(
        scope=scope,
        reason=str(doc.get("reason", "")),
        by=str(doc.get("by", "")),
        since=float(doc.get("since", 0) or 0),
        source=str(doc.get("source", "operator")),
        need=int(need) if isinstance(need, int) else None,
        raw=raw,
    )


def _scope(bank: str | None) -> str:
    """The pause scope of ``bank``: every code the payout validator accepts (``BANK_RE``),
    kept in upper case; orders are matched by their code in upper case too (D53)."""
    if bank is None or bank.strip() in ("", ALL):
        return ALL
    code = bank.strip()
    if not BANK_RE.fullmatch(code):
        raise PayoutError("bank: must be a bank code of 1-16 letters, digits, spaces, '_', '.', '&' or '-'")
    return bank_scope(code)


def scope_of(bank: str | None) -> str:
    """The pause scope ``pause``/``resume`` use for ``bank`` (PayoutError if malformed)."""
    return _scope(bank)


def bank_scope(bank_name: str) -> str:
    """The pause scope that holds orders of ``bank_name``: case does not matter (D53)."""
    return bank_name.upper()


# ------------------------------------------------------------------ pause


def pause(
    rt: Runtime,
    *,
    reason: str,
    by: str,
    bank: str | None = None,
    source: str = "operator",
    need: int | None = None,
) -> Pause:
    """Stop create requests for ``bank`` (None = every bank); returns the pause in force.

    An operator pause replaces whatever was there; an automatic one (balance,
    merchant_code) never replaces an existing pause, so the poller cannot end an
    operator's pause by resuming its own.
    """
    if source not in SOURCES:
        raise PayoutError(f"source: must be one of {', '.join(SOURCES)}")
    reason, by = reason.strip(), by.strip()
    if not reason:
        raise PayoutError("pause needs --reason saying why")
    if not by:
        raise PayoutError("pause needs --by NAME")
    scope = _scope(bank)
    p = Pause(scope, reason[:200], by[:64], time.time(), source, need)
    if source == "operator":
        rt.redis.hset(keys.PAUSE, scope, p.as_json())
        log.warning("payouts.paused", scope=scope, reason=p.reason, by=p.by, source=source)
        return p
    if rt.redis.hsetnx(keys.PAUSE, scope, p.as_json()):
        log.error("payouts.paused", scope=scope, reason=p.reason, by=p.by, source=source, need=need)
        return p
    current = paused_for(rt, None if scope == ALL else scope)
    return current or p


def resume(rt: Runtime, *, by: str, bank: str | None = None, only: Pause | None = None) -> Pause | None:
    """End the pause of ``bank`` (None = the every-bank pause); returns what was ended.

    ``only``: end it only if it is still exactly that pause (the balance poller).
    """
    by = by.strip()
    if not by:
        raise PayoutError("resume needs --by NAME")
    scope = _scope(bank)
    raw = rt.redis.hget(keys.PAUSE, scope)
    if raw is None and bank is not None and bank.strip() != scope:
        scope = bank.strip()  # a pause set before D53, under the code as written
        raw = rt.redis.hget(keys.PAUSE, scope)
    if raw is None:
        return None
    current = _parse(scope, str(raw))
    expected = (only.raw or only.as_json()) if only is not None else str(raw)
    if int(rt.redis.eval(_DELETE_IF_SAME, 1, keys.PAUSE, scope, expected)) != 1:
        return None
    log.warning("payouts.resumed", scope=scope, by=by[:64], was=current.reason, source=current.source)
    return current


def pauses(rt: Runtime) -> list[Pause]:
    """Every pause in force, the every-bank one first."""
    raw = rt.redis.hgetall(keys.PAUSE)
    out = [_parse(str(k), str(v)) for k, v in raw.items()]
    return sorted(out, key=lambda p: (p.scope != ALL, p.scope))


def paused_for(rt: Runtime, bank: str | None) -> Pause | None:
    """The pause that applies to ``bank`` (the every-bank one first), or None."""
    scopes = [ALL] if bank in (None, ALL) else [ALL, bank_scope(str(bank)), str(bank)]
    for scope, raw in zip(scopes, rt.redis.hmget(keys.PAUSE, scopes), strict=True):
        if raw is not None:
            return _parse(scope, str(raw))
    return None


# ------------------------------------------------------------------ the pre-send gate


@dataclass(frozen=True)
class Hold:
    """Why an order is not sent now: ``kind`` "pause", "balance" or "approval"."""

    kind: str
    reason: str


def needs_approval(s: Settings, order: Order) -> bool:
    """Does this order need an approval before it is sent (and has none yet)?"""
    if order.fields.get("approved") == "1":
        return False
    if order.fields.get("dup_of"):
        return True
    return bool(s.approval_above) and order.amount >= s.approval_above


def pre_send(rt: Runtime, order: Order, *, balance: bool = True) -> Hold | None:
    """The one check before a create request leaves: None = send it.

    Asked before the claim (one round trip: the pauses and the known balance) and again
    right before the POST with ``balance=False`` (one HMGET: a pause set while the message
    was in flight is obeyed).
    """
    if needs_approval(rt.settings, order):
        return Hold("approval", "needs approval")
    bank = bank_scope(order.bank_name)
    # the scope in upper case (D53), and the code as written (a pause set before D53)
    scopes = [ALL, bank, order.bank_name]
    available = None
    if balance:
        pipe = rt.redis.pipeline(transaction=False)
        pipe.hmget(keys.PAUSE, scopes)
        pipe.hget(keys.BALANCE, "limit")
        (every, own, legacy), available = pipe.execute()
    else:
        every, own, legacy = rt.redis.hmget(keys.PAUSE, scopes)
    own = own if own is not None else legacy
    raw = every if every is not None else own
    if raw is not None:
        p = _parse(ALL if every is not None else bank, str(raw))
        return Hold("pause", f"held: paused ({p.source}): {p.reason}"[:200])
    if available is not None and order.amount > int(available):
        log.warning("payout.held.balance", amount=order.amount, available=int(available))
        return Hold("balance", "held: amount exceeds the known available balance")
    return None


def hold(rt: Runtime, order: Order, h: Hold) -> None:
    """Leave a ``received`` order waiting: a later due time and the reason, no state change."""
    fields: dict[str, object] = {}
    if order.fields.get("held") != h.reason:
        fields["held"] = h.reason
    rt.store.transition(
        order.payout_cl_id,
        None,
        sources={State.RECEIVED},
        reason="held",
        due=time.time() + rt.settings.pause_recheck_s,
        fields=fields,
    )
    rt.redis.hincrby(keys.HELD, h.kind, 1)


def merchant_hold(rt: Runtime, order: Order, code: str, text: str) -> None:
    """A create refused with a merchant-level code: pause every bank with that reason (D21)."""
    source = "balance" if code == "0018" else "merchant_code"
    if source == "balance":
        # for the next hour the polled balance gates sending (an order above it waits)
        rt.redis.set(keys.BALANCE_LOW, stamp(time.time()), ex=BALANCE_LOW_S)
    pause(
        rt,
        reason=f"gateway {code}: {text}",
        by="worker",
        source=source,
        need=order.amount if source == "balance" else None,
    )


# ------------------------------------------------------------------ balance poller


@dataclass(frozen=True)
class Balance:
    available: int
    total: int
    frozen: int
    at: float


def known_balance(rt: Runtime) -> Balance | None:
    raw = rt.redis.hgetall(keys.BALANCE)
    if not raw or "available" not in raw:
        return None
    return Balance(
        int(raw["available"]), int(raw.get("total", 0)), int(raw.get("frozen", 0)), float(raw.get("at", 0))
    )


def poll_balance(rt: Runtime, *, now: float | None = None, force: bool = False) -> Balance | None:
    """Read the gateway balance (at most once per interval across every process).

    Available = total_balance - total_frozen_balance. Ends a "balance" pause when the
    available balance covers the held order. Returns the balance read, or None when
    it was not this process's turn, polling is off, or the gateway did not answer.
    """
    s = rt.settings
    now = time.time() if now is None else now
    if s.balance_poll_s <= 0 or s.gateway is None:
        return None
    held = [p for p in pauses(rt) if p.source in AUTO_RESUMABLE]
    interval = min(s.balance_poll_s, s.pause_recheck_s) if held else s.balance_poll_s
    if not force and not rt.redis.set(keys.BALANCE_POLL, stamp(now), nx=True, px=int(interval * 1000)):
        return None
    result = rt.gateway.query_balance()
    if result is None:
        return None
    total, frozen = result
    bal = Balance(total - frozen, total, frozen, now)
    low = bool(rt.redis.exists(keys.BALANCE_LOW))
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hset(
        keys.BALANCE, mapping={"available": bal.available, "total": total, "frozen": frozen, "at": stamp(now)}
    )
    if low:  # within an hour of a 0018: the polled balance gates sending
        pipe.hset(keys.BALANCE, "limit", bal.available)
    else:
        pipe.hdel(keys.BALANCE, "limit")
    # a balance nobody refreshes (the endpoint failing) must not hold orders for ever
    pipe.expire(keys.BALANCE, int(max(60.0, 3 * s.balance_poll_s)))
    pipe.execute()
    for p in held:
        scope = None if p.scope == ALL else p.scope
        if bal.available >= (p.need or 1) and resume(rt, by="balance poller", bank=scope, only=p):
            log.warning("payouts.balance.restored", available=bal.available, need=p.need)
    return bal


# ------------------------------------------------------------------ approval


def approvals_needed(s: Settings, amount: int) -> int:
    return 2 if s.approval_two_above and amount >= s.approval_two_above else 1


def request_approval(rt: Runtime, order: Order, reason: str) -> bool:
    """Move a ``received`` order to ``awaiting_approval`` (due at its deadline)."""
    s, now = rt.settings, time.time()
    if not s.approval_above:
        return False  # approval is off: the caller sends a suspected duplicate to review
    until = now + s.approval_ttl_s
    prev = move(
        rt,
        order.payout_cl_id,
        State.AWAITING_APPROVAL,
        sources={State.RECEIVED},
        reason=reason[:200],
        due=until,
        fields={
            # on the Redis server's clock: the sweep and the approve step compare it there
            "approval_until": now_plus(s.approval_ttl_s),
            "approvals_needed": approvals_needed(s, order.amount),
            "approved_by": "",
        },
    )
    return prev is not None


def route_unapproved(rt: Runtime, order: Order) -> str:
    """An order that needs approval reached the send path: hold it, never send it.

    With approval off (only the duplicate guard asked), it goes to review instead.
    Returns the state it went to ("" if it had moved meanwhile).
    """
    why = (
        "suspected duplicate of " + order.fields["dup_of"]
        if order.fields.get("dup_of")
        else "above APPROVAL_ABOVE"
    )
    if request_approval(rt, order, f"awaiting approval: {why}"):
        return State.AWAITING_APPROVAL.value
    prev = move(rt, order.payout_cl_id, State.REVIEW, sources={State.RECEIVED}, reason=f"review: {why}"[:200])
    if prev is not None:
        return State.REVIEW.value
    return ""


def _awaiting(rt: Runtime, payout_cl_id: str, target: str, expect_state: State | None) -> Order:
    order = rt.store.get(payout_cl_id, with_history=False)
    if order is None:
        raise OrderNotFound(payout_cl_id)
    wanted = expect_state or State.AWAITING_APPROVAL
    if order.state is not wanted or order.state is not State.AWAITING_APPROVAL:
        raise InvalidTransition(payout_cl_id, order.state.value, target)
    return order


def approve(rt: Runtime, payout_cl_id: str, *, by: str, expect_state: State | None = None) -> State:
    """Approve an order awaiting approval; returns its state after (received when sent on).

    Raises ApprovalRefused when ``by`` is empty, is the order's requester, or already
    gave the first of two approvals; InvalidTransition when the order is not awaiting
    approval (or not in ``expect_state``), also when another approval won a race.
    """
    by = by.strip()[:64]
    if not by:
        raise ApprovalRefused("approve needs --by NAME")
    order = _awaiting(rt, payout_cl_id, "received (approve)", expect_state)
    if order.fields.get("requested_by", "") == by:
        raise ApprovalRefused(f"{by} requested order {payout_cl_id!r} and cannot approve it")
    first = order.fields.get("approved_by", "")
    if first == by:
        raise ApprovalRefused(
            f"{by} already approved {payout_cl_id!r}: a second, different approver is needed"
        )
    now = time.time()
    if order.field_int("approvals_needed", 1) >= 2 and not first:
        prev = rt.store.transition(
            payout_cl_id,
            None,
            sources={State.AWAITING_APPROVAL},
            reason="first approval",
            expect=("approved_by", ""),
            fields={"approved_by": by, "approved_at": stamp(now)},
        )
        if prev is None:
            raise InvalidTransition(payout_cl_id, order.state.value, "first approval (raced)")
        log.info("payout.approved", payout_cl_id=payout_cl_id, by=by, step="1 of 2")
        return State.AWAITING_APPROVAL
    who = f"{first} and {by}" if first else by
    fields: dict[str, object] = {"approved": "1", "held": None}
    fields["second_approved_by" if first else "approved_by"] = by
    prev = move(
        rt,
        payout_cl_id,
        State.RECEIVED,
        sources={State.AWAITING_APPROVAL},
        reason=f"approved by {who}"[:200],
        expect=("approved_by", first),
        due=now + rt.settings.submit_redrive_s,
        fields=fields,
        log_fields={"by": by},
    )
    if prev is None:
        raise InvalidTransition(payout_cl_id, order.state.value, "received (approve, raced)")
    # the sweep re-drives it at its due time if this message is lost
    rt.dispatch.submit(payout_cl_id)
    return State.RECEIVED


def reject(rt: Runtime, payout_cl_id: str, *, by: str, note: str, expect_state: State | None = None) -> State:
    """Refuse an order awaiting approval: it becomes ``rejected`` (final, never sent)."""
    by, note = by.strip()[:64], note.strip()
    if not by:
        raise ApprovalRefused("reject needs --by NAME")
    if not note:
        raise PayoutError("reject needs --note saying why")
    _awaiting(rt, payout_cl_id, "rejected (reject)", expect_state)
    prev = move(
        rt,
        payout_cl_id,
        State.REJECTED,
        sources={State.AWAITING_APPROVAL},
        reason=f"rejected by {by}: {note}"[:200],
        fields={"rejected_by": by, "rejection_note": note[:500]},
        log_fields={"by": by},
    )
    if prev is None:
        raise InvalidTransition(payout_cl_id, "changed meanwhile", "rejected (reject)")
    return State.REJECTED


def expire_approval(rt: Runtime, order: Order, now: float) -> bool:
    """The sweep found an order awaiting approval due: reject it past its deadline."""
    until = order.field_float("approval_until", 0.0)
    if until > now:
        rt.store.transition(
            order.payout_cl_id, None, sources={State.AWAITING_APPROVAL}, reason="x", due=until, now=now
        )
        return False
    ttl = int(rt.settings.approval_ttl_s)
    prev = move(
        rt,
        order.payout_cl_id,
        State.REJECTED,
        sources={State.AWAITING_APPROVAL},
        reason=f"approval expired: not approved within APPROVAL_TTL ({ttl}s)",
        fields={"rejected_by": "expiry"},
    )
    return prev is not None


@dataclass(frozen=True)
class BulkRow:
    payout_cl_id: str
    outcome: str  # the state after, or "error: ..."


def approve_many(rt: Runtime, ids: Iterable[str], *, by: str) -> list[BulkRow]:
    """Approve each id in turn; one refusal does not stop the others."""
    rows = []
    for i in dict.fromkeys(x.strip() for x in ids if x.strip()):
        try:
            rows.append(BulkRow(i, approve(rt, i, by=by).value))
        except PayoutError as exc:
            rows.append(BulkRow(i, f"error: {exc}"))
    return rows


# ------------------------------------------------------------------ duplicate guard


def beneficiary_digest(key: str, payout: Payout) -> str:
    """A keyed hash of bank + account number + amount: the number is never stored."""
    msg = "\x1f".join((payout.bank_name, payout.number, str(payout.amount))).encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()[:32]


def duplicate_of(rt: Runtime, payout: Payout) -> str | None:
    """The other order id enqueued for the same beneficiary and amount within the window."""
    s = rt.settings
    if s.duplicate_window_s <= 0 or s.duplicate_key is None:
        return None
    k = keys.duplicate(beneficiary_digest(s.duplicate_key.reveal(), payout))
    if rt.redis.set(k, payout.payout_cl_id, nx=True, px=int(s.duplicate_window_s * 1000)):
        return None
    other = rt.redis.get(k)
    if other is None or str(other) == payout.payout_cl_id:
        return None
    return str(other)
