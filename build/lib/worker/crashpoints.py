"""Named places where a test can kill the process hard (SIGKILL, no cleanup).

``crash_point("after_claim")`` does nothing unless the environment variable
``PAYOUTS_CRASH_AT`` equals ``"after_claim"``; then the process dies on the spot,
as it would from an OOM kill or a power cut. The variable is read once per
process, so an unused point costs one comparison with a cached value.

The points (all in :func:`worker.submission.submit_order`):

* ``before_claim`` -- the message was delivered, the order is still ``received``;
* ``after_claim`` -- ``submitting`` is written, the create request not sent;
* ``after_response`` -- the gateway answered, the answer is not written;
* ``after_state_write`` -- the answer is written, the task not returned (so, with
  ``acks_late``, its message is never acknowledged).

Only tests set the variable; in production it is absent and every call is a no-op.
"""

from __future__ import annotations

import os
import signal
from typing import Final

#: the environment variable naming the point at which to die
ENV: Final = "PAYOUTS_CRASH_AT"
#: every point the code defines (a test asking for another name is a typo)
POINTS: Final = frozenset({"before_claim", "after_claim", "after_response", "after_state_write"})

_target: str | None = None
_loaded = False


def _load() -> str:
    global _target, _loaded
    _target = os.environ.get(ENV) or ""
    _loaded = True
    return _target


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL when ``PAYOUTS_CRASH_AT == name``; else nothing."""
    if (_target if _loaded else _load()) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Read ``PAYOUTS_CRASH_AT`` again on the next call (tests in one process)."""
    global _target, _loaded
    _target, _loaded = None, False
