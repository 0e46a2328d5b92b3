"""Fixtures for the sandbox gateway's own tests: real HTTP over 127.0.0.1.

One sandbox subprocess per test module (fast timings), reset before every test; a
signed-request helper (``api``); a callback receiver that can refuse the first N
notifications.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from worker.sandbox.process import SandboxProcess, start_sandbox
from worker.sandbox.signature import HMAC_SHA256, MD5, sign

KEY = "sandbox-secret-key"
TOKEN = "sandbox-token"
PLATFORM = "PF0001"
CREATE_PATH = "/gateway/api/v2/payouts"

#: Fast timings: an order is final ~0.1 s after creation; callbacks retry every ~0.05 s.
FAST = {
    "pending_s": 0.05,
    "processing_s": 0.05,
    "failure_ratio": 0.0,
    "seed": 7,
    "callback_delays_s": (0.05, 0.05, 0.05, 0.1, 0.1, 0.2),
    "callback_timeout_s": 1.0,
}


def wait_for(predicate: Callable[[], Any], timeout_s: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)


def payout_body(
    payout_cl_id: str,
    /,
    *,
    key: str = KEY,
    sign_type: str | None = MD5,
    notify_url: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid, signed create body; ``overrides`` change fields before signing
    (a value of ``None`` removes the field)."""
    body: dict[str, Any] = {
        "platform_id": PLATFORM,
        "service_id": "SVC0004",
        "payout_cl_id": payout_cl_id,
        "amount": "5000000",
        "currency": "idr",
        "bank_name": "BCA",
        "name": "Budi Santoso",
        "number": "1234567890",
        "request_time": str(int(time.time())),
    }
    if notify_url:
        body["notify_url"] = notify_url
    body.update(overrides)
    body = {k: v for k, v in body.items() if v is not None}
    if sign_type == HMAC_SHA256:
        body["sign_type"] = HMAC_SHA256
    body["sign"] = sign(body, key, sign_type or MD5)
    return body


class GatewayApi:
    """Calls the sandbox's gateway endpoints the way a merchant would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False

    def post_raw(
        self,
        data: bytes | str,
        content_type: str = "application/json;charset=utf-8",
        timeout: float = 5.0,
    ) -> requests.Response:
        return self.http.post(
            self.url + CREATE_PATH,
            data=data,
            headers={"Content-Type": content_type},
            timeout=timeout,
        )

    def create(self, payout_cl_id: str, /, timeout: float = 5.0, **kwargs: Any) -> requests.Response:
        body = payout_body(payout_cl_id, **kwargs)
        return self.post_raw(json.dumps(body, ensure_ascii=False).encode(), timeout=timeout)

    def create_ok(self, payout_cl_id: str, **kwargs: Any) -> str:
        """Create and return the payout_id (asserting ``0000``)."""
        answer = self.create(payout_cl_id, **kwargs).json()
        assert answer["error_code"] == "0000", answer
        return str(answer["data"]["payout_id"])

    def list(self, token: str | None = TOKEN, timeout: float = 5.0, **params: Any) -> requests.Response:
        headers = {"Authorization": token} if token is not None else {}
        return self.http.get(self.url + CREATE_PATH, params=params, headers=headers, timeout=timeout)

    def single(self, payout_cl_id: str, token: str | None = TOKEN, timeout: float = 5.0) -> requests.Response:
        headers = {"Authorization": token} if token is not None else {}
        return self.http.get(f"{self.url}{CREATE_PATH}/{payout_cl_id}", headers=headers, timeout=timeout)

    def balance(self, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": token} if token is not None else {}
        return self.http.get(self.url + "/gateway/api/v2/platforms/balance", headers=headers, timeout=5)


@pytest.fixture(scope="module")
def sandbox_process() -> Iterator[SandboxProcess]:
    with start_sandbox(**FAST) as process:
        yield process


@pytest.fixture
def gw(sandbox_process: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, with no orders, counts or fault rules."""
    assert sandbox_process.admin is not None
    sandbox_process.admin.reset()
    return sandbox_process


@pytest.fixture
def api(gw: SandboxProcess) -> Iterator[GatewayApi]:
    client = GatewayApi(gw.url)
    yield client
    client.http.close()


def read_chunked(stream: Any, sizes: list[int]) -> bytes:
    """Read a ``Transfer-Encoding: chunked`` body; append each chunk's size to ``sizes``."""
    body = b""
    while True:
        size = int(stream.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return body
        sizes.append(size)
        body += stream.read(size)
        stream.readline()  # the CRLF after the chunk


class CallbackReceiver:
    """A merchant's notify_url on 127.0.0.1 that refuses the first ``refuse_first`` calls."""

    def __init__(self) -> None:
        self.refuse_first = 0
        #: How a refusal looks: "http500", "body" (200 with a non-0000 body) or "text".
        self.refusal = "http500"
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                chunks: list[int] = []
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = read_chunked(self.rfile, chunks)
                else:
                    raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append(
                        {
                            "raw": raw.decode(),
                            "content_type": self.headers.get("Content-Type"),
                            "at": time.time(),
                            "headers": dict(self.headers.items()),
                            "chunk_sizes": chunks,
                        }
                    )
                    refuse = len(receiver.received) <= receiver.refuse_first
                status, reply = 200, b'{"error_code":"0000"}'
                if refuse:
                    status, reply = {
                        "http500": (500, b'{"error_code":"9999"}'),
                        "body": (200, b'{"error_code":"0001"}'),
                        "text": (200, b"OK"),
                    }[receiver.refusal]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def bodies(self, payout_cl_id: str | None = None) -> list[dict[str, str]]:
        """Received bodies, every value kept as its sent text (docs/gateway.md §4.4)."""
        with self.lock:
            raws = [r["raw"] for r in self.received]
        parsed = [json.loads(raw, parse_int=str, parse_float=str) for raw in raws]
        return [p for p in parsed if payout_cl_id is None or p["payout_cl_id"] == payout_cl_id]

    def wait_count(
        self, n: int, payout_cl_id: str | None = None, timeout_s: float = 5.0
    ) -> list[dict[str, str]]:
        return wait_for(
            lambda: len(self.bodies(payout_cl_id)) >= n and self.bodies(payout_cl_id),
            timeout_s,
            f"{n} callbacks",
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver()
    yield server
    server.close()


@pytest.fixture
def make_body() -> Callable[..., dict[str, Any]]:
    """``make_body(payout_cl_id, key=, sign_type=, notify_url=, **overrides)``."""
    return payout_body


@pytest.fixture
def poll() -> Callable[..., Any]:
    """``poll(predicate, timeout_s, what)``: wait against a deadline, never a bare sleep."""
    return wait_for


@pytest.fixture
def api_for() -> Callable[[str], GatewayApi]:
    """``api_for(url)``: a gateway client for another sandbox instance."""
    return GatewayApi
