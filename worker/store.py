"""The Redis order store: records, the due-index, counts, history and events.

Every state change goes through ``transition.lua`` (one atomic compare-and-set);
nothing here reads a state in Python and writes it back.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Final

import redis

from worker import keys
from worker.errors import (
    ApprovalRefused,
    ConfigError,
    InvalidTransition,
    LossEpochPending,
    NotDurable,
    OrderNotFound,
    OverrideRequired,
    PersonalDataUnreadable,
)
from worker.payout import Payout
from worker.pii import MASK_FIELDS, SEALED_FIELDS, KeyRing, SealBroken, mask_name, mask_number
from worker.states import FINAL, OPEN, State, sources_of

#: sentinel for ``due``: take the order out of the due-index
REMOVE: Final = "-"
#: sentinel for a field value: delete the field (and, in ``expect``, "the field is absent")
DELETE: Final = "\0"
#: sentinel for a field value: increment the field by one inside the script
INCR: Final = "\1"
#: sentinel for a field value: the Redis server's time of the write (transition.lua)
NOW: Final = "\2"


def now_plus(seconds: float) -> str:
    """A field value: the Redis server's time of the write plus ``seconds`` (a deadline
    that another script or the sweep compares on the same clock, D35)."""
    return NOW + repr(float(seconds))


#: the state :meth:`OrderStore.create` reports for an id whose order expired (tombstone)
EXPIRED: Final = "expired"
#: an order's history keeps its first entry and at most this many in all (transition.lua)
HISTORY_MAX: Final = 64
#: a key that never exists: the "submit queue" when the broker is another Redis
NO_QUEUE: Final = f"{keys.PREFIX}:no-queue"


def stamp(t: float) -> str:
    """A unix time as stored: millisecond precision is plenty and saves bytes per order."""
    return f"{t:.3f}"


#: scripts that use identity.lua's functions (server_now, stamp, store_identity)
_WITH_IDENTITY: Final = frozenset({"create", "transition", "epoch"})


def script_text(name: str) -> str:
    """The text of ``lua/<name>.lua``, with identity.lua's shared functions before it."""
    lua = resources.files("worker").joinpath("lua")
    text = lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name in _WITH_IDENTITY:
        text = lua.joinpath("identity.lua").read_text(encoding="utf-8") + "\n" + text
    return text


_script = script_text


def _due_arg(due: float, now: float | None) -> str:
    """A due time for the scripts: relative to the script's own clock (the Redis server's
    TIME) when the caller gave no ``now``, so a skewed caller clock moves nothing (D35)."""
    if now is None:
        return "r" + repr(float(due) - time.time())
    return repr(float(due))


@dataclass(frozen=True)
class Order:
    """One order as stored. Its account number and name are sealed in ``fields`` (only
    :meth:`OrderStore.payout_of` opens them, to send the create); what may be shown is
    their masked forms."""

    payout_cl_id: str
    state: State
    amount: int
    bank_name: str
    #: the account number's last four digits (``******7788``), stored beside the sealed one
    number_mask: str
    #: the name's first character (``W…``)
    name_mask: str
    notify_url: str | None
    created_at: float
    updated_at: float
    payout_id: str | None = None
    sign_type: str | None = None
    submitted_at: float | None = None
    reason: str = ""
    fields: Mapping[str, str] = field(default_factory=dict, repr=False)
    history: list[dict[str, Any]] = field(default_factory=list)
    due_at: float | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL

    @property
    def result_pending(self) -> bool:
        """Final, and its RESULT_TASK message not published yet (the sweep re-sends it)."""
        return self.state in FINAL and self.fields.get("result_pending") == "1"

    @property
    def erased(self) -> bool:
        """Its personal data was erased (retention or ``payouts forget``)."""
        return bool(self.fields.get("erased_at"))

    def field_float(self, name: str, default: float = 0.0) -> float:
        raw = self.fields.get(name)
        return float(raw) if raw not in (None, "") else default

    def field_int(self, name: str, default: int = 0) -> int:
        raw = self.fields.get(name)
        return int(raw) if raw not in (None, "") else default

    def public(self) -> dict[str, Any]:
        """A view safe to print or log: no name, the account number masked."""
        hidden = {"name", "number", "fp", *MASK_FIELDS.values()}
        out: dict[str, Any] = {k: v for k, v in self.fields.items() if k not in hidden}
        out["payout_cl_id"] = self.payout_cl_id
        out["number"] = "(erased)" if self.erased else self.number_mask
        out["name"] = "(erased)" if self.erased else "***"
        out["history"] = self.history
        out["due_at"] = self.due_at
        return out

    def __repr__(self) -> str:
        return (
            f"Order(payout_cl_id={self.payout_cl_id!r}, state={self.state.value!r}, "
            f"amount={self.amount}, payout_id={self.payout_id!r})"
        )


