"""The console's sign-in over WSGI on a real Redis: sessions, timeouts, guessing, TOTP, step-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyotp
import pytest

from tests.console.conftest import PASSWORD, Client, users
from worker import keys
from worker.console import audit
from worker.console.signin import COOKIE, SignInPolicy, TotpSecrets
from worker.harness.processes import wait_for
from worker.producer import enqueue_payout
from worker.runtime import Runtime
from worker.states import State

pytestmark = pytest.mark.console

SECRET = b"console-test-secret-0123456789"


@pytest.fixture
def make_desk(make_client: Callable[..., Client], runtime: Runtime) -> Callable[..., Client]:
    """``make_desk(**policy)``: a console with the sign-in form over the test Redis."""

    def make(rt: Runtime | None = None, **policy: Any) -> Client:
        return make_client(
            rt, identity=None, users=users(), basic_challenge=False, signin=SignInPolicy(**policy)
        )

    return make


def sign_in(c: Client, user: str, password: str = PASSWORD, remote: str = "192.0.2.10") -> Any:
    return c.post("/login", form={"user": user, "password": password}, remote=remote)


def enrol(rt: Runtime, user: str) -> pyotp.TOTP:
    uri = TotpSecrets(rt.redis, SECRET).enrol(user)
    assert uri is not None and uri.startswith("otpauth://totp/")
    return pyotp.parse_uri(uri)  # type: ignore[no-any-return]


def test_sign_in_sets_a_strict_cookie_and_never_promotes_a_planted_id(
    make_desk: Callable[..., Client], runtime: Runtime
) -> None:
    """Not signed in: every page sends to /login. A right password gives a new session id in
    an HttpOnly, Secure, SameSite=Strict cookie scoped to the console; an id planted before
    sign-in is not promoted."""
    c = make_desk()
    # given a visitor with a planted session id
    c.cookies[COOKIE] = "planted-id-0123456789"
    first = c.get("/")
    assert first.status == 303 and first.headers["Location"] == "/console/login"
    assert "Sign in" in c.get("/login").body
    # when they sign in
    r = sign_in(c, "otto")
    # then
    assert r.status == 303 and r.headers["Location"] == "/console/"
    cookie = r.headers["Set-Cookie"]
    for attr in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/console/"):
        assert attr in cookie, cookie
    assert c.cookies[COOKIE] != "planted-id-0123456789"
    page = c.get("/")
    assert page.status == 200 and "otto" in page.body and "Sign out" in page.body
    # the stored key is the id's hash: the id itself is not in Redis
    assert not any(c.cookies[COOKIE] in k for k in runtime.redis.keys("payouts:console:session:*"))


def test_sign_out_ends_the_session_on_the_server(make_desk: Callable[..., Client], runtime: Runtime) -> None:
    """Sign-out deletes the session in Redis: the old cookie value no longer works anywhere."""
    c = make_desk()
    sign_in(c, "otto")
    old = c.cookies[COOKIE]
    # when
    r = c.post("/logout", user=None, form={"csrf": c.token("otto")})
    # then
    assert r.status == 303 and r.headers["Location"] == "/console/login"
    assert "Max-Age=0" in r.headers["Set-Cookie"] and COOKIE not in c.cookies
    c.cookies[COOKIE] = old
    assert c.get("/").status == 303
    assert [e["action"] for _, e in runtime.redis.xrange(keys.CONSOLE_AUDIT)] == ["login", "logout"]


def test_a_session_ends_after_the_idle_timeout(make_desk: Callable[..., Client], runtime: Runtime) -> None:
    """Idle timeout: without a request for ``idle_s`` the session is gone (Redis EXPIRE)."""
    c = make_desk(idle_s=1.0)
    sign_in(c, "otto")
    assert c.get("/").status == 200
    # when it is left alone (watched in Redis: a request would restart the idle timer)
    wait_for(
        lambda: not runtime.redis.keys("payouts:console:session:*"), 10, interval_s=0.2, what="idle timeout"
    )
    # then the cookie no longer signs in
    assert c.get("/").status == 303


def test_a_session_ends_after_the_absolute_timeout_even_when_busy(make_desk: Callable[..., Client]) -> None:
    """Absolute timeout: a session in constant use still ends ``absolute_s`` after sign-in."""
    c = make_desk(idle_s=60.0, absolute_s=2.0)
    sign_in(c, "otto")
    signed_in = time.monotonic()
    # when the user keeps clicking (each request restarts the idle timer)
    wait_for(lambda: c.get("/").status == 303, 10, interval_s=0.2, what="the absolute timeout")
    # then it ended at the absolute timeout, not before
    assert time.monotonic() - signed_in >= 1.9


def test_password_guessing_is_throttled_then_locked_out(
    make_desk: Callable[..., Client], runtime: Runtime
) -> None:
    """Per user: from the throttle_after-th attempt a doubling delay (429 + Retry-After), at
    lockout_after a lockout during which even the right password is refused; all audited
    and counted."""
    c = make_desk(throttle_after=2, lockout_after=4, lockout_s=60)
    # given two wrong passwords (the second starts the delay)
    assert [sign_in(c, "otto", "wrong guess 1").status for _ in range(2)] == [401, 401]
    # when the guesser goes on at once
    fast = sign_in(c, "otto", "wrong guess 2")
    # then it must wait
    assert fast.status == 429 and int(fast.headers["Retry-After"]) >= 1
    # when it waits as told, twice (the 4th attempt locks the user)
    for _ in range(2):
        wait_for(lambda: sign_in(c, "otto", "wrong guess 3").status == 401, 10, interval_s=0.3, what="delay")
    # then the right password is refused during the lockout
    locked = sign_in(c, "otto")
    assert locked.status == 429 and 50 <= int(locked.headers["Retry-After"]) <= 60
    assert "locked out" in locked.body and COOKIE not in c.cookies
    assert audit.count(runtime.redis, "login", "denied") == 4
    assert audit.count(runtime.redis, "login", "throttled") >= 1
    assert audit.count(runtime.redis, "login", "locked") >= 1


def test_guessing_across_user_names_is_throttled_per_address(make_desk: Callable[..., Client]) -> None:
    """Per client address: many user names from one address hit the address's limit
    (throttle_after x address_factor); another address is not affected."""
    c = make_desk(throttle_after=2, lockout_after=50, address_factor=2)
    answers = [sign_in(c, f"user{n}", "guess", remote="198.51.100.7").status for n in range(5)]
    assert answers[:4] == [401, 401, 401, 401] and answers[4] == 429
    assert sign_in(c, "user9", "guess", remote="198.51.100.8").status == 401


def test_approvers_sign_in_with_a_totp_code_used_once(
    make_desk: Callable[..., Client], runtime: Runtime
) -> None:
    """An approver's password opens only the TOTP step; a wrong code is refused, the right one
    signs in with a new session id, and the same code cannot be used again."""
    totp = enrol(runtime, "alice")
    c = make_desk()
    # when the password is right
    r = sign_in(c, "alice")
    # then only the second step is open
    assert r.status == 303 and r.headers["Location"] == "/console/login/totp"
    pending = c.cookies[COOKIE]
    assert c.get("/").status == 303
    assert c.post("/login/totp", form={"code": "000000"}).status == 401
    # when the right code is given
    code = totp.now()
    ok = c.post("/login/totp", form={"code": code})
    # then
    assert ok.status == 303 and c.cookies[COOKIE] != pending and c.get("/approvals").status == 200
    # and the code cannot be replayed by someone else holding the password
    other = make_desk()
    sign_in(other, "alice")
    assert other.post("/login/totp", form={"code": code}).status == 401


def test_an_approver_without_a_second_factor_cannot_sign_in(make_desk: Callable[..., Client]) -> None:
    """Approver and admin roles need an enrolled TOTP secret: refused, with how to enrol."""
    c = make_desk()
    r = sign_in(c, "bob")
    assert r.status == 403 and "enrol-totp" in r.body and COOKIE not in c.cookies


def test_approvals_above_the_threshold_ask_for_a_fresh_code(
    make_desk: Callable[..., Client], make_runtime: Callable[..., Runtime]
) -> None:
    """Above CONSOLE_STEP_UP_ABOVE an approval needs a fresh TOTP code (refused and audited
    without one), and bulk approval leaves such orders out."""
    rt = make_runtime(APPROVAL_ABOVE="1000000")
    totp = enrol(rt, "bob")
    c = make_desk(rt, step_up_above=4_000_000)
    for pid in ("big-1", "big-2"):
        enqueue_payout(
            pid, 5_000_000, "BCA", "Budi Santoso", "12345678901234", runtime=rt, requested_by="otto"
        )
    sign_in(c, "bob")
    c.post("/login/totp", form={"code": totp.now()})
    form = {"csrf": c.token("bob"), "payout_cl_id": "big-1", "expect_state": "awaiting_approval"}
    # when bob approves without a code, then with the next step's code
    bare = c.post("/do/approve", form=form)
    page = c.get("/approvals").body
    good = c.post("/do/approve", form={**form, "otp": totp.at(time.time() + 30)})
    bulk = c.post(
        "/do/bulk_approve",
        form={"csrf": c.token("bob"), "expect_state": "awaiting_approval", "id": ["big-2"]},
    )
    # then
    assert bare.status == 403 and "fresh code" in bare.body
    assert 'name="otp"' in page and 'value="big-1" form="bulk"' not in page
    assert good.status == 303 and rt.store.state_of("big-1") is State.RECEIVED
    assert bulk.status == 200 and "approve it on its own" in bulk.body
    assert rt.store.state_of("big-2") is State.AWAITING_APPROVAL


def test_totp_secrets_are_stored_sealed_and_enrolled_once(runtime: Runtime) -> None:
    """The stored secret is ciphertext bound to the user; enrolling again needs replace."""
    store = TotpSecrets(runtime.redis, SECRET)
    uri = store.enrol("ada")
    assert uri is not None
    secret = pyotp.parse_uri(uri).secret
    sealed = runtime.redis.hget(keys.CONSOLE_TOTP, "ada")
    assert sealed and secret not in sealed
    assert store.enrol("ada") is None
    # another key cannot read it: the code is refused (no crash)
    assert not TotpSecrets(runtime.redis, b"another-console-secret-000").verify(
        "ada", pyotp.TOTP(secret).now()
    )
    assert store.verify("ada", pyotp.TOTP(secret).now())
