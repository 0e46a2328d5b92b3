"""The sandbox's TLS listener: a self-signed certificate and TLS handshake faults.

The listener accepts TCP connections itself, asks the fault rules of kind
``tls_handshake`` about each one, and either breaks the handshake or hands the socket to
asyncio's TLS machinery (``loop.connect_accepted_socket(..., ssl=...)``) with the same
aiohttp request handler as the plain port. So the TLS port serves the same API, and a
handshake fault happens before any HTTP byte is read: nothing was sent.

``tls_handshake`` modes:

* ``stall``: accept the TCP connection and never answer the ClientHello for ``seconds``
  (default 30), then ``then``: ``close`` (FIN, default), ``reset`` (RST) or ``proceed``
  (complete the handshake late and serve the request: a slow handshake).
* ``abort``: read the ClientHello, then ``how``: ``garbage`` (default: non-TLS bytes, then
  close), ``alert`` (a TLS fatal ``handshake_failure`` alert, then close), ``close`` (FIN) or
  ``reset`` (RST).

The certificate is made with the ``openssl`` command (no Python dependency): an EC P-256
self-signed certificate, valid 30 days, for ``localhost``, ``127.0.0.1``, ``::1`` and the
configured host. Clients trust it by its path (``cert.pem``), e.g.
``requests.get(url, verify=cert_path)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .faults import FaultBook, FaultRule

log = logging.getLogger("sandbox.tls")

CERT_NAME: Final = "cert.pem"
KEY_NAME: Final = "key.pem"
#: A TLS 1.2 record: alert (21), version 3.3, length 2, fatal (2), handshake_failure (40).
HANDSHAKE_FAILURE_ALERT: Final = bytes([21, 3, 3, 0, 2, 2, 40])
GARBAGE: Final = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n\x00\xff\x17garbage"
_READ_S: Final = 5.0


class CertificateError(RuntimeError):
    """The TLS certificate could not be made (no ``openssl``, or it failed)."""


def ensure_certificate(directory: Path, hosts: Iterable[str]) -> tuple[Path, Path]:
    """``directory/cert.pem`` and ``key.pem``: reused when both exist, else generated."""
    cert, key = directory / CERT_NAME, directory / KEY_NAME
    if cert.is_file() and key.is_file():
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateError(
            f"the openssl command is needed to make a TLS certificate; or put {CERT_NAME} and "
            f"{KEY_NAME} in tls_dir ({directory})"
        )
    directory.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for host in ("localhost", "127.0.0.1", "::1", *hosts):
        if host and host not in names and host not in ("0.0.0.0", "::"):  # noqa: S104
            names.append(host)
    san = ",".join(f"{'IP' if _is_ip(name) else 'DNS'}:{name}" for name in names)
    tmp_cert, tmp_key = directory / f".{os.getpid()}.{CERT_NAME}", directory / f".{os.getpid()}.{KEY_NAME}"
    command = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(tmp_key),
        "-out",
        str(tmp_cert),
        "-days",
        "30",
        "-subj",
        "/CN=payout-worker sandbox gateway",
        "-addext",
        f"subjectAltName={san}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "extendedKeyUsage=serverAuth",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    if result.returncode != 0:
        raise CertificateError(f"openssl failed: {result.stderr.strip()[-500:]}")
    tmp_key.chmod(0o600)
    tmp_key.replace(key)
    tmp_cert.replace(cert)
    return cert, key


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def fingerprint_sha256(cert: Path) -> str:
    """The SHA-256 of the certificate's DER form, lowercase hex (for pinning)."""
    der = ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii"))
    return hashlib.sha256(der).hexdigest()


class TlsListener:
    """Accepts TCP, applies ``tls_handshake`` faults, else serves TLS with ``handler_factory``."""

    def __init__(
        self,
        faults: FaultBook,
        handler_factory: Callable[[], Any],
        context: ssl.SSLContext,
        stats: Counter[str],
        *,
        quiet: bool = True,
    ) -> None:
        self.faults = faults
        self.handler_factory = handler_factory
        self.context = context
        self.stats = stats
        self.quiet = quiet
        self.sock: socket.socket | None = None
        self.port = 0
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, backlog: int) -> int:
        """Listen on ``host:port`` (0: a free port); return the port."""
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(sock))
        return self.port

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        for task in list(self._connections):
            task.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. EMFILE: do not spin, do not die
                log.warning("tls accept failed: %s", exc)
                await asyncio.sleep(0.05)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._connection(conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _connection(self, conn: socket.socket) -> None:
        self.stats["connections"] += 1
        rule = self.faults.pick("tls_handshake")
        handed_over = False
        try:
            if rule is not None:
                handed_over = await self._fault(conn, rule)
                if not handed_over:
                    return
            await self._serve(conn)
            handed_over = True
        except asyncio.CancelledError:
            raise
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self.stats["handshake_failed"] += 1
            if not self.quiet:
                log.info("tls handshake failed: %s", type(exc).__name__)
        finally:
            if not handed_over:
                with contextlib.suppress(OSError):
                    conn.close()

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(
            self.handler_factory, conn, ssl=self.context, ssl_handshake_timeout=30.0
        )
        self.stats["handshakes"] += 1

    async def _fault(self, conn: socket.socket, rule: FaultRule) -> bool:
        """Break this connection's handshake as ``rule`` says; True: serve it after all."""
        if rule.mode == "stall":
            then = str(rule.get("then", "close"))
            self.stats[f"stall:{then}"] += 1
            seconds = float(rule.get("seconds", 30.0))
            if then == "proceed":
                await asyncio.sleep(seconds)  # the ClientHello waits in the kernel
                return True
            # read and drop what the client sends, so that closing sends a FIN, not an RST
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_drain(conn), seconds)
            if then == "reset":
                _reset(conn)
            return False
        how = str(rule.get("how", "garbage"))
        self.stats[f"abort:{how}"] += 1
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(loop.sock_recv(conn, 65536), _READ_S)  # the ClientHello
        if how == "reset":
            _reset(conn)
        elif how in ("garbage", "alert"):
            with contextlib.suppress(OSError):
                await loop.sock_sendall(conn, GARBAGE if how == "garbage" else HANDSHAKE_FAILURE_ALERT)
        if how != "reset":
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            # let the client read our bytes and close first; then drop what is left
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_drain(conn), 1.0)
        return False


async def _drain(conn: socket.socket) -> None:
    """Read and discard until the peer closes."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.sock_recv(conn, 65536)
        except OSError:
            return
        if not data:
            return


def _reset(conn: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.close()


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


class TlsSetup:
    """Where the certificate lives; removes a temporary directory at ``cleanup()``."""

    def __init__(self, tls_dir: str | None, hosts: Iterable[str]) -> None:
        self.temporary = tls_dir is None
        self.directory = Path(tempfile.mkdtemp(prefix="sandbox-tls-")) if tls_dir is None else Path(tls_dir)
        self.cert, self.key = ensure_certificate(self.directory, hosts)

    def info(self, url: str, port: int) -> dict[str, Any]:
        return {
            "enabled": True,
            "url": url,
            "port": port,
            "cert_path": str(self.cert),
            "fingerprint_sha256": fingerprint_sha256(self.cert),
        }

    def cleanup(self) -> None:
        if self.temporary:
            shutil.rmtree(self.directory, ignore_errors=True)