@dataclass(frozen=True)
class Created:
    """What :meth:`OrderStore.create` did."""

    created: bool
    fingerprint: str
    state: str
    #: the order as just stored (only when ``created``), so the producer need not read it back
    order: Order | None = None

    @property
    def expired(self) -> bool:
        """The id was stored once and its order has expired: it is never used again."""
        return not self.created and self.state == EXPIRED

    @property
    def needs_submit(self) -> bool:
        """New, or stored earlier but never claimed: a (repeated) submit message is due.

        (A new order held for approval at enqueue is not ``received``: no message.)
        """
        return self.state == State.RECEIVED.value


def _order_from(payout_cl_id: str, data: Mapping[str, str]) -> Order:
    def opt_float(name: str) -> float | None:
        raw = data.get(name)
        return float(raw) if raw else None

    return Order(
        payout_cl_id=payout_cl_id,
        state=State(data["state"]),
        amount=int(data["amount"]),
        bank_name=data.get("bank_name", ""),
        number_mask=data.get("number_mask") or "****",
        name_mask=data.get("name_mask") or "",
        notify_url=data.get("notify_url") or None,
        created_at=float(data.get("created_at", 0)),
        updated_at=float(data.get("updated_at") or data.get("created_at") or 0),
        payout_id=data.get("payout_id") or None,
        sign_type=data.get("sign_type") or None,
        submitted_at=opt_float("submitted_at"),
        reason=data.get("reason", ""),
        fields=dict(data),
    )


