"""The TLS listener (``tls_port``): the same API over TLS with a self-signed certificate,
and ``tls_handshake`` faults that break the handshake before any HTTP is read."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.sandbox.conftest import CREATE_PATH, FAST, TOKEN, payout_body
from worker.sandbox.client import SandboxAdmin, SandboxAdminError
from worker.sandbox.config import SANDBOX_HEADER
from worker.sandbox.process import SandboxProcess, start_sandbox


@pytest.fixture(scope="module")
def tls_process() -> Iterator[SandboxProcess]:
    with start_sandbox(**FAST, tls_port=0) as process:
        yield process


@pytest.fixture
def tgw(tls_process: SandboxProcess) -> SandboxProcess:
    tls_process.admin.reset()
    return tls_process


@pytest.fixture
def https(tgw: SandboxProcess) -> Iterator[requests.Session]:
    """A client that trusts the sandbox's certificate (and nothing else)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = tgw.tls_cert_path
    yield session
    session.close()


def _create(
    session: requests.Session, url: str, payout_cl_id: str, timeout: float = 5.0
) -> requests.Response:
    body = json.dumps(payout_body(payout_cl_id)).encode()
    headers = {"Content-Type": "application/json;charset=utf-8"}
    return session.post(url + CREATE_PATH, data=body, headers=headers, timeout=timeout)


def _handshake(gw: SandboxProcess, timeout_s: float = 2.0) -> str:
    """One raw TLS handshake with the listener; the outcome's name ("ok" or the error)."""
    host = urlsplit(gw.tls_url).hostname or "127.0.0.1"
    context = ssl.create_default_context(cafile=gw.tls_cert_path)
    with socket.create_connection((host, gw.tls_port), timeout=timeout_s) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host):
                return "ok"
        except (OSError, ssl.SSLError) as exc:
            return type(exc).__name__


# ------------------------------------------------------------------ the listener


def test_tls_serves_the_same_api_with_a_trusted_self_signed_certificate(tgw, https):
    """Create, query and admin over TLS; the order is the same ledger's; header present."""
    # when
    response = _create(https, tgw.tls_url, "tls-1")
    # then
    assert response.json()["error_code"] == "0000"
    assert response.headers[SANDBOX_HEADER] == "1"
    assert [o["payout_cl_id"] for o in tgw.admin.ledger()["orders"]] == ["tls-1"]
    listed = https.get(
        tgw.tls_url + CREATE_PATH,
        params={"payout_cl_id": "tls-1"},
        headers={"Authorization": TOKEN},
        timeout=5,
    ).json()
    assert listed["total"] == 1
    over_tls = SandboxAdmin(tgw.tls_url, verify=tgw.tls_cert_path)
    assert over_tls.id_counts("tls-1")["payouts_created"] == 1
    over_tls.close()
    # plain HTTP still serves on the main port
    assert requests.get(tgw.url + "/_sandbox/health", timeout=5).json()["status"] == "ok"


def test_tls_info_names_the_certificate(tgw):
    """GET /_sandbox/tls and the SandboxProcess attributes agree; the fingerprint is the
    certificate's SHA-256; localhost and 127.0.0.1 are both valid names."""
    info = tgw.admin.tls()
    assert info["enabled"] is True
    assert (info["url"], info["port"], info["cert_path"]) == (tgw.tls_url, tgw.tls_port, tgw.tls_cert_path)
    der = ssl.PEM_cert_to_DER_cert(Path(tgw.tls_cert_path).read_text())
    assert info["fingerprint_sha256"] == hashlib.sha256(der).hexdigest()
    assert tgw.admin.health()["tls"] == info
    localhost = f"https://localhost:{tgw.tls_port}/_sandbox/health"
    assert requests.get(localhost, verify=tgw.tls_cert_path, timeout=5).json()["status"] == "ok"


