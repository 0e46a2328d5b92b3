"""Capped exponential backoff, shared by submission, checks and reports.

Its own module so that none of them imports another for it (the old
``checks -> reports -> submission -> checks`` import circle).
"""

from __future__ import annotations

import random

#: 2 ** this is the largest backoff factor: past it the cap applies anyway, and a float
#: power overflows at 2 ** 1024 (D29)
MAX_BACKOFF_EXPONENT = 30


def backoff_s(base_s: float, cap_s: float, exponent: int) -> float:
    """min(cap, base * 2 ** exponent) with the exponent clamped to [0, 30]."""
    factor: int = 2 ** min(MAX_BACKOFF_EXPONENT, max(0, exponent))
    return min(cap_s, base_s * factor)


def retry_delay_s(attempt: int, *, base_s: float = 1.0, cap_s: float = 300.0) -> float:
    """Capped exponential backoff with +-20% jitter (attempt 1 -> ~base)."""
    return backoff_s(base_s, cap_s, attempt - 1) * random.uniform(0.8, 1.2)