class OrderStore:
    """All reads and atomic writes of orders in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        events_maxlen: int = 1_000_000,
        retention_s: float = 30 * 86400.0,
        result_redeliver_s: float | None = None,
        replica_acks: int = 0,
        replica_ack_timeout_s: float = 1.0,
        history_max: int = HISTORY_MAX,
        submit_queue: str | None = None,
        submit_rate: float = 0.0,
        pii_keys: KeyRing | None = None,
        pii_retention_s: float | None = None,
    ) -> None:
        self.redis = client
        #: PII_KEYS: seals the account number and name of every order stored (required to
        #: create or send; reading and showing an order never opens them)
        self.pii_keys = pii_keys
        #: a final order is queued for erasure of its personal fields this long after
        #: (None: the whole record's expiry, ORDER_RETENTION_DAYS, is the only erasure)
        self.pii_retention_s = pii_retention_s
        self.events_maxlen = events_maxlen
        self.retention_s = retention_s
        #: no longer decides anything: whether a result is owed is the store's switch
        #: (``payouts:results``, written by the workers, D44); kept for callers' signatures
        self.result_redeliver_s = result_redeliver_s
        #: replicas that must acknowledge the create and the claim (0: none waited for)
        self.replica_acks = replica_acks
        self.replica_ack_timeout_s = replica_ack_timeout_s
        self.history_max = history_max
        #: the broker's submit list when the broker is this Redis (create.lua reads its length)
        self.submit_queue = submit_queue or NO_QUEUE
        #: GATEWAY_MAX_RPS: a new order's re-drive waits for the queue ahead (create.lua)
        self.submit_rate = repr(float(submit_rate))
        # registered once per client: EVALSHA, falling back to EVAL on NOSCRIPT
        self._create = client.register_script(_script("create"))
        self._transition = client.register_script(_script("transition"))
        self._lease = client.register_script(_script("lease"))

    # -- writes ---------------------------------------------------------------

    def _replicated(self, script: Any, keys_: list[str], args: list[Any], *, probe: bool) -> tuple[Any, int]:
        """Run ``script`` and ``WAIT`` on one connection (a non-transactional pipeline).

        WAIT measures the connection's own last write, so both must share it; ``probe``
        writes :data:`keys.ACK_PROBE` first when the script may write nothing (then the
        acknowledgement still covers every earlier write the script saw).
        """
        timeout_ms = max(1, int(self.replica_ack_timeout_s * 1000))
        pipe = self.redis.pipeline(transaction=False)
        script(keys=keys_, args=args, client=pipe)
        if probe:
            pipe.incr(keys.ACK_PROBE)
        pipe.wait(self.replica_acks, timeout_ms)
        out = pipe.execute()
        return out[0], int(out[-1])

    def create(
        self,
        payout: Payout,
        *,
        due_at: float,
        now: float | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Created:
        """Store ``payout`` as ``received`` unless its id exists (then report that one).

        ``extra``: more fields stored with the order (no personal data), e.g. ``requested_by``.
        ``due_at`` is read on the caller's clock and stored relative to the Redis server's;
        ``created_at`` is the server's time. ``now`` only simulates time (tests, benchmarks).
        """
        ring = self._ring()
        fp = ring.fingerprint(payout.fingerprint_values())
        i = payout.payout_cl_id
        # the id is the key's suffix and an absent notify_url is not stored: every byte
        # here is paid once per order for ORDER_RETENTION_DAYS (docs/performance.md).
        # The account number and the name are sealed, bound to this order (worker/pii.py).
        pairs: list[str] = [
            "amount",
            str(payout.amount),
            "bank_name",
            payout.bank_name,
            *self._sealed_pairs(ring, i, payout),
        ]
        if payout.notify_url:
            pairs += ["notify_url", payout.notify_url]
        for k, v in (extra or {}).items():
            pairs += [k, v]
        create_keys = [
            keys.order(i),
            keys.history(i),
            keys.DUE,
            keys.COUNTS,
            keys.EVENTS,
            keys.IDS,
            keys.OPEN_SINCE,
            keys.METRIC_TRANSITIONS,
            self.submit_queue,
            keys.SERVER,
            keys.LOSS_EPOCH,
        ]
        create_args: list[Any] = [
            i,
            fp,
            "" if now is None else stamp(now),
            _due_arg(due_at, now),
            self.events_maxlen,
            self.submit_rate,
            *pairs,
        ]
        if self.replica_acks > 0:
            # the repeat of an enqueue writes nothing itself: probe, so WAIT covers the record
            res, acks = self._replicated(self._create, create_keys, create_args, probe=True)
            if acks < self.replica_acks:
                raise NotDurable("the enqueue", i, acks, self.replica_acks, self.replica_ack_timeout_s)
        else:
            res = self._create(keys=create_keys, args=create_args)
        if int(res[0]) == 1:
            created_at = str(res[3])
            stored = {
                "state": State.RECEIVED.value,
                "fp": fp,
                "created_at": created_at,
                "ep": str(res[4]),
                **dict(zip(pairs[::2], pairs[1::2], strict=True)),
            }
            # the entry create.lua wrote (millisecond stamp, as cjson encodes it)
            entry = {"at": float(created_at), "from": "", "to": State.RECEIVED.value, "reason": "enqueued"}
            order = _order_from(i, stored)
            order = replace(order, history=[entry], due_at=float(res[2]))
            return Created(True, fp, State.RECEIVED.value, order)
        return Created(False, str(res[1]), str(res[2]))

    def _ring(self) -> KeyRing:
        if self.pii_keys is None:
            raise ConfigError(
                "missing required setting: PII_KEYS (or PII_KEYS_FILE): the keys that seal account "
                "numbers and names at rest (docs/operating.md, personal data)"
            )
        return self.pii_keys

    def _sealed_pairs(self, ring: KeyRing, payout_cl_id: str, payout: Payout) -> list[str]:
        """The personal fields sealed, each with its masked form."""
        return [
            "name",
            ring.seal(payout_cl_id, "name", payout.name),
            "number",
            ring.seal(payout_cl_id, "number", payout.number),
            MASK_FIELDS["name"],
            mask_name(payout.name),
            MASK_FIELDS["number"],
            mask_number(payout.number),
        ]

    def same_data(self, stored_fingerprint: str, payout: Payout) -> bool:
        """Whether an order stored with ``stored_fingerprint`` holds ``payout``'s data (a
        repeated enqueue) -- compared under the key that made the stored fingerprint."""
        kid = stored_fingerprint.partition(":")[0]
        ring = self._ring()
        if not stored_fingerprint or kid not in ring:
            return False
        return hmac.compare_digest(ring.fingerprint(payout.fingerprint_values(), kid), stored_fingerprint)

    def payout_of(self, order: Order) -> Payout:
        """The payout to send: the order's sealed fields opened (the only place they are).

        Raises :class:`PersonalDataUnreadable` when a field is missing, erased, sealed with
        a key not in PII_KEYS, or does not open for this order (moved or altered): the
        caller never sends such an order.
        """
        ring = self._ring()
        i = order.payout_cl_id
        if order.erased:
            raise PersonalDataUnreadable(i, "erased")
        opened: dict[str, str] = {}
        for name in SEALED_FIELDS:
            value = order.fields.get(name)
            if not value:
                raise PersonalDataUnreadable(i, f"{name}: missing")
            try:
                opened[name] = ring.open(i, name, value)
            except SealBroken as exc:
                raise PersonalDataUnreadable(i, str(exc)) from None
        return Payout(
            payout_cl_id=i,
            amount=order.amount,
            bank_name=order.bank_name,
            name=opened["name"],
            number=opened["number"],
            notify_url=order.notify_url,
        )

    def transition(
        self,
        payout_cl_id: str,
        target: State | None,
        *,
        reason: str,
        sources: Iterable[State] | None = None,
        due: float | str | None = None,
        fields: Mapping[str, Any] | None = None,
        expect: tuple[str, str | None] | None = None,
        now: float | None = None,
        guard: bool = False,
        replicated: bool = False,
        quiet: bool = False,
    ) -> State | None:
        """Atomically move an order to ``target`` if its state is in ``sources``.

        ``target=None`` keeps the state and only sets fields and the due time (then
        ``sources`` is required). ``sources`` defaults to every state the table lets
        reach ``target``. ``due``: None leaves the due-index alone, :data:`REMOVE`
        takes the order out, a number is the next due time. ``expect=(field, value)``
        adds a condition on a field (value None: the field must be absent). ``quiet``
        moves the state without a history entry or an event (a not-sent return to
        ``received``: counted on the order instead; the next logged move writes the
        catch-up entry). Returns the previous state when applied, None when refused;
        raises OrderNotFound for an unknown id.

        ``guard``: refuse with :class:`LossEpochPending` an order created before the last
        loss epoch and not checked at the gateway since (the claim always is).
        ``replicated``: wait for the store's replica acknowledgements; if they do not
        come, the write is applied on the master and :class:`NotDurable` is raised (the
        caller undoes it).
        """
        res = self._run(
            payout_cl_id,
            target,
            reason=reason,
            sources=sources,
            due=due,
            fields=fields,
            expect=expect,
            now=now,
            guard=guard,
            replicated=replicated,
            quiet=quiet,
        )
        if int(res[0]) != 1:
            return None
        if target is not None and target in FINAL and self.pii_retention_s is not None:
            # queued for erasure of its personal fields (worker/privacy.py); if this write is
            # lost, the record's own expiry (ORDER_RETENTION_DAYS) still erases them
            at = (time.time() if now is None else now) + self.pii_retention_s
            self.redis.zadd(keys.PII_ERASE, {payout_cl_id: at})
        return State(str(res[1]))

    def claim(
        self,
        payout_cl_id: str,
        *,
        reason: str,
        due: float,
        fields: Mapping[str, Any],
        now: float | None = None,
    ) -> int | None:
        """The claim ``received -> submitting``: increments ``submit_attempts`` inside the
        same compare-and-set and returns the new attempt number (None when refused), so two
        racing submits can never claim with the same number."""
        res = self._run(
            payout_cl_id,
            State.SUBMITTING,
            reason=reason,
            sources={State.RECEIVED},
            due=due,
            fields={**fields, "submit_attempts": INCR},
            expect=None,
            now=now,
            guard=True,
            replicated=True,
        )
        if int(res[0]) != 1:
            return None
        return int(res[2])

    def _run(
        self,
        payout_cl_id: str,
        target: State | None,
        *,
        reason: str,
        sources: Iterable[State] | None,
        due: float | str | None,
        fields: Mapping[str, Any] | None,
        expect: tuple[str, str | None] | None,
        now: float | None,
        guard: bool = False,
        replicated: bool = False,
        quiet: bool = False,
    ) -> list[Any]:
        if target is None:
            if sources is None:
                raise ValueError("sources is required when the state is kept")
            allowed = frozenset(sources)
        else:
            table = sources_of(target)
            allowed = table if sources is None else frozenset(sources) & table
        src = "," + ",".join(sorted(s.value for s in allowed)) + ","
        pairs: list[str] = []
        for k, v in (fields or {}).items():
            pairs.extend((k, DELETE if v is None else str(v)))
        due_arg = "" if due is None else (REMOVE if due == REMOVE else _due_arg(float(due), now))
        if target is not None and target not in OPEN and due is None:
            due_arg = REMOVE  # only open orders are scheduled
        i = payout_cl_id
        tkeys = [
            keys.order(i),
            keys.history(i),
            keys.DUE,
            keys.COUNTS,
            keys.EVENTS,
            keys.REVIEW,
            keys.IDS,
            keys.OPEN_SINCE,
            keys.METRIC_TRANSITIONS,
            keys.METRIC_TIME_TO_FINAL,
            keys.APPROVALS,
            # a move into a final state flags its result as owed when the workers say so (D44)
            keys.RESULTS,
        ]
        if guard:
            tkeys += [keys.LOSS_EPOCH, keys.SERVER]  # KEYS[13], KEYS[14]
        targs: list[Any] = [
            i,
            src,
            "" if target is None else target.value,
            "" if now is None else stamp(now),
            due_arg,
            reason[:200],
            self.events_maxlen,
            int(self.retention_s),
            *((expect[0], DELETE if expect[1] is None else expect[1]) if expect else ("", "")),
            "1" if quiet else "",
            self.history_max,
            *pairs,
        ]
        acks = -1
        if replicated and self.replica_acks > 0:
            res, acks = self._replicated(self._transition, tkeys, targs, probe=False)
        else:
            res = self._transition(keys=tkeys, args=targs)
        code = int(res[0])
        if code == -1:
            raise OrderNotFound(payout_cl_id)
        if code == -2:
            raise LossEpochPending(payout_cl_id, str(res[2]), float(res[3]))
        if code == -3:
            raise OverrideRequired(payout_cl_id, str(res[1]))
        if code == -4:
            raise ApprovalRefused(f"the approval deadline of {payout_cl_id!r} has passed (APPROVAL_TTL)")
        if code == 1 and 0 <= acks < self.replica_acks:
            err = NotDurable("the transition", i, acks, self.replica_acks, self.replica_ack_timeout_s)
            err.result = list(res)  # applied: the caller undoes it (e.g. the claim's attempt)
            raise err
        return list(res)

    def server_time(self) -> float:
        """The Redis server's clock (TIME): the one clock the store's times are on (D35)."""
        sec, usec = self.redis.time()
        return float(sec) + float(usec) / 1e6

    def loss_epoch(self) -> tuple[int, float]:
        """The last loss epoch: (number, time before which orders are checked); (0, 0.0) if none."""
        no, at = self.redis.hmget(keys.LOSS_EPOCH, ["no", "at"])
        return int(no or 0), float(at or 0.0)

    def transition_or_raise(self, payout_cl_id: str, target: State, **kw: Any) -> State:
        """Like :meth:`transition`, raising InvalidTransition when refused."""
        prev = self.transition(payout_cl_id, target, **kw)
        if prev is None:
            current = self.state_of(payout_cl_id)
            raise InvalidTransition(payout_cl_id, current.value if current else None, target)
        return prev

    def lease_due(self, *, now: float, batch: int, lease_s: float) -> list[str]:
        """Take up to ``batch`` due ids and push their due time to ``now + lease_s``
        (written as ``repr(now + lease_s)``: the lease token checks compare)."""
        res = self._lease(keys=[keys.DUE], args=[repr(now), batch, repr(now + lease_s)])
        return [str(x) for x in res]

    # -- reads ----------------------------------------------------------------

    def get(self, payout_cl_id: str, *, with_history: bool = True) -> Order | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.order(payout_cl_id))
        pipe.zscore(keys.DUE, payout_cl_id)
        if with_history:
            pipe.lrange(keys.history(payout_cl_id), 0, -1)
        res = pipe.execute()
        if not res[0]:
            return None
        order = _order_from(payout_cl_id, res[0])
        history = [json.loads(h) for h in res[2]] if with_history else []
        return replace(order, history=history, due_at=res[1])

    def require(self, payout_cl_id: str) -> Order:
        order = self.get(payout_cl_id)
        if order is None:
            raise OrderNotFound(payout_cl_id)
        return order

    def state_of(self, payout_cl_id: str) -> State | None:
        raw = self.redis.hget(keys.order(payout_cl_id), "state")
        return State(str(raw)) if raw else None

    def get_many(self, ids: Iterable[str]) -> dict[str, Order]:
        """Orders by id (missing ids are left out), in one round trip, without history."""
        ids = list(ids)
        pipe = self.redis.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(keys.order(i))
        return {i: _order_from(i, d) for i, d in zip(ids, pipe.execute(), strict=True) if d}

    def counts(self) -> dict[str, int]:
        raw = self.redis.hgetall(keys.COUNTS)
        return {s.value: int(raw.get(s.value, 0)) for s in State}

    def due_backlog(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return int(self.redis.zcount(keys.DUE, "-inf", repr(now)))

    def oldest_due(self) -> tuple[str, float] | None:
        res = self.redis.zrange(keys.DUE, 0, 0, withscores=True)
        return (str(res[0][0]), float(res[0][1])) if res else None

    def used_before(self, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that were ever stored (their tombstone exists), live or expired."""
        ids = list(ids)
        if not ids:
            return set()
        seen = self.redis.hmget(keys.IDS, ids)
        return {i for i, v in zip(ids, seen, strict=True) if v is not None}

    def queue_page(self, key: str, start: int, count: int) -> list[tuple[str, float]]:
        """One page of a queue index (``keys.REVIEW``, ``keys.APPROVALS``): (id, since), oldest
        first, from rank ``start``. One ZRANGE: O(log N + count), whatever the queue's length."""
        res: Any = self.redis.zrange(key, start, start + count - 1, withscores=True)
        return [(str(i), float(t)) for i, t in res]

    def backfill_approvals(self, page: int = 500) -> int:
        """Index the orders that entered awaiting_approval before ``keys.APPROVALS`` existed.

        Runs once per store (``keys.APPROVALS_BUILT``): reads the due-index a page at a time
        (awaiting_approval orders are open, so they are all in it) and adds those waiting.
        Concurrent runs are harmless (ZADD NX); a page reader skips an id whose order has
        moved on. Returns the number of ids read.
        """
        if self.redis.exists(keys.APPROVALS_BUILT):
            return 0
        start, seen = 0, 0
        while True:
            ids = [str(i) for i in self.redis.zrange(keys.DUE, start, start + page - 1)]
            if not ids:
                break
            pipe = self.redis.pipeline(transaction=False)
            for i in ids:
                pipe.hmget(keys.order(i), ["state", "updated_at"])
            found: list[list[Any]] = pipe.execute()
            waiting = {
                i: float(got[1] or 0)
                for i, got in zip(ids, found, strict=True)
                if got[0] == State.AWAITING_APPROVAL.value
            }
            if waiting:
                self.redis.zadd(keys.APPROVALS, waiting, nx=True)
            seen += len(ids)
            start += page
        self.redis.set(keys.APPROVALS_BUILT, stamp(time.time()))
        return seen

    def review_ids(self, limit: int = 1000) -> list[str]:
        return [str(x) for x in self.redis.zrange(keys.REVIEW, 0, limit - 1)]
