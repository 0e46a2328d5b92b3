"""The payout desk console in headless Chromium against the real web process, worker, sandbox and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from selenium.webdriver.common.by import By

from tests.browser.conftest import NAME, NUMBER, Browser, Desk
from worker import keys
from worker.console import audit
from worker.harness.processes import wait_for
from worker.producer import enqueue_payout
from worker.states import State

PAGES = ("/", "/review", "/approvals", "/pause", "/search")


def form_for(b: Browser, action: str, pid: str | None = None) -> Any:
    """The form posting to /do/<action> (for order ``pid`` when given)."""
    for f in b.forms(f"/do/{action}"):
        if pid is None or f.find_element(By.NAME, "payout_cl_id").get_attribute("value") == pid:
            return f
    raise AssertionError(f"no {action} form for {pid} on {b.driver.current_url}: {b.text()[:500]}")


def submit(b: Browser, action: str, pid: str | None, *, button: str | None = None, **fields: str) -> str:
    """Fill the form's fields, press its button, wait for the next page; returns its title."""
    f = form_for(b, action, pid)
    for name, value in fields.items():
        el = f.find_element(By.NAME, name)
        el.clear()
        el.send_keys(value)
    old = b.driver.find_element(By.TAG_NAME, "html")
    btn = (
        f.find_element(By.XPATH, f".//button[@value='{button}']")
        if button
        else f.find_element(By.TAG_NAME, "button")
    )
    btn.click()
    wait_for(lambda: _stale(old), 20, what="the next page")
    b.collect()
    return str(b.driver.title)


