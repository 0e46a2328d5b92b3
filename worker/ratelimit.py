"""A token bucket in Redis shared by every worker process (``GATEWAY_MAX_RPS``)."""

from __future__ import annotations

import time
from importlib import resources

import redis

from worker import keys


class RateLimiter:
    """``acquire`` blocks up to ``max_wait_s`` for a token; ``pause`` backs everyone off."""

    def __init__(self, client: redis.Redis, rate_per_s: float, burst: float | None = None) -> None:
        self.redis = client
        self.rate = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        text = resources.files("worker").joinpath("lua/ratelimit.lua").read_text(encoding="utf-8")
        self._take = client.register_script(text)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def try_take(self) -> float:
        """Take a token now; return 0, or the seconds to wait before asking again.

        Without a bucket (``GATEWAY_MAX_RPS=0``) there is no token to take, but the back-off
        a 429 set (:meth:`pause`) is still honoured (D51)."""
        if not self.enabled:
            left_ms = int(self.redis.pttl(keys.BACKOFF))
            return left_ms / 1000.0 if left_ms > 0 else 0.0
        wait_ms = int(self._take(keys=[keys.RATE, keys.BACKOFF], args=[self.rate, self.burst]))
        return wait_ms / 1000.0

    def acquire(self, max_wait_s: float = 5.0) -> bool:
        """Wait for a token, at most ``max_wait_s``; False when none came in time."""
        deadline = time.monotonic() + max_wait_s
        while True:
            wait = self.try_take()
            if wait <= 0:
                return True
            if time.monotonic() + wait > deadline:
                return False
            time.sleep(wait)

    def pause(self, seconds: float) -> None:
        """After a 429: every process waits ``seconds`` before the next request."""
        self.redis.set(keys.BACKOFF, "1", px=max(1, int(seconds * 1000)))
