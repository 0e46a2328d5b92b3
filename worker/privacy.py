"""Personal data in the store beyond create and send: erasure, re-encryption, key usage (D73).

* **Erasure**: a final order's personal fields (the sealed account number and name, their
  masks and the fingerprint) are removed ``PII_RETENTION_DAYS`` after it became final
  (the sweep reads :data:`keys.PII_ERASE` in bounded batches), or at once by
  ``payouts forget ID --reason``. The state, amounts, gateway ids, history and the id's
  tombstone stay: reconciliation and the never-reused id need them, not the beneficiary.
* **Rotation**: :func:`rekey_page` re-seals orders under the first key of ``PII_KEYS``,
  one SCAN page at a time from a stored cursor (an interrupted run resumes), each order
  replaced by a compare-and-set (``rekey.lua``): a worker's concurrent write wins and the
  order is read again, so a run is safe while workers send.
* **Key usage**: :func:`key_usage` counts the values each key id still protects (a key is
  retired from ``PII_KEYS`` only once it protects none).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import redis

from worker import keys
from worker.errors import InvalidTransition, OrderNotFound, PayoutError
from worker.payout import Payout
from worker.pii import (
    MASK_FIELDS,
    SEALED_FIELDS,
    KeyRing,
    SealBroken,
    is_sealed,
    key_id_of,
    mask_name,
    mask_number,
)
from worker.states import FINAL

#: what erasure removes: the sealed values, their masks and the fingerprint (an HMAC of them)
ERASED_FIELDS: Final = (*SEALED_FIELDS, *MASK_FIELDS.values(), "fp")
#: orders erased per sweep tick at most (one pipelined script call each: ~20 µs of Redis
#: time per order on the bench machine, so a tick's batch stays well under 50 ms)
ERASE_BATCH: Final = 500
_ORDER_MATCH: Final = keys.order("*")
_FINAL_ARG: Final = "," + ",".join(sorted(s.value for s in FINAL)) + ","


def _script(name: str) -> str:
    return resources.files("worker").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")


_scripts: dict[tuple[int, str], Any] = {}


def _registered(client: redis.Redis, name: str) -> Any:
    """One registered script per client and name (EVALSHA, EVAL on NOSCRIPT)."""
    k = (id(client), name)
    if k not in _scripts:
        _scripts[k] = client.register_script(_script(name))
    return _scripts[k]


# ------------------------------------------------------------------------------ erasure


def forget(client: redis.Redis, payout_cl_id: str, *, reason: str, now: float | None = None) -> str:
    """Erase one final order's personal fields now (``payouts forget``); returns its state.

    Raises OrderNotFound for an unknown id and InvalidTransition for an order that is not
    final (an open or review order still needs its data to be sent or settled)."""
    reason = reason.strip()
    if not reason:
        raise PayoutError("forget needs --reason (it is recorded)")
    res = _registered(client, "erase")(
        keys=[keys.order(payout_cl_id), keys.PII_ERASE],
        args=[
            payout_cl_id,
            _FINAL_ARG,
            repr(time.time() if now is None else now),
            reason[:200],
            *ERASED_FIELDS,
        ],
    )
    code, state = int(res[0]), str(res[1])
    if code == -1:
        raise OrderNotFound(payout_cl_id)
    if code == 0:
        raise InvalidTransition(payout_cl_id, state, "forgotten (only a final order's personal data is)")
    return state


def erase_due(client: redis.Redis, *, now: float | None = None, batch: int = ERASE_BATCH) -> int:
    """Erase the personal fields of final orders whose retention has passed (one bounded
    batch of :data:`keys.PII_ERASE`); returns how many were erased."""
    now = time.time() if now is None else now
    ids = [str(i) for i in client.zrangebyscore(keys.PII_ERASE, "-inf", repr(now), start=0, num=batch)]
    if not ids:
        return 0
    script = _registered(client, "erase")
    pipe = client.pipeline(transaction=False)
    for i in ids:
        script(
            keys=[keys.order(i), keys.PII_ERASE],
            args=[i, _FINAL_ARG, repr(now), "PII_RETENTION_DAYS", *ERASED_FIELDS],
            client=pipe,
        )
    return sum(1 for res in pipe.execute() if int(res[0]) == 1)


# ------------------------------------------------------------------------------ rotation


@dataclass
class RekeyReport:
    """What one or more pages of :func:`rekey_page` did."""

    #: the SCAN cursor to continue from (0: the keyspace was walked to the end)
    cursor: int = 0
    scanned: int = 0
    #: re-sealed under the newest key (plain-text values of an older version included)
    resealed: int = 0
    #: already under the newest key
    current: int = 0
    #: erased (nothing to re-seal)
    erased: int = 0
    #: a value that does not open: left as it is, listed (the submit sends it to review)
    unreadable: list[str] = field(default_factory=list)
    #: a concurrent write won the compare-and-set this many times (each order read again)
    retried: int = 0

    def add(self, other: RekeyReport) -> None:
        self.cursor = other.cursor
        self.scanned += other.scanned
        self.resealed += other.resealed
        self.current += other.current
        self.erased += other.erased
        self.unreadable += other.unreadable
        self.retried += other.retried


def _open_or_plain(ring: KeyRing, payout_cl_id: str, name: str, value: str) -> str:
    # a value of an older version of this program (stored before sealing) is plain text:
    # sealed now; everything in the sealed form must open, or it stays as it is
    return ring.open(payout_cl_id, name, value) if is_sealed(value) else value


def rekey_order(
    client: redis.Redis, ring: KeyRing, payout_cl_id: str, *, attempts: int = 5
) -> tuple[str, int]:
    """Re-seal one order under ``ring.current``; returns (outcome, retries) where outcome is
    ``resealed``, ``current``, ``erased``, ``gone`` or ``unreadable``."""
    script = _registered(client, "rekey")
    wanted = (*SEALED_FIELDS, *MASK_FIELDS.values(), "fp", "amount", "bank_name", "notify_url", "erased_at")
    for attempt in range(attempts):
        raw = client.hmget(keys.order(payout_cl_id), list(wanted))
        data = {k: (str(v) if v is not None else "") for k, v in zip(wanted, raw, strict=True)}
        if not any(data.values()):
            return "gone", attempt
        if data["erased_at"] or not (data["name"] or data["number"]):
            return "erased", attempt
        if (
            all(key_id_of(data[f]) == ring.current and is_sealed(data[f]) for f in SEALED_FIELDS)
            and key_id_of(data["fp"]) == ring.current
            and all(data[m] for m in MASK_FIELDS.values())
        ):
            return "current", attempt
        try:
            opened = {f: _open_or_plain(ring, payout_cl_id, f, data[f]) for f in SEALED_FIELDS}
        except SealBroken:
            return "unreadable", attempt
        payout = Payout(
            payout_cl_id=payout_cl_id,
            amount=int(data["amount"] or 0),
            bank_name=data["bank_name"],
            name=opened["name"],
            number=opened["number"],
            notify_url=data["notify_url"] or None,
        )
        new = {
            "name": ring.seal(payout_cl_id, "name", payout.name),
            "number": ring.seal(payout_cl_id, "number", payout.number),
            MASK_FIELDS["name"]: mask_name(payout.name),
            MASK_FIELDS["number"]: mask_number(payout.number),
            "fp": ring.fingerprint(payout.fingerprint_values()),
        }
        args: list[str] = []
        for f, v in new.items():
            args += [f, data[f], v]
        if int(script(keys=[keys.order(payout_cl_id)], args=args)) == 1:
            return "resealed", attempt
    return "unreadable", attempts  # kept changing under us: reported, tried on the next run


def rekey_page(client: redis.Redis, ring: KeyRing, *, cursor: int, count: int = 500) -> RekeyReport:
    """Re-seal the orders of one SCAN page from ``cursor``; the cursor to resume from is
    stored in :data:`keys.PII_REKEY_CURSOR` (deleted when the walk ends)."""
    nxt, found = client.scan(cursor=cursor, match=_ORDER_MATCH, count=count)
    out = RekeyReport(cursor=int(nxt))
    for k in found:
        pid = str(k)[len(keys.order("")) :]
        out.scanned += 1
        outcome, retries = rekey_order(client, ring, pid)
        out.retried += retries
        if outcome == "resealed":
            out.resealed += 1
        elif outcome == "current":
            out.current += 1
        elif outcome == "erased":
            out.erased += 1
        elif outcome == "unreadable":
            out.unreadable.append(pid)
    if out.cursor == 0:
        client.delete(keys.PII_REKEY_CURSOR)
    else:
        client.set(keys.PII_REKEY_CURSOR, out.cursor)
    return out


def rekey_cursor(client: redis.Redis) -> int:
    """Where an interrupted ``payouts rekey`` resumes (0: from the start)."""
    raw = client.get(keys.PII_REKEY_CURSOR)
    return int(raw) if raw else 0


# ------------------------------------------------------------------------------ key usage


def key_usage(client: redis.Redis, *, count: int = 1000) -> dict[str, int]:
    """How many stored values each key id protects (sealed fields and fingerprints), walking
    every order in SCAN pages; ``plain text`` counts values stored before sealing existed."""
    used: Counter[str] = Counter()
    cursor = 0
    wanted = [*SEALED_FIELDS, "fp"]
    while True:
        cursor, found = client.scan(cursor=cursor, match=_ORDER_MATCH, count=count)
        pipe = client.pipeline(transaction=False)
        for k in found:
            pipe.hmget(k, wanted)
        for values in pipe.execute():
            _count(used, zip(wanted, values, strict=True))
        if int(cursor) == 0:
            return dict(used)


def _count(used: Counter[str], values: Iterable[tuple[str, Any]]) -> None:
    for name, v in values:
        if not v:
            continue
        kid = key_id_of(str(v))
        if kid is not None:
            used[kid] += 1
        else:  # stored by a version before sealing: `payouts rekey` seals it
            used["unkeyed fingerprint" if name == "fp" else "plain text"] += 1
