"""Run a sandbox gateway in a subprocess (``sys.executable -m worker.sandbox``) for tests and demos.

    with start_sandbox(pending_s=0.05, processing_s=0.05) as gw:
        requests.post(gw.url + "/gateway/api/v2/payouts", json=...)
        gw.admin.ledger()

The port is chosen by the child (``--port 0``) and read from its listening line, so two
sandboxes never race for a port. The platform key goes through the environment, never
the command line. With ``tls_port`` set, ``tls_url``, ``tls_port`` and ``tls_cert_path``
name the TLS listener and the certificate to trust; the certificate lives in a directory
of this object (``tls_dir`` when given), so ``restart()`` keeps it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .client import SandboxAdmin
from .config import SandboxConfig

_LISTENING = re.compile(r"sandbox listening on (http://\S+?):(\d+)")
_TLS_LISTENING = re.compile(r"sandbox tls listening on (https://\S+?):(\d+) cert (\S.*)")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SandboxProcess:
    """A sandbox gateway child process: ``start()``, ``stop()``, ``.url``, ``.admin``."""

    def __init__(self, config: SandboxConfig, *, startup_timeout_s: float = 15.0) -> None:
        self.config = config
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = config.port
        self._admin: SandboxAdmin | None = None
        self.output: list[str] = []
        #: The TLS listener (``config.tls_port`` not None): its URL, port and the path of
        #: the self-signed certificate a client must trust (``verify=tls_cert_path``).
        self.tls_url = ""
        self.tls_port = config.tls_port
        self.tls_cert_path = ""
        self._tls_dir = config.tls_dir
        if config.tls_port is not None and config.tls_dir is None:
            # one certificate for this object's whole life, so restart() keeps it
            self._tls_dir = tempfile.mkdtemp(prefix="sandbox-tls-")
            weakref.finalize(self, shutil.rmtree, self._tls_dir, True)

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def admin(self) -> SandboxAdmin:
        """The admin client of the running sandbox (``RuntimeError`` before ``start()``)."""
        if self._admin is None:
            raise RuntimeError("the sandbox has not been started")
        return self._admin

    def start(self) -> SandboxProcess:
        """Start the child and wait (against a deadline) until its health endpoint answers."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("sandbox already running")
        settings = self.config.to_dict()
        settings["port"] = self.port
        settings["tls_port"] = self.tls_port
        settings["tls_dir"] = self._tls_dir
        env = dict(os.environ)
        env["SANDBOX_PLATFORM_KEY"] = self.config.platform_key
        env["SANDBOX_AUTHORIZATION"] = self.config.authorization
        env.pop("SANDBOX_PLATFORM_KEY_FILE", None)
        env.pop("SANDBOX_AUTHORIZATION_FILE", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "worker.sandbox", "--config", json.dumps(settings)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=str(_PROJECT_ROOT),
        )
        lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._drain, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise TimeoutError(f"sandbox did not start: {''.join(self.output)[-2000:]}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.stop()
                raise RuntimeError(f"sandbox exited at start: {''.join(self.output)[-2000:]}")
            tls = _TLS_LISTENING.search(line)
            if tls:
                self.tls_url = f"{tls.group(1)}:{tls.group(2)}"
                self.tls_port = int(tls.group(2))
                self.tls_cert_path = tls.group(3).strip()
            found = _LISTENING.search(line)
            if found:
                self.url = f"{found.group(1)}:{found.group(2)}"
                self.port = int(found.group(2))
                break
        self._admin = SandboxAdmin(self.url)
        self._admin.wait_ready(max(0.5, deadline - time.monotonic()))
        return self

    def _drain(self, stream: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in stream:
            self.output.append(line)
            if len(self.output) > 5000:
                del self.output[:1000]
            lines.put(line)
        lines.put(None)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``timeout_s``). The port is kept."""
        if self._admin is not None:
            self._admin.close()
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        if process.stdout is not None:
            with contextlib.suppress(OSError):
                process.stdout.close()

    def restart(self) -> SandboxProcess:
        """Stop and start again on the same port (all orders are forgotten)."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> SandboxProcess:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def start_sandbox(port: int | None = None, **config_overrides: Any) -> Iterator[SandboxProcess]:
    """Run a sandbox in a subprocess for the ``with`` block; a free port when ``port`` is None.

    ``config_overrides`` are :class:`~worker.sandbox.config.SandboxConfig` fields, e.g.
    ``pending_s=0.05, faults=[{"kind": "create_lost", "mode": "empty"}]``.
    """
    config = SandboxConfig(**{"quiet": True, **config_overrides, "port": port or 0})
    sandbox = SandboxProcess(config)
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()
