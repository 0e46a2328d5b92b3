"""Checks of the environment the worker depends on (doctor, health, worker start)."""

from __future__ import annotations

from worker.runtime import make_redis


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
            f"Redis maxmemory-policy is {policy!r}: orders and queue keys could vanish; "
            "set noeviction"
        )
    if aof.get("appendonly", "no") != "yes":
        warnings.append("Redis AOF is off: a Redis restart loses orders written since the last save")
    return problems, warnings
