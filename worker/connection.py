"""The Redis connection: one client factory, and the check that the server keeps what it is given."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from worker.durability import ConnectGuard, identity_hook
from worker.settings import Settings

_CLIENT_KW: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "health_check_interval": 30,
    "retry_on_timeout": False,
}


def make_redis(url: str, *, pool_size: int = 64, identity_check: bool = True) -> redis.Redis:
    """A Redis client with bounded timeouts and a pool sized to the worker's concurrency.

    ``identity_check``: every new connection runs the loss-epoch check before its first
    command (worker/durability.py); only probes that never touch orders turn it off.
    """
    kw: dict[str, Any] = {**_CLIENT_KW, "max_connections": pool_size}
    if identity_check:
        kw["redis_connect_func"] = identity_hook
    return redis.Redis.from_url(url, **kw)


def sentinel_manager(s: Settings) -> Sentinel:
    """The Sentinel client for ``REDIS_SENTINELS`` (auth: ``REDIS_SENTINEL_PASSWORD``)."""
    skw: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    if s.redis_sentinel_password is not None:
        skw["password"] = s.redis_sentinel_password.reveal()
    return Sentinel(  # type: ignore[no-untyped-call]
        list(s.redis_sentinels), sentinel_kwargs=skw, socket_timeout=10, socket_connect_timeout=5
    )


def url_auth(url: str) -> dict[str, Any]:
    """Username, password and db of a redis:// URL (what it supplies under Sentinel)."""
    parts = urlsplit(url)
    out: dict[str, Any] = {"db": int((parts.path or "/0").lstrip("/") or 0)}
    if parts.password:
        out["password"] = unquote(parts.password)
    if parts.username:
        out["username"] = unquote(parts.username)
    return out


def redis_for(
    s: Settings, *, pool_size: int = 64, identity_check: bool = True, guard: ConnectGuard | None = None
) -> redis.Redis:
    """The store's client: ``REDIS_URL``, or the master ``REDIS_SENTINELS`` name.

    Under Sentinel the client asks the sentinels for the master on every new connection
    and follows a failover (a demoted master's read-only error becomes a connection error,
    so a claim sent there fails instead of succeeding).
    """
    hook = (guard or identity_hook) if identity_check else None
    if not s.redis_sentinels:
        kw: dict[str, Any] = {**_CLIENT_KW, "max_connections": pool_size}
        if hook is not None:
            kw["redis_connect_func"] = hook
        return redis.Redis.from_url(s.redis_url, **kw)
    kw = {**_CLIENT_KW, "max_connections": pool_size, **url_auth(s.redis_url)}
    if hook is not None:
        kw["redis_connect_func"] = hook
    client: redis.Redis = sentinel_manager(s).master_for(  # type: ignore[no-untyped-call]
        s.redis_sentinel_master, **kw
    )
    return client


def check_redis_persistence(url: str) -> tuple[list[str], list[str]]:
    """Return (problems, warnings): eviction is a problem, no AOF a warning."""
    client = make_redis(url, pool_size=2, identity_check=False)
    try:
        cfg = client.config_get("maxmemory-policy")
        aof = client.config_get("appendonly")
    except Exception as exc:
        return [], [f"cannot read Redis config ({type(exc).__name__}); check persistence by hand"]
    finally:
        client.close()
    problems, warnings = [], []
    policy = cfg.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        problems.append(
            f"Redis maxmemory-policy is {policy!r}: orders and queue keys could vanish; set noeviction"
        )
    if aof.get("appendonly", "no") != "yes":
        warnings.append("Redis AOF is off: a Redis restart loses orders written since the last save")
    return problems, warnings