def _stale(el: Any) -> bool:
    """Whether the page ``el`` belonged to was replaced (the navigation happened)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        _ = el.tag_name  # touching a replaced page raises
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:  # the same, as Chromium sometimes words it
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def forge_post(b: Browser, path: str, form: dict[str, str]) -> int:
    """A POST the page offers no button for, sent from the signed-in tab (same origin, valid token).

    Built as a DOM form (the CSP allows no fetch: connect-src falls back to 'none'); returns the status.
    """
    old = b.driver.find_element(By.TAG_NAME, "html")
    b.collect()
    seen = len(b.responses)
    b.driver.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "for (const [k, v] of Object.entries(arguments[1])) {"
        "  const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v;"
        "  f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();",
        b.desk.console + path,
        form,
    )
    wait_for(lambda: _stale(old), 20, what="the answer to the forged POST")
    b.collect()
    statuses = [st for url, st in b.responses[seen:] if url.endswith(path)]
    assert statuses, f"no response for {path} in the browser's log"
    return statuses[-1]


def token_of(b: Browser) -> str:
    b.open("/search")
    return str(b.driver.find_element(By.NAME, "csrf").get_attribute("value"))


def assert_no_personal_data_in_urls(*browsers: Browser) -> None:
    for b in browsers:
        b.collect()
        assert b.urls, "the request log is empty: the check would prove nothing"
        for url in b.urls:
            assert NUMBER not in url and NUMBER[-6:] not in url, url
            assert NAME.split()[0] not in url and "Rahayu" not in url, url


def test_a_viewer_sees_no_action_and_a_forged_post_gets_403_and_an_audit_row(
    make_desk: Callable[..., Desk],
) -> None:
    """Read-only role: every page without a control; a POST forged from its own signed-in tab is refused."""
    # given
    desk = make_desk()
    pid = desk.seed("view-1", State.REVIEW)
    vera = desk.browser("vera")
    # when
    for p in (*PAGES, f"/order/{pid}"):
        vera.open(p)
        assert vera.forms() == [], p
        assert "Resolve" not in vera.text()
    status = forge_post(
        vera,
        "/do/resolve",
        {
            "csrf": token_of(vera),
            "payout_cl_id": pid,
            "expect_state": "review",
            "state": "succeeded",
            "note": "forged",
        },
    )
    # then
    assert status == 403
    assert desk.stack.state(pid) is State.REVIEW
    rows = [e for _, e in desk.redis.xrange(keys.CONSOLE_AUDIT) if e["action"] != "login"]
    assert [(r["actor"], r["action"], r["result"]) for r in rows] == [("vera", "resolve", "denied")]
    assert audit.count(desk.redis, "resolve", "denied") == 1
    vera.open(f"/order/{pid}")
    assert "denied" in vera.text()
    assert_no_personal_data_in_urls(vera)


def test_operator_resolves_from_the_review_queue_and_the_history_names_them(
    make_desk: Callable[..., Desk],
) -> None:
    """Resolve with a note: final, and its history row shows actor and reason; without a note: refused."""
    # given
    desk = make_desk()
    pid = desk.seed("rev-ok-1", State.REVIEW)
    otto = desk.browser("otto")
    otto.open("/review")
    otto.shot("review")
    # when: first without a note
    title = submit(otto, "resolve", pid, button="succeeded", note="")
    # then
    assert title.startswith("Refused") and "note is required" in otto.text(), otto.text()
    assert desk.stack.state(pid) is State.REVIEW
    # when: with a note
    otto.open("/review")
    title = submit(otto, "resolve", pid, button="succeeded", note="bank statement line 2231 shows it")
    # then: back on the queue, without that order
    assert title.startswith("Review queue") and pid not in otto.text()
    assert desk.stack.state(pid) is State.SUCCEEDED
    otto.open(f"/order/{pid}")
    text = otto.text()
    assert "operator otto: bank statement line 2231 shows it" in text
    assert "••••1234" in text and NUMBER not in text and NAME not in text
    otto.shot("order")
    assert_no_personal_data_in_urls(otto)


def test_resubmit_from_the_console_is_sent_by_the_real_worker(make_desk: Callable[..., Desk]) -> None:
    """Resubmit queries the gateway first; it does not know the order, so the worker sends it: final."""
    # given: an order in review the gateway never saw
    desk = make_desk()
    pid = desk.seed("resub-1", State.REVIEW)
    otto = desk.browser("otto")
    otto.open(f"/order/{pid}")
    # when
    title = submit(otto, "resubmit", pid, note="gateway confirmed no such order (ticket 77)")
    # then
    assert title.startswith(f"Order {pid}"), otto.text()[:400]
    assert desk.stack.wait_state(pid, State.SUCCEEDED, State.FAILED, timeout_s=30)
    order = desk.stack.rt.store.require(pid)
    assert any(h["reason"].startswith("operator otto: resubmit") for h in order.history)
    assert desk.gateway.admin.order(pid) is not None


def test_two_tabs_race_on_one_resolve_exactly_one_transition(make_desk: Callable[..., Desk]) -> None:
    """Two tabs show the same review order; both press resolve: one succeeds, the other gets 409."""
    # given
    desk = make_desk()
    pid = desk.seed("race-1", State.REVIEW)
    otto = desk.browser("otto")
    d = otto.driver
    otto.open("/review")
    first = d.current_window_handle
    second = otto.new_tab()
    otto.open("/review")
    # when
    d.switch_to.window(first)
    t1 = submit(otto, "resolve", pid, button="succeeded", note="tab one")
    d.switch_to.window(second)
    t2 = submit(otto, "resolve", pid, button="failed", note="tab two")
    # then
    assert t1.startswith("Review queue") and t2.startswith("Conflict"), (t1, t2)
    assert "moved meanwhile" in otto.text()
    order = desk.stack.rt.store.require(pid)
    assert order.state is State.SUCCEEDED
    assert sum(1 for h in order.history if h["from"] == "review") == 1
    assert audit.count(desk.redis, "resolve", "conflict") == 1


def test_no_csp_violation_and_no_personal_data_on_any_page(make_desk: Callable[..., Desk]) -> None:
    """Every page for every role: the console logs no CSP violation, and the detector does catch one."""
    # given
    desk = make_desk()
    pid = desk.seed("csp-1", State.REVIEW)
    desk.seed("csp-2", State.RECEIVED)
    browsers = [desk.browser(u) for u in ("vera", "otto", "alice")]
    # when
    for b in browsers:
        for p in (*PAGES, f"/order/{pid}", "/order/no-such-order"):
            b.open(p)
            assert NUMBER not in b.driver.page_source and NAME not in b.driver.page_source
            assert NUMBER[-6:] not in b.driver.title and "Siti" not in b.driver.title
    browsers[0].open("/")
    browsers[0].shot("overview")
    # then
    for b in browsers:
        assert b.csp_violations() == [], b.user
    assert_no_personal_data_in_urls(*browsers)
    # and the check can fail: an inline script injected into a console page is blocked and logged
    probe = browsers[1]
    probe.open("/")
    probe.driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.x = 1';"
        "document.body.appendChild(s);"
    )
    wait_for(lambda: probe.csp_violations(), 5, what="the probe's CSP report")


def test_read_only_mode_renders_no_controls(make_desk: Callable[..., Desk]) -> None:
    """CONSOLE_READ_ONLY=1 on the web process: a banner, no control on any page, and POSTs refused."""
    # given
    desk = make_desk(CONSOLE_READ_ONLY="1")
    pid = desk.seed("ro-1", State.REVIEW)
    otto = desk.browser("otto")
    # when / then
    for p in (*PAGES, f"/order/{pid}"):
        otto.open(p)
        assert otto.forms() == [], p
        assert "Read-only console" in otto.text()
    status = forge_post(
        otto,
        "/do/resolve",
        {
            "csrf": token_of(otto),
            "payout_cl_id": pid,
            "expect_state": "review",
            "state": "failed",
            "note": "x",
        },
    )
    assert status == 403
    assert desk.stack.state(pid) is State.REVIEW


# -- approval and pause (worker.desk) -----------------------------------------------


def _awaiting(desk: Desk, pid: str, requested_by: str, amount: int = 5_000_000) -> str:
    """Enqueued by ``requested_by`` above APPROVAL_ABOVE: it waits for a checker (worker.desk)."""
    enqueue_payout(pid, amount, "BCA", NAME, NUMBER, runtime=desk.stack.rt, requested_by=requested_by)
    desk.stack.wait_state(pid, State.AWAITING_APPROVAL, timeout_s=20)
    return pid


APPROVAL = {"APPROVAL_ABOVE": "1000000", "PAUSE_RECHECK": "0.5"}


def test_maker_checker_across_two_users(make_desk: Callable[..., Desk]) -> None:
    """Alice requested it: no approve button for her and a forged approve is refused; Bob approves; sent."""
    # given
    desk = make_desk(**APPROVAL)
    pid = _awaiting(desk, "mc-1", "alice")
    alice, bob = desk.browser("alice"), desk.browser("bob")
    # when: alice looks at her own request
    alice.open("/approvals")
    assert alice.forms("/do/approve") == []
    assert "your request" in alice.text()
    status = forge_post(
        alice,
        "/do/approve",
        {"csrf": token_of(alice), "payout_cl_id": pid, "expect_state": "awaiting_approval"},
    )
    assert status == 403
    assert desk.stack.state(pid) is State.AWAITING_APPROVAL
    # when: bob approves
    bob.open("/approvals")
    bob.shot("approvals")
    title = submit(bob, "approve", pid)
    # then
    assert title.startswith("Approvals"), bob.text()[:400]
    desk.stack.wait_state(pid, State.SUCCEEDED, State.FAILED, timeout_s=30)
    refused = [e for _, e in desk.redis.xrange(keys.CONSOLE_AUDIT) if e["result"] == "refused"]
    assert [(e["actor"], e["action"]) for e in refused] == [("alice", "approve")]


def test_reject_without_a_reason_is_refused(make_desk: Callable[..., Desk]) -> None:
    """Reject needs a reason: without one the order still waits; with one it is rejected, never sent."""
    desk = make_desk(**APPROVAL)
    pid = _awaiting(desk, "rej-1", "otto")
    bob = desk.browser("bob")
    bob.open("/approvals")
    title = submit(bob, "reject", pid, reason="")
    assert title.startswith("Refused") and "reason is required" in bob.text()
    assert desk.stack.state(pid) is State.AWAITING_APPROVAL
    bob.open("/approvals")
    submit(bob, "reject", pid, reason="duplicate of invoice 8812")
    assert desk.stack.state(pid) is State.REJECTED
    assert desk.gateway.admin.order(pid) is None


def test_two_tabs_race_on_one_approval(make_desk: Callable[..., Desk]) -> None:
    """The same approval in two tabs: exactly one transition, the second tab gets 409."""
    desk = make_desk(**APPROVAL)
    pid = _awaiting(desk, "race-ap-1", "otto")
    bob = desk.browser("bob")
    d = bob.driver
    bob.open("/approvals")
    first = d.current_window_handle
    second = bob.new_tab()
    bob.open("/approvals")
    d.switch_to.window(first)
    t1 = submit(bob, "approve", pid)
    d.switch_to.window(second)
    t2 = submit(bob, "approve", pid)
    assert t1.startswith("Approvals") and t2.startswith("Conflict"), (t1, t2)
    order = desk.stack.rt.store.require(pid)
    assert sum(1 for h in order.history if h["from"] == "awaiting_approval") == 1


def test_pause_shows_a_banner_and_stops_creates(make_desk: Callable[..., Desk]) -> None:
    """Pause from the console: a banner on every page, new orders stay received; resume: they are sent."""
    # given
    desk = make_desk(PAUSE_RECHECK="0.5")
    desk.stack.start_beat()  # the sweep re-drives orders held by the pause
    otto = desk.browser("otto")
    otto.open("/pause")
    # when
    submit(otto, "pause", None, reason="gateway incident INC-12")
    otto.shot("pause")
    for p in PAGES:
        otto.open(p)
        assert "Paused:" in otto.text() and "gateway incident INC-12" in otto.text()
    enqueue_payout("pause-1", 5_000_000, "BCA", NAME, NUMBER, runtime=desk.stack.rt)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert desk.stack.state("pause-1") is State.RECEIVED
        assert desk.gateway.admin.order("pause-1") is None
        time.sleep(0.2)
    # then: resume
    otto.open("/pause")
    submit(otto, "resume", None)
    assert "Paused:" not in otto.text()
    desk.stack.wait_state("pause-1", State.SUCCEEDED, State.FAILED, timeout_s=60)
    ok = [e for _, e in desk.redis.xrange(keys.CONSOLE_AUDIT) if e["result"] == "ok"]
    assert [e["action"] for e in ok if e["action"] != "login"] == ["pause", "resume"]


# -- sign-in ------------------------------------------------------------------------


def session_cookie(b: Browser) -> dict[str, Any] | None:
    return next((c for c in b.driver.get_cookies() if c["name"] == "payouts_console"), None)


def test_sign_in_and_sign_out_in_the_browser(make_desk: Callable[..., Desk]) -> None:
    """The form signs in (an HttpOnly, Secure, SameSite=Strict cookie the page's script cannot
    read), and the header's Sign out button ends the session: the pages send to /login."""
    desk = make_desk()
    # given a signed-in operator
    otto = desk.browser("otto")
    otto.open("/")
    cookie = session_cookie(otto)
    assert "Overview" in otto.text() and cookie is not None
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert otto.driver.execute_script("return document.cookie") == ""
    # when they sign out
    otto.driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
    wait_for(lambda: otto.driver.current_url.endswith("/console/login"), 15, what="the sign-in page")
    # then the session is gone on the server and in the browser
    assert session_cookie(otto) is None and not desk.redis.keys("payouts:console:session:*")
    otto.open("/review")
    assert otto.driver.current_url.endswith("/console/login")
    otto.driver.add_cookie({"name": "payouts_console", "value": cookie["value"], "path": "/console/"})
    otto.open("/review")
    assert otto.driver.current_url.endswith("/console/login")


