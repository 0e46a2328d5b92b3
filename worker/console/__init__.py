"""The payout desk console (``/console/`` of the web process, or mounted in a host app).

from worker.console import make_console, mount
app = mount(host_wsgi_app, "/console", make_console())
"""

from __future__ import annotations

from worker.console.app import make_console, mount
from worker.console.auth import Actor, BasicAuth, TrustedHeader, hash_password
from worker.console.config import ConsoleConfig, load_console_config

__all__ = [
    "Actor",
    "BasicAuth",
    "ConsoleConfig",
    "TrustedHeader",
    "hash_password",
    "load_console_config",
    "make_console",
    "mount",
]
