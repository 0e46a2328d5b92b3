"""The Redis connection: one client factory, and the check that the server keeps what it is given."""

from __future__ import annotations

import redis


def make_redis(url: str, *, pool_size: int = 64) -> redis.Redis:
    """A Redis client with bounded timeouts and a pool sized to the worker's concurrency."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        max_connections=pool_size,
        retry_on_timeout=False,
    )


def check_redis_persistence(url: str) -> tuple[list[str], list[str]]:
    """Return (problems, warnings): eviction is a problem, no AOF a warning."""
    client = make_redis(url, pool_size=2)
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
