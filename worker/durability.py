"""Durability: what the store's Redis keeps, and what to do when it lost writes anyway.

Two defences (docs/reliability.md, "Durability"; D2, D36, D37 in docs/decisions.md):

* **Modes** (``REDIS_DURABILITY``). ``strict`` (the default) refuses a store whose Redis
  does not fsync every write (AOF ``appendfsync always``) and, with replicas
  (``REDIS_REPLICA_ACKS``, 1 under Sentinel), makes the enqueue's create and the claim wait
  for replica acknowledgements (``WAIT``) before the caller or the POST proceeds.
  ``relaxed`` accepts ``everysec`` with a warning. :func:`check_durability` decides;
  :func:`require_durable` is called by every process before it uses the store.
* **The loss-epoch guard** (any Redis >= 6.2). Every new connection of the store's client
  runs ``epoch.lua`` before any other command (:func:`identity_hook`, redis-py's
  ``redis_connect_func``): when the server's ``run_id:master_replid`` is not the one the
  store last ran on (a restart or a failover), it records a loss epoch. That is the early
  warning; the authority is the claim itself, which runs the same identity check inside
  its script (D37: a proxy that keeps connections open across a failover cannot skip it).
  Every order is stamped at create with the epoch number then current (``ep``); the claim
  refuses an order stamped with an older number until the worker has queried it at the
  gateway (worker/submission.py). Numbers and the Redis server's own ``TIME``, never a
  host's clock (D36, D35).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import redis

from worker import keys
from worker.logs import get_logger
from worker.settings import ConfigError, Settings
from worker.store import script_text

log = get_logger("payouts.durability")

_EPOCH_LUA: Final = script_text("epoch")

#: what each mode protects, for ``payouts doctor`` and the startup log
PROTECTS: Final = {
    "strict": (
        "an acknowledged enqueue and claim are on disk (appendfsync always) and, with "
        "REDIS_REPLICA_ACKS>0, in that many replicas' memory; a restart or failover that "
        "still loses writes is caught by the loss-epoch guard (query before create)"
    ),
    "relaxed": (
        "a host crash may lose the last second of writes (appendfsync everysec): lost "
        "claims are caught by the loss-epoch guard (query before create), a lost enqueue "
        "is lost (the web app's call returned) and shows up in `payouts reconcile` as an "
        "orphan if it was sent"
    ),
}


@dataclass
class Epoch:
    """What the last run of ``epoch.lua`` on a connection said."""

    changed: bool
    identity: str
    no: int
    at: float


#: the last epoch seen by this process (``payouts doctor``, tests)
last_epoch: Epoch | None = None


def check_identity(conn: Any) -> Epoch:
    """Run ``epoch.lua`` on ``conn`` (a connected redis-py Connection); log a new loss epoch."""
    global last_epoch
    conn.send_command(
        "EVAL",
        _EPOCH_LUA,
        3,
        keys.SERVER,
        keys.LOSS_EPOCH,
        keys.COUNTS,
    )
    res = conn.read_response()
    epoch = Epoch(bool(int(res[0])), _text(res[1]), int(_text(res[2]) or 0), float(_text(res[3]) or 0))
    last_epoch = epoch
    if epoch.changed:
        log.warning(
            "redis.loss_epoch",
            epoch=epoch.no,
            server=epoch.identity,
            detail="the store runs on another Redis server than before (restart or failover): "
            "orders created before now are queried at the gateway before any create",
        )
    return epoch


def identity_hook(conn: Any) -> None:
    """redis-py ``redis_connect_func``: the usual handshake, then the identity check."""
    conn.on_connect()
    check_identity(conn)


class StoreRefused(redis.exceptions.ConnectionError):
    """The store's Redis breaks ``REDIS_DURABILITY``: no command is sent on this connection."""


class ConnectGuard:
    """A per-client ``redis_connect_func``: the identity check on every new connection and,
    while :attr:`pending` (the process could not reach Redis when it started), the
    durability check first; a store that fails it is refused (:class:`StoreRefused`).

    ``probe`` makes the client the deferred check runs on: one built like the store's own
    (its URL with TLS and CA settings, its auth, Sentinel), without this hook. A plain
    ``host:port`` client failed against a TLS store, so a process that started while the
    store was down never connected (D47)."""

    def __init__(self, probe: Callable[[], redis.Redis]) -> None:
        self.pending: tuple[Settings, str] | None = None
        self.probe = probe

    def __call__(self, conn: Any) -> None:
        conn.on_connect()
        pending = self.pending
        if pending is not None:
            s, process = pending
            probe = self.probe()
            try:
                d = check_durability(probe, s)
            finally:
                probe.close()
            if d.problems:
                raise StoreRefused(f"refusing to use the store ({process}): " + "; ".join(d.problems))
            self.pending = None
        check_identity(conn)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# --------------------------------------------------------------------------- the modes