def test_a_client_that_does_not_trust_the_certificate_fails(tgw):
    """The certificate is self-signed: the system trust store refuses it."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tgw.tls_url + "/_sandbox/health", timeout=5)


def test_no_tls_listener_by_default(gw):
    """Without tls_port there is no TLS listener."""
    assert gw.admin.tls() == {"enabled": False}
    assert gw.tls_url == ""


def test_restart_keeps_the_tls_port_and_certificate():
    """restart() serves TLS again on the same port with the same certificate file."""
    with start_sandbox(tls_port=0) as gw:
        port, cert = gw.tls_port, gw.tls_cert_path
        fingerprint = gw.admin.tls()["fingerprint_sha256"]
        gw.restart()
        assert (gw.tls_port, gw.tls_cert_path) == (port, cert)
        assert gw.admin.tls()["fingerprint_sha256"] == fingerprint
        assert requests.get(gw.tls_url + "/_sandbox/health", verify=cert, timeout=5).ok


# ------------------------------------------------------------------ handshake faults


def test_stall_holds_the_handshake_and_nothing_is_sent(tgw, https):
    """tls_handshake/stall: TCP is accepted, the handshake never completes; the client gives
    up and the gateway has read no request: no create request, no order."""
    # given
    tgw.admin.set_faults([{"kind": "tls_handshake", "mode": "stall", "seconds": 2}])
    # when
    started = time.monotonic()
    with pytest.raises(requests.exceptions.RequestException) as caught:
        _create(https, tgw.tls_url, "st-1", timeout=0.3)
    # then
    assert time.monotonic() - started < 1.5
    assert isinstance(caught.value, (requests.exceptions.Timeout, requests.exceptions.SSLError))
    ledger = tgw.admin.ledger()
    assert ledger["orders"] == []
    assert ledger["create_requests"] == {}
    stats = tgw.admin.stats()
    assert stats["tls"]["stall:close"] == 1
    assert stats["requests"].get("create", 0) == 0
    assert tgw.admin.faults()[0]["fired"] == 1


@pytest.mark.parametrize("then", ["close", "reset"])
def test_stall_then_drop(tgw, then):
    """After `seconds` the stalled connection is closed (FIN) or reset (RST) mid-handshake."""
    tgw.admin.set_faults([{"kind": "tls_handshake", "mode": "stall", "seconds": 0.2, "then": then}])
    outcome = _handshake(tgw, timeout_s=3)
    assert outcome != "ok"
    assert outcome != "TimeoutError"
    assert tgw.admin.stats()["tls"][f"stall:{then}"] == 1


def test_stall_then_proceed_is_a_slow_handshake(tgw, https):
    """then=proceed: the handshake completes late and the request is served."""
    tgw.admin.set_faults([{"kind": "tls_handshake", "mode": "stall", "seconds": 0.3, "then": "proceed"}])
    started = time.monotonic()
    response = _create(https, tgw.tls_url, "slow-1")
    assert time.monotonic() - started >= 0.3
    assert response.json()["error_code"] == "0000"


@pytest.mark.parametrize("how", ["garbage", "alert", "close", "reset"])
def test_abort_breaks_the_handshake_and_nothing_is_sent(tgw, https, how):
    """tls_handshake/abort: after the ClientHello the sandbox answers garbage, a fatal alert,
    a FIN or an RST; the client's request fails and no create request was read."""
    # given
    tgw.admin.set_faults([{"kind": "tls_handshake", "mode": "abort", "how": how, "times": 1}])
    # when
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        _create(https, tgw.tls_url, "ab-1")
    # then
    assert tgw.admin.ledger()["create_requests"] == {}
    assert tgw.admin.stats()["tls"][f"abort:{how}"] == 1
    # the rule is spent: the retry goes through
    assert _create(https, tgw.tls_url, "ab-1").json()["error_code"] == "0000"


def test_handshake_faults_are_seeded_per_connection(tgw):
    """With a probability, which connections fail is drawn from the seed: a reset with
    keep_faults replays the same sequence."""
    tgw.admin.set_faults([{"kind": "tls_handshake", "mode": "abort", "how": "close", "probability": 0.5}])
    first = [_handshake(tgw) == "ok" for _ in range(16)]
    tgw.admin.reset(keep_faults=True)
    again = [_handshake(tgw) == "ok" for _ in range(16)]
    assert again == first
    assert 2 <= first.count(False) <= 14


def test_handshake_faults_do_not_touch_the_plain_port(tgw, api_for):
    """tls_handshake rules apply to the TLS listener only."""
    tgw.admin.set_faults([{"kind": "tls_handshake", "mode": "abort"}])
    assert api_for(tgw.url).create("plain-1").json()["error_code"] == "0000"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "tls_handshake", "mode": "stall", "match": "^x"}, "cannot match"),
        ({"kind": "tls_handshake", "mode": "stall", "then": "answer"}, "then must be one of"),
        ({"kind": "tls_handshake", "mode": "abort", "how": "explode"}, "how must be one of"),
        ({"kind": "tls_handshake", "mode": "abort", "seconds": 1}, "takes only 'how'"),
        ({"kind": "tls_handshake", "mode": "stall", "how": "reset"}, "stall takes 'then'"),
        ({"kind": "tls_handshake", "mode": "hang"}, "mode of 'tls_handshake'"),
        ({"kind": "tls_handshake", "mode": "stall", "endpoints": ["create"]}, "unknown field"),
    ],
)
def test_bad_tls_rules_are_refused(gw, rule, message):
    """Invalid TLS handshake fault rules are refused with a message naming the problem."""
    with pytest.raises(SandboxAdminError, match=message):
        gw.admin.set_faults([rule])


def test_python_m_sandbox_prints_the_tls_line_first_and_removes_its_certificate():
    """`python -m worker.sandbox --tls-port 0`: the TLS line (URL and cert path) comes before the
    plain listening line; on SIGTERM it exits 0 and removes its temporary certificate."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "worker.sandbox", "--port", "0", "--tls-port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        tls_line = process.stdout.readline()
        plain_line = process.stdout.readline()
        assert tls_line.startswith("sandbox tls listening on https://127.0.0.1:")
        assert plain_line.startswith("sandbox listening on http://127.0.0.1:")
        url, cert = tls_line.split(" on ", 1)[1].strip().split(" cert ")
        assert requests.get(url + "/_sandbox/health", verify=cert, timeout=5).json()["status"] == "ok"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()
    assert not Path(cert).exists()
