"""Every Redis key name the project uses, in one place."""

from __future__ import annotations

from typing import Final

PREFIX: Final = "payouts"

#: sorted set: open order id -> unix time it is next due (the scheduler)
DUE: Final = f"{PREFIX}:due"
#: hash: state -> number of orders in it
COUNTS: Final = f"{PREFIX}:counts"
#: stream: one entry per state change, for the web app
EVENTS: Final = f"{PREFIX}:events"
#: sorted set: review order id -> time it entered review
REVIEW: Final = f"{PREFIX}:review"
#: sorted set: awaiting_approval order id -> time it entered awaiting_approval (transition.lua)
APPROVALS: Final = f"{PREFIX}:approvals"
#: string: set once the approvals index holds the orders that waited before it existed
APPROVALS_BUILT: Final = f"{PREFIX}:approvals:built"
#: string: unix time of the last completed sweep (liveness)
SWEEP_LAST: Final = f"{PREFIX}:sweep:last"
#: hash: token bucket for the gateway rate limit
RATE: Final = f"{PREFIX}:ratelimit"
#: string: set while the gateway asked us to back off (429)
BACKOFF: Final = f"{PREFIX}:ratelimit:backoff"
#: hash: pause scope ("*" = every bank, else a bank code) -> JSON {reason, by, since, source};
#: source is "operator" or "balance" (an automatic balance hold) or "merchant_code"
PAUSE: Final = f"{PREFIX}:pause"
#: hash: every payout_cl_id ever stored -> unix seconds it was first stored. Never expires
#: and holds no personal data: an id is used once, forever (an expired order's id is refused)
IDS: Final = f"{PREFIX}:ids"
#: hash: the last balance the gateway reported {available, total, frozen, at[, limit]};
#: ``limit`` (= available, written only within an hour of a 0018) is what the pre-send gate
#: compares an order's amount with
BALANCE: Final = f"{PREFIX}:balance"
#: string (EX 3600): set by a 0018 answer; while it lives the polled balance gates sending
BALANCE_LOW: Final = f"{PREFIX}:balance:low"
#: string (SET NX PX): taken by the process that polls the balance this interval
BALANCE_POLL: Final = f"{PREFIX}:balance:poll"
#: hash: held-by-pause counters {held: n} (submit attempts that found a pause)
HELD: Final = f"{PREFIX}:held"
#: sorted set: open order id -> unix time it became open (the age of the oldest open order)
OPEN_SINCE: Final = f"{PREFIX}:open"
#: hash: "from|to" -> number of state changes (metrics; written by create/transition.lua)
METRIC_TRANSITIONS: Final = f"{PREFIX}:metrics:transitions"
#: hash: "state|le" / "state|sum" / "state|count" -> enqueue-to-final histogram (transition.lua)
METRIC_TIME_TO_FINAL: Final = f"{PREFIX}:metrics:time_to_final"
#: hash: "endpoint|outcome|code" -> gateway requests (worker.metrics, flushed from each process)
METRIC_GATEWAY: Final = f"{PREFIX}:metrics:gateway"
#: hash: "endpoint|le" / "endpoint|sum" / "endpoint|count" -> gateway latency histogram
METRIC_GATEWAY_LATENCY: Final = f"{PREFIX}:metrics:gateway_latency"
#: sorted set: final order id -> unix time its personal fields are erased (PII_RETENTION_DAYS;
#: read by the sweep in bounded batches, worker/privacy.py)
PII_ERASE: Final = f"{PREFIX}:pii:erase"
#: string: the SCAN cursor of an interrupted ``payouts rekey`` (resumed from here)
PII_REKEY_CURSOR: Final = f"{PREFIX}:pii:rekey_cursor"
#: hash: sha256 of an imported file -> JSON {at, file, rows}, for `payouts enqueue`
IMPORTS: Final = f"{PREFIX}:imports"

#: stream: the operator console's audit trail of actions outside an order's history
#: (denied, refused, conflicting, pause/resume); fields actor, roles, action, result, ...
CONSOLE_AUDIT: Final = f"{PREFIX}:console:audit"
#: hash: "<action>:<result>" -> number of console actions (ok, denied, conflict, invalid, error)
CONSOLE_ACTIONS: Final = f"{PREFIX}:console:actions"


def order(payout_cl_id: str) -> str:
    """Hash holding one order's record."""
    return f"{PREFIX}:order:{payout_cl_id}"


def history(payout_cl_id: str) -> str:
    """List of one order's state changes (JSON entries, oldest first)."""
    return f"{PREFIX}:history:{payout_cl_id}"


def duplicate(digest: str) -> str:
    """String (PX DUPLICATE_WINDOW): the order id last enqueued for one beneficiary+amount digest."""
    return f"{PREFIX}:dup:{digest}"


#: hash: console user name -> AES-GCM-sealed TOTP secret (worker.console.signin)
CONSOLE_TOTP: Final = f"{PREFIX}:console:totp"


def console_session(sid_hash: str) -> str:
    """Hash (EXPIRE = idle timeout): one console session {user, roles, created, stage}."""
    return f"{PREFIX}:console:session:{sid_hash}"


def console_login(kind: str, who: str) -> str:
    """Hash (EXPIRE): sign-in attempts of a user ("user", sha256 of the name) or an address."""
    return f"{PREFIX}:console:login:{kind}:{who}"


def console_totp_used(user: str, step: int) -> str:
    """String (EX 2 min): this user's TOTP code of this 30 s step was accepted (no replay)."""
    return f"{PREFIX}:console:totp:used:{user}:{step}"


def console_audit(payout_cl_id: str) -> str:
    """List of console actions on one order that changed nothing (denied, refused, stale), newest first."""
    return f"{PREFIX}:console:audit:{payout_cl_id}"


#: string: the identity ("run_id:master_replid") of the Redis server the store last ran on;
#: a process connecting to a server with another identity records a loss epoch
SERVER: Final = f"{PREFIX}:server"
#: hash: the last loss epoch {no, at, previous, current, detected_at}: orders created
#: before ``at`` are queried at the gateway before any create (worker/durability.py)
LOSS_EPOCH: Final = f"{PREFIX}:loss_epoch"
#: string: present while the workers publish RESULT_TASK (value: RESULT_REDELIVER_AFTER
#: seconds); written by the workers (start, every sweep). transition.lua reads it: a move into
#: a final state then owes the web app a result, whichever process made the move (D44)
RESULTS: Final = f"{PREFIX}:results"
#: hash: payout_cl_id -> JSON {payout_id, outcome, code, reason, at}: a create answer that
#: arrived for an order the store no longer held (D40). Never expires; an operator reads it
#: with the gateway's record (the id's tombstone was written again: it is never sent again)
LOST: Final = f"{PREFIX}:lost"
#: string: written before WAIT when the guarded write itself wrote nothing (an idempotent
#: repeat of an enqueue), so the replica acknowledgement covers the earlier write
ACK_PROBE: Final = f"{PREFIX}:ack_probe"


def metric_counter(name: str) -> str:
    """Hash of one generic counter (worker.metrics.incr): "label=value,..." -> count."""
    return f"{PREFIX}:metrics:counter:{name}"


def worker_heartbeat(worker: str) -> str:
    """String: unix time the worker (Celery node name) last consumed a message."""
    return f"{PREFIX}:worker:{worker}"
