"""Pause (kill switch) of the operator desk.

``keys.PAUSE`` is a hash, scope ("*" = every bank, else a bank code) -> JSON {reason, by,
since, source[, need]}. While a scope is paused no create request leaves for it: the
pre-send gate (:func:`worker.desk.gate.pre_send`) is asked before the claim and again right
before the POST. Held orders stay ``received`` (their due time moves on, nothing else is
written); queries, callbacks and the sweep's checks go on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Final

from worker import keys
from worker.errors import PayoutError
from worker.logs import get_logger
from worker.payout import BANK_RE
from worker.runtime import Runtime

log = get_logger("payouts.controls")


ALL: Final = "*"
SOURCES: Final = ("operator", "balance", "merchant_code")
#: the pause sources the balance poller may end by itself
AUTO_RESUMABLE: Final = frozenset({"balance"})


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