@dataclass
class Durability:
    """The store's Redis as the durability rules see it."""

    mode: str
    appendonly: str = "?"
    appendfsync: str = "?"
    maxmemory_policy: str = "?"
    role: str = "?"
    connected_replicas: int = 0
    min_replicas_to_write: str = "?"
    server: str = "?"
    replica_acks: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def protects(self) -> str:
        return PROTECTS[self.mode]

    def summary(self) -> str:
        acks = f", replica acks {self.replica_acks}" if self.replica_acks else ""
        return (
            f"REDIS_DURABILITY={self.mode}: appendonly {self.appendonly}, appendfsync "
            f"{self.appendfsync}, role {self.role}, {self.connected_replicas} replica(s){acks}"
        )


def check_durability(client: redis.Redis, s: Settings) -> Durability:
    """Read the server's persistence and replication and apply ``REDIS_DURABILITY``."""
    d = Durability(mode=s.redis_durability, replica_acks=s.required_replica_acks)
    strict = s.strict
    # unreachable: ConnectionError / TimeoutError propagate (the caller defers the check)
    info = client.info("server")
    repl = client.info("replication")
    d.server = (
        f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info.get('redis_version', '?')}"
    )
    d.role = str(repl.get("role", "?"))
    d.connected_replicas = int(repl.get("connected_slaves", 0) or 0)
    try:
        cfg = client.config_get("appendonly")
        cfg.update(client.config_get("appendfsync"))
        cfg.update(client.config_get("maxmemory-policy"))
        cfg.update(client.config_get("min-replicas-to-write"))
    except redis.exceptions.RedisError as exc:
        text = (
            f"cannot read the Redis config (CONFIG GET refused: {type(exc).__name__}), so "
            "appendfsync cannot be verified"
        )
        if strict:
            d.problems.append(
                f"REDIS_DURABILITY=strict: {text}; allow CONFIG GET, or set REDIS_DURABILITY=relaxed "
                "if your provider guarantees fsync on every write"
            )
        else:
            d.warnings.append(f"{text}; check persistence by hand")
        return d
    d.appendonly = str(cfg.get("appendonly", "no"))
    d.appendfsync = str(cfg.get("appendfsync", "?"))
    d.maxmemory_policy = str(cfg.get("maxmemory-policy", "noeviction"))
    d.min_replicas_to_write = str(cfg.get("min-replicas-to-write", "?"))
    if d.maxmemory_policy != "noeviction":
        d.problems.append(
            f"Redis maxmemory-policy is {d.maxmemory_policy!r}: orders and queue keys could vanish; "
            "set noeviction"
        )
    fix = "set appendonly yes and appendfsync always (config/redis.conf)"
    if d.appendonly != "yes":
        if strict:
            d.problems.append(
                f"REDIS_DURABILITY=strict needs the Redis AOF: appendonly is {d.appendonly!r} "
                f"({fix}, or REDIS_DURABILITY=relaxed)"
            )
        else:
            d.warnings.append("Redis AOF is off: a Redis restart loses orders written since the last save")
    elif d.appendfsync != "always":
        if strict:
            d.problems.append(
                f"REDIS_DURABILITY=strict needs appendfsync always, the Redis has appendfsync "
                f"{d.appendfsync!r}: a host crash could lose acknowledged enqueues and claims "
                f"({fix}, or REDIS_DURABILITY=relaxed)"
            )
        else:
            d.warnings.append(
                f"REDIS_DURABILITY=relaxed with appendfsync {d.appendfsync}: a host crash can lose "
                "the last second of acknowledged enqueues and claims (lost claims are caught by "
                "the loss-epoch guard; lost enqueues are not)"
            )
    if strict and s.redis_sentinels and s.redis_replica_acks == 0:
        d.problems.append(
            "REDIS_DURABILITY=strict with REDIS_SENTINELS needs REDIS_REPLICA_ACKS >= 1: a failover "
            "loses every write the promoted replica had not received"
        )
    if d.role != "master" and d.role != "?":
        # a warning, not a refusal: writes fail (and are retried) until it is a master again
        d.warnings.append(f"the store's Redis is a {d.role}, not a master: writes are refused until it is")
    if d.replica_acks > d.connected_replicas:
        d.warnings.append(
            f"REDIS_REPLICA_ACKS={d.replica_acks} but {d.connected_replicas} replica(s) connected: "
            "enqueues fail (retryable) and claims wait until enough replicas are back"
        )
    if strict and d.connected_replicas and not d.replica_acks:
        d.warnings.append(
            f"{d.connected_replicas} replica(s) connected and REDIS_REPLICA_ACKS=0: a manual "
            "failover to one of them can lose acknowledged writes"
        )
    return d


def require_durable(client: redis.Redis, s: Settings, *, process: str) -> Durability:
    """Refuse (ConfigError naming the setting) a store that breaks ``REDIS_DURABILITY``.

    Raises redis' ConnectionError/TimeoutError when the server does not answer."""
    d = check_durability(client, s)
    for w in d.warnings:
        log.warning("redis.durability", process=process, mode=d.mode, detail=w)
    if d.problems:
        raise ConfigError(f"refusing to start the {process}: " + "; ".join(d.problems))
    log.info("redis.durability", process=process, mode=d.mode, detail=d.summary())
    return d
