"""payout-worker: sign, submit and drive IDR bank payouts to a final status.

The front door for a web app::

    from worker import enqueue_payout, get_payout

Nothing here imports Celery or Redis until a name is used, so ``import worker`` is
cheap. The package installs one top-level name, ``worker``: the Celery tasks and the
sandbox gateway install inside it (``worker.tasks``, ``worker.sandbox``), so a host
project's own ``config`` or ``tasks`` package does not collide with it (D22).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.errors import (
        ConfigError,
        DuplicatePayout,
        InvalidPayout,
        InvalidTransition,
        OrderNotFound,
        PayoutError,
    )
    from worker.payout import Payout
    from worker.producer import enqueue_payout, get_payout
    from worker.states import State
    from worker.store import Order

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "enqueue_payout": "worker.producer",
    "get_payout": "worker.producer",
    "Payout": "worker.payout",
    "Order": "worker.store",
    "State": "worker.states",
    "PayoutError": "worker.errors",
    "InvalidPayout": "worker.errors",
    "DuplicatePayout": "worker.errors",
    "OrderNotFound": "worker.errors",
    "InvalidTransition": "worker.errors",
    "ConfigError": "worker.errors",
}

__all__ = [
    "ConfigError",
    "DuplicatePayout",
    "InvalidPayout",
    "InvalidTransition",
    "Order",
    "OrderNotFound",
    "Payout",
    "PayoutError",
    "State",
    "enqueue_payout",
    "get_payout",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