def test_an_idle_session_expires_in_the_browser(make_desk: Callable[..., Desk]) -> None:
    """CONSOLE_IDLE_TIMEOUT_S: left alone, the session ends; the next click lands on /login."""
    desk = make_desk(CONSOLE_IDLE_TIMEOUT_S="60")
    otto = desk.browser("otto")
    otto.open("/")
    assert "Overview" in otto.text()
    # when the idle time passes (made to pass in Redis: the key's TTL is the idle timer)
    keys_now = desk.redis.keys("payouts:console:session:*")
    assert len(keys_now) == 1
    desk.redis.pexpire(keys_now[0], 1)
    wait_for(lambda: not desk.redis.keys("payouts:console:session:*"), 5, what="the session to expire")
    # then
    otto.open("/review")
    assert otto.driver.current_url.endswith("/console/login") and "Sign in" in otto.text()


def test_password_guessing_is_throttled_in_the_browser(make_desk: Callable[..., Desk]) -> None:
    """Wrong passwords: refused (401), then 429 with the wait shown on the form; once the
    lockout is reached every attempt is 429; all counted. (Whether the third attempt meets
    the 1 s delay depends on the browser's speed: the loop goes on until the lockout.)"""
    desk = make_desk(CONSOLE_LOGIN_THROTTLE_AFTER="2", CONSOLE_LOGIN_LOCKOUT_AFTER="3")
    b = desk.browser("vera", signed_in=False)
    for n in range(8):
        b.sign_in(password=f"wrong password {n}")
        if audit.count(desk.redis, "login", "locked"):
            break
    b.collect()
    statuses = [st for url, st in b.responses if url.endswith("/console/login")]
    assert 401 in statuses and statuses[-1] == 429, statuses
    assert "too many attempts" in b.text() and "locked out" in b.text()
    assert audit.count(desk.redis, "login", "denied") == 3


def test_an_approver_passes_the_totp_step_in_the_browser(make_desk: Callable[..., Desk]) -> None:
    """An approver's password leads to the code step; a wrong code is refused there; the
    right one opens the approvals page."""
    desk = make_desk()
    alice = desk.browser("alice", signed_in=False)
    # when the password is right and the code wrong
    alice.sign_in(code="000000")
    # then they stay on the code step
    assert alice.driver.current_url.endswith("/console/login/totp") and "wrong" in alice.text()
    # when the right code follows
    alice.fill(code=desk.code("alice"))
    alice.open("/approvals")
    assert "Approvals" in alice.text() and "alice" in alice.text()
