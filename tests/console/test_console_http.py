"""The console over WSGI: authorization per role, CSRF and origin, headers, 409 on stale state, audit."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import ORIGIN, SECRET, USERS, Client, users_file
from worker import keys
from worker.console import audit, load_console_config
from worker.console.security import csrf_token
from worker.payout import Payout
from worker.runtime import Runtime
from worker.settings import ConfigError
from worker.states import State

NUMBER = "12345678901234"
NAME = "Budi Santoso"
PAGES = ("/", "/review", "/approvals", "/pause", "/search")


def seed_review(rt: Runtime, pid: str = "rev-1", *, amount: int = 150_000) -> str:
    """One order in review (as the worker leaves it after a conflicting report)."""
    p = Payout(payout_cl_id=pid, amount=amount, bank_name="BCA", name=NAME, number=NUMBER, notify_url=None)
    rt.store.create(p, due_at=time.time() + 3600)
    rt.store.transition(pid, State.REVIEW, reason="conflict: succeeded but query says status 4")
    return pid


def token_in(body: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', body)
    assert m, "the page carries no CSRF token"
    return m.group(1)


def resolve_form(pid: str, user: str, **extra: Any) -> dict[str, Any]:
    form = {
        "csrf": csrf_token(SECRET, user),
        "payout_cl_id": pid,
        "expect_state": "review",
        "state": "succeeded",
        "note": "gateway ticket #41 confirms the transfer",
    }
    form.update(extra)
    return {k: v for k, v in form.items() if v is not None}


def audit_rows(rt: Runtime) -> list[dict[str, Any]]:
    return [e for _, e in rt.redis.xrange(keys.CONSOLE_AUDIT)]


# -- access -------------------------------------------------------------------


def test_without_credentials_every_page_asks_for_basic_auth(client: Client) -> None:
    """Deny by default: no user, no page (401 with a Basic challenge), and a wrong password is the same."""
    # given / when
    answers = [client.get(p) for p in PAGES] + [client.get("/", user="otto", password="wrong password!")]
    # then
    assert {a.status for a in answers} == {401}
    assert all(a.headers["WWW-Authenticate"].startswith("Basic ") for a in answers)
    assert all("Review queue" not in a.body for a in answers)


def test_a_console_with_no_identity_denies_everything(
    make_client: Callable[..., Client], runtime: Runtime
) -> None:
    """No users file and no trusted header: every request is refused, even one carrying a user header."""
    # given
    c = make_client(identity=None, secret=b"", basic_challenge=False)
    seed_review(runtime)
    # when
    answers = [c.get(p, headers={"X-Console-User": "ada", "X-Console-Roles": "admin"}) for p in PAGES]
    answers.append(c.post("/do/resolve", form=resolve_form("rev-1", "ada")))
    # then
    assert {a.status for a in answers} == {403}
    assert runtime.store.state_of("rev-1") is State.REVIEW


def test_users_need_a_secret_and_trusted_headers_need_both_names(tmp_path: Path) -> None:
    """Risky or incomplete configurations are refused with the variable named."""
    path = users_file(tmp_path)
    with pytest.raises(ConfigError, match="CONSOLE_SECRET"):
        load_console_config({"CONSOLE_USERS_FILE": str(path)})
    with pytest.raises(ConfigError, match="CONSOLE_TRUSTED_ROLES_HEADER"):
        load_console_config({"CONSOLE_TRUSTED_USER_HEADER": "X-User"})
    with pytest.raises(ConfigError, match="exclusive"):
        load_console_config(
            {
                "CONSOLE_USERS_FILE": str(path),
                "CONSOLE_SECRET": "x" * 20,
                "CONSOLE_TRUSTED_USER_HEADER": "X-User",
                "CONSOLE_TRUSTED_ROLES_HEADER": "X-Roles",
            }
        )
    cfg = load_console_config({"CONSOLE_USERS_FILE": str(path), "CONSOLE_SECRET": "x" * 20})
    # the users file means the sign-in form (sessions), not HTTP Basic
    assert cfg.users is not None and set(cfg.users) == set(USERS)
    assert cfg.identity is None and not cfg.basic_challenge and not cfg.read_only


def test_trusted_header_identity_only_when_enabled(
    make_client: Callable[..., Client], runtime: Runtime
) -> None:
    """With CONSOLE_TRUSTED_*_HEADER set, the host app's headers name the user and roles."""
    # given
    cfg = load_console_config(
        {
            "CONSOLE_TRUSTED_USER_HEADER": "X-Console-User",
            "CONSOLE_TRUSTED_ROLES_HEADER": "X-Console-Roles",
            "CONSOLE_SECRET": SECRET.decode(),
        }
    )
    c = make_client(identity=cfg.identity, basic_challenge=False)
    # when
    ok = c.get("/", headers={"X-Console-User": "host-user", "X-Console-Roles": "viewer"})
    bad_role = c.get("/", headers={"X-Console-User": "host-user", "X-Console-Roles": "root"})
    # then
    assert ok.status == 200 and "host-user" in ok.body
    assert bad_role.status == 403


def test_a_viewer_sees_no_action_and_a_forged_post_is_403_with_an_audit_row(
    client: Client, runtime: Runtime
) -> None:
    """A viewer reads every page without one form; a POST it forges anyway is refused, audited, counted."""
    # given
    pid = seed_review(runtime)
    # when
    pages = [client.get(p, user="vera") for p in (*PAGES, f"/order/{pid}")]
    forged = client.post("/do/resolve", user="vera", form=resolve_form(pid, "vera"))
    # then
    assert {p.status for p in pages} == {200}
    assert all("/do/" not in p.body for p in pages)
    assert forged.status == 403
    assert runtime.store.state_of(pid) is State.REVIEW
    rows = audit_rows(runtime)
    assert [(r["actor"], r["action"], r["result"]) for r in rows] == [("vera", "resolve", "denied")]
    assert audit.count(runtime.redis, "resolve", "denied") == 1
    # and the order's page shows the denied attempt
    order_page = client.get(f"/order/{pid}", user="otto").body
    assert "vera" in order_page and "denied" in order_page


@pytest.mark.parametrize(
    ("user", "action", "allowed"),
    [
        ("vera", "resolve", False),
        ("alice", "resolve", False),
        ("otto", "resolve", True),
        ("ada", "resolve", True),
        ("vera", "resubmit", False),
        ("alice", "pause", False),
        ("otto", "approve", False),
        ("otto", "reject", False),
        ("vera", "approve", False),
    ],
)
def test_roles_decide_on_the_server(
    client: Client, runtime: Runtime, user: str, action: str, allowed: bool
) -> None:
    """Each action is allowed to its roles only; a refused one changes nothing and is audited as denied."""
    # given
    pid = seed_review(runtime)
    form = resolve_form(pid, user, reason="no", bank="")
    # when
    r = client.post(f"/do/{action}", user=user, form=form)
    # then
    if allowed:
        assert r.status == 303, r.body
        assert runtime.store.state_of(pid) is State.SUCCEEDED
    else:
        assert r.status == 403, r.body
        assert runtime.store.state_of(pid) is State.REVIEW
        assert audit.count(runtime.redis, action, "denied") == 1


# -- CSRF and origin ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "form_extra", "headers", "same_origin"),
    [
        ("no token", {"csrf": None}, {}, True),
        ("garbled token", {"csrf": "123.abc"}, {}, True),
        ("another user's token", {"csrf": csrf_token(SECRET, "ada")}, {}, True),
        ("expired token", {"csrf": csrf_token(SECRET, "otto", now=time.time() - 13 * 3600)}, {}, True),
        ("cross-site fetch", {}, {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"}, False),
        ("foreign origin", {}, {"Origin": "https://evil.test"}, False),
        ("no origin at all", {}, {}, False),
        ("null origin without fetch metadata", {}, {"Origin": "null"}, False),
    ],
)
def test_a_mutation_needs_a_valid_token_and_the_same_origin(
    client: Client,
    runtime: Runtime,
    case: str,
    form_extra: dict[str, Any],
    headers: dict[str, str],
    same_origin: bool,
) -> None:
    """A CSRF token bound to the user and fresh, plus Origin/Sec-Fetch-Site: any miss is a 403."""
    # given
    pid = seed_review(runtime)
    # when
    r = client.post(
        "/do/resolve",
        user="otto",
        form=resolve_form(pid, "otto", **form_extra),
        headers=headers,
        same_origin=same_origin,
    )
    # then
    assert r.status == 403, case
    assert runtime.store.state_of(pid) is State.REVIEW
    assert audit.count(runtime.redis, "resolve", "denied") == 1


def test_the_token_from_the_page_works_and_the_history_names_the_actor(
    client: Client, runtime: Runtime
) -> None:
    """The happy path: token from the review page; the transition's history entry carries actor and action."""
    # given
    pid = seed_review(runtime)
    page = client.get("/review", user="otto")
    # when
    r = client.post("/do/resolve", user="otto", form=resolve_form(pid, "otto", csrf=token_in(page.body)))
    # then
    assert r.status == 303 and r.headers["Location"] == f"/console/order/{pid}"
    order = runtime.store.require(pid)
    assert order.state is State.SUCCEEDED
    last = order.history[-1]
    assert last["from"] == "review" and last["to"] == "succeeded"
    assert last["reason"].startswith("operator otto: gateway ticket #41")
    assert order.fields["resolved_by"] == "otto"
    assert audit.count(runtime.redis, "resolve", "ok") == 1
    shown = client.get(f"/order/{pid}", user="vera").body
    assert "operator otto" in shown


def test_a_resolve_without_a_note_is_refused(client: Client, runtime: Runtime) -> None:
    """The CLI requires a note; so does the console (400), and nothing changes."""
    pid = seed_review(runtime)
    r = client.post("/do/resolve", user="otto", form=resolve_form(pid, "otto", note="   "))
    assert r.status == 400 and "note is required" in r.body
    assert runtime.store.state_of(pid) is State.REVIEW
    assert audit.count(runtime.redis, "resolve", "invalid") == 1


# -- stale state ----------------------------------------------------------------------


def test_a_stale_form_gets_409_and_changes_nothing(client: Client, runtime: Runtime) -> None:
    """The form carries the state it saw; once the order moved, the action answers 409."""
    # given: the page was loaded, then someone else resolved the order
    pid = seed_review(runtime)
    first = client.post("/do/resolve", user="otto", form=resolve_form(pid, "otto", state="failed"))
    assert first.status == 303
    # when
    second = client.post("/do/resolve", user="olga", form=resolve_form(pid, "olga"))
    # then
    assert second.status == 409 and "moved meanwhile" in second.body
    order = runtime.store.require(pid)
    assert order.state is State.FAILED
    assert [h["to"] for h in order.history].count("failed") == 1
    assert audit.count(runtime.redis, "resolve", "conflict") == 1


def test_two_tabs_resolving_at_once_make_exactly_one_transition(client: Client, runtime: Runtime) -> None:
    """Concurrent POSTs with the same expected state: one 303, the rest 409, one history entry."""
    # given
    pid = seed_review(runtime)
    barrier = threading.Barrier(6)
    results: list[int] = []

    def tab(user: str, state: str) -> None:
        barrier.wait()
        results.append(
            client.post("/do/resolve", user=user, form=resolve_form(pid, user, state=state)).status
        )

    # when
    threads = [
        threading.Thread(target=tab, args=(u, s)) for u, s in [("otto", "succeeded"), ("olga", "failed")] * 3
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # then
    assert sorted(results) == [303, 409, 409, 409, 409, 409]
    order = runtime.store.require(pid)
    assert sum(1 for h in order.history if h["from"] == "review") == 1


# -- headers and privacy -----------------------------------------------------------


def test_every_answer_carries_the_security_headers(client: Client, runtime: Runtime) -> None:
    """CSP without script, frame-ancestors 'none', no-referrer, no-store, nosniff: pages, errors, assets."""
    pid = seed_review(runtime)
    answers = [
        client.get(p, user="otto") for p in (*PAGES, f"/order/{pid}", "/order/nope", "/static/console.css")
    ]
    answers += [client.get("/"), client.post("/do/resolve", user="vera", form=resolve_form(pid, "vera"))]
    for a in answers:
        csp = a.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "script-src" not in csp  # no script may run at all
        assert a.headers["Referrer-Policy"] == "no-referrer"
        assert a.headers["Cache-Control"] == "no-store"
        assert a.headers["X-Content-Type-Options"] == "nosniff"
        assert "Set-Cookie" not in a.headers
        assert "<script" not in a.body and " style=" not in a.body


def test_no_account_number_or_name_in_any_url_or_title(client: Client, runtime: Runtime) -> None:
    """Pages show ••••1234 and a truncated holder; no link, form action or title carries either."""
    pid = seed_review(runtime)
    for path in (*PAGES, f"/order/{pid}"):
        body = client.get(path, user="ada").body
        assert NUMBER not in body and NAME not in body
        urls = re.findall(r'(?:href|action)="([^"]*)"', body)
        title = re.search(r"<title>(.*?)</title>", body)
        assert title is not None
        for text in [*urls, title.group(1)]:
            assert NUMBER[-8:] not in text and "Budi" not in text
    assert "••••1234" in client.get(f"/order/{pid}", user="vera").body


def test_an_erased_order_shows_erased_and_the_console_never_opens_personal_data(
    client: Client, runtime: Runtime
) -> None:
    """The order page reads the masks stored beside the sealed values (a console without
    PII_KEYS shows it all); after erasure it shows "(erased)" and keeps amount and state."""
    from worker.privacy import forget

    pid = seed_review(runtime, "er-1")
    assert runtime.store.transition(pid, State.SUCCEEDED, reason="operator: resolved") is State.REVIEW
    forget(runtime.redis, pid, reason="test: erased")
    body = client.get(f"/order/{pid}", user="vera").body
    assert "(erased)" in body and "IDR 1.500,00" in body and "succeeded" in body
    assert NUMBER not in body and "••••1234" not in body


def test_search_is_a_post_and_redirects_to_the_order(client: Client, runtime: Runtime) -> None:
    """The id travels in the form body; the answer is the order's page (or 404), never a query string."""
    pid = seed_review(runtime)
    token = csrf_token(SECRET, "vera")
    found = client.post("/search", user="vera", form={"csrf": token, "payout_cl_id": pid})
    missing = client.post("/search", user="vera", form={"csrf": token, "payout_cl_id": "nope-1"})
    forged = client.post("/search", user="vera", form={"payout_cl_id": pid})
    assert found.status == 303 and found.headers["Location"] == f"/console/order/{pid}"
    assert missing.status == 404
    assert forged.status == 403
    assert 'method="post"' in client.get("/search", user="vera").body


def test_read_only_renders_no_control_and_refuses_every_mutation(
    make_client: Callable[..., Client], runtime: Runtime
) -> None:
    """CONSOLE_READ_ONLY: even an admin gets no form but search, and every POST to /do/ is a 403."""
    # given
    c = make_client(read_only=True)
    pid = seed_review(runtime)
    # when
    bodies = [c.get(p, user="ada").body for p in (*PAGES, f"/order/{pid}")]
    r = c.post("/do/resolve", user="ada", form=resolve_form(pid, "ada"))
    # then
    assert all("/do/" not in b for b in bodies)
    assert all("Read-only console" in b for b in bodies)
    assert r.status == 403 and "read-only" in r.body
    assert runtime.store.state_of(pid) is State.REVIEW


class _Sock:
    """A stand-in for the accepted socket gunicorn puts in the environ (its local address)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_the_web_process_serves_the_console_on_the_admin_listener_only(runtime: Runtime) -> None:
    """worker.web: the admin listener (its accepted socket's port) serves /console/ and /metrics;
    the public listener serves the callbacks and /healthz alone (D50), whatever the Host says."""
    from worker.web import make_web_app

    app = make_web_app(runtime, admin_port=8001)

    def call(path: str, port: int) -> tuple[int, dict[str, str]]:
        got: dict[str, Any] = {}
        env = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "HTTP_HOST": "desk.test:8001",
            "SERVER_PORT": "8001",
            "gunicorn.socket": _Sock(port),
        }

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            got["s"], got["h"] = status, dict(headers)

        b"".join(app(env, start))
        return int(got["s"].split()[0]), got["h"]

    # admin listener
    console_status, console_headers = call("/console/", 8001)
    assert console_status == 403  # no CONSOLE_* identity in this environment: deny
    assert "Content-Security-Policy" in console_headers
    assert call("/console", 8001)[0] == 308
    assert call("/healthz", 8001)[0] == 200
    assert call("/metrics", 8001)[0] == 200
    assert call("/payouts/notify", 8001)[0] == 404
    # public listener: Host and SERVER_PORT name the admin port, the socket does not
    assert call("/console/", 8000)[0] == 404
    assert call("/console", 8000)[0] == 404
    assert call("/metrics", 8000)[0] == 404
    assert call("/healthz", 8000)[0] == 200
    assert call("/payouts/notify", 8000)[0] == 405


def test_origin_setting_is_what_posts_must_match(
    make_client: Callable[..., Client], runtime: Runtime
) -> None:
    """Behind a proxy CONSOLE_ORIGIN names the public origin; the Host header is then not trusted for it."""
    pid = seed_review(runtime)
    c = make_client(origin="https://desk.example")
    wrong = c.post("/do/resolve", user="otto", form=resolve_form(pid, "otto"))  # Origin http://desk.test
    assert ORIGIN != "https://desk.example"
    assert wrong.status == 403
    right = c.post(
        "/do/resolve",
        user="otto",
        form=resolve_form(pid, "otto"),
        same_origin=False,
        headers={"Origin": "https://desk.example"},
    )
    assert right.status == 303


def test_mount_serves_the_console_under_a_prefix_of_a_host_app(runtime: Runtime) -> None:
    """``mount(host, "/console", console)``: the console's links carry the prefix; the host keeps the rest."""
    # given a host app (as Django's or Flask's WSGI callable would be) and an identity from it
    from worker.console import Actor, ConsoleConfig, make_console, mount

    def host(environ: dict[str, Any], start: Any) -> list[bytes]:
        start("200 OK", [("Content-Type", "text/plain")])
        return [b"host page"]

    def from_host(environ: Any) -> Actor | None:
        return Actor("host-dina", frozenset({"viewer"})) if environ.get("HTTP_X_HOST_SESSION") else None

    app = mount(host, "/desk", make_console(runtime, ConsoleConfig(identity=from_host, secret=SECRET)))

    def call(path: str, **headers: str) -> tuple[str, str]:
        got: dict[str, Any] = {}
        env: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": ""}
        env.update({"HTTP_" + k.upper(): v for k, v in headers.items()})

        def start(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
            got["s"] = status

        body = b"".join(app(env, start)).decode()
        return got["s"], body

    # when
    host_page = call("/orders")
    signed_out = call("/desk/")
    signed_in = call("/desk/review", x_host_session="1")
    # then
    assert host_page == ("200 OK", "host page")
    assert signed_out[0].startswith("403")
    assert signed_in[0].startswith("200") and "host-dina" in signed_in[1]
    assert 'href="/desk/static/console.css"' in signed_in[1]


def test_passwords_are_stored_as_salted_scrypt_and_checked_exactly() -> None:
    """hash_password salts (two hashes differ); verify accepts only the same password; junk never matches."""
    from worker.console.auth import hash_password, verify_password

    a, b = hash_password("s3cret passphrase"), hash_password("s3cret passphrase")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("s3cret passphrase", a) and verify_password("s3cret passphrase", b)
    assert not verify_password("s3cret passphrasE", a)
    assert not verify_password("s3cret passphrase", "scrypt$1$2$3$!!$??")
    assert not verify_password("x", "plain-text")


def test_makers_are_the_requester_the_first_approver_and_the_last_changer(runtime: Runtime) -> None:
    """Maker-checker input: requested_by, approved_by and the actor of the last history entry."""
    from worker.console.pages import _actor_in, makers

    # given an order someone requested, then an operator changed
    pid = seed_review(runtime, "mk-1")
    runtime.store.transition(pid, None, sources={State.REVIEW}, reason="x", fields={"requested_by": "rita"})
    runtime.store.transition(pid, State.FAILED, reason="operator otto: bank says no")
    # when
    who = makers(runtime.store.require(pid))
    # then
    assert who == {"rita", "otto"}
    assert _actor_in("resubmit by dina: gateway confirmed") == "dina"
    assert _actor_in("approved by bob") == "bob"
    assert _actor_in("conflict: succeeded but query says status 4") == ""


def test_amounts_are_shown_from_minor_units() -> None:
    """Orders hold minor units (IDR x 100); the desk reads rupiah with Indonesian separators."""
    from worker.console.html import idr, masked_account

    assert idr(5_000_000) == "IDR 50.000,00"
    assert idr(123_456_789) == "IDR 1.234.567,89"
    assert idr(1) == "IDR 0,01"
    assert masked_account("12345678901234") == "••••1234" and masked_account("123") == "••••"


def test_back_to_polling_needs_a_note_and_records_the_actor(client: Client, runtime: Runtime) -> None:
    """Back to polling from the console: the CLI's command, a note required, the actor in the history."""
    # given
    pid = seed_review(runtime, "btp-1")
    base = {"csrf": csrf_token(SECRET, "otto"), "payout_cl_id": pid, "expect_state": "review"}
    # when
    bare = client.post("/do/back_to_polling", user="otto", form={**base, "note": ""})
    ok = client.post(
        "/do/back_to_polling", user="otto", form={**base, "note": "gateway status 6: bank holiday"}
    )
    # then
    assert bare.status == 400
    assert ok.status == 303
    order = runtime.store.require(pid)
    assert order.state is State.UNCONFIRMED  # no payout_id known
    assert order.history[-1]["reason"].startswith("operator otto: back to polling")


def test_resubmit_is_not_offered_when_the_gateway_had_the_order(client: Client, runtime: Runtime) -> None:
    """Evidence shown: an order that reached accepted gets no resubmit button, and its POST is refused."""
    # given: accepted once (a payout_id), then a conflicting report sent it to review
    p = Payout(
        payout_cl_id="ev-1", amount=5_000_000, bank_name="BCA", name=NAME, number=NUMBER, notify_url=None
    )
    runtime.store.create(p, due_at=time.time() + 3600)
    runtime.store.transition("ev-1", State.SUBMITTING, reason="claim")
    runtime.store.transition("ev-1", State.ACCEPTED, reason="0000", fields={"payout_id": "GW-9"})
    runtime.store.transition("ev-1", State.REVIEW, reason="conflict")
    # when
    page = client.get("/order/ev-1", user="otto").body
    r = client.post(
        "/do/resubmit",
        user="otto",
        form={"csrf": csrf_token(SECRET, "otto"), "payout_cl_id": "ev-1", "expect_state": "review"},
    )
    # then
    assert "/do/resubmit" not in page and "it has a payout_id" in page
    assert r.status == 400 and "the gateway had this order" in r.body
    assert runtime.store.state_of("ev-1") is State.REVIEW


def test_made_up_post_paths_share_one_audit_label(client: Client, runtime: Runtime) -> None:
    """D46: anonymous POSTs to made-up ``/do/<letters>`` paths are audited and counted under
    the one label ``unknown``: no new counter field, no new /metrics series per path."""
    import random

    from worker import keys
    from worker.console import audit

    rng = random.Random(46)
    # given / when 200 anonymous POSTs to random action names, Unicode letters included
    names = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzéß") for _ in range(12)) for _ in range(200)]
    answers = [client.post(f"/do/{n}", form={"x": "1"}) for n in names]
    answers.append(client.post("/do/resolve", form={"x": "1"}))
    # then each is refused, and the counters hold two fields whatever the paths were
    assert {a.status for a in answers} == {401}
    fields = set(runtime.redis.hkeys(keys.CONSOLE_ACTIONS))
    assert fields == {"unknown:denied", "resolve:denied"}
    assert audit.count(runtime.redis, "unknown", "denied") == 200


def test_resubmit_of_a_published_final_is_not_offered_nor_accepted(client: Client, runtime: Runtime) -> None:
    """D38: a rejected order (its final state published) gets no resubmit button, and its
    POST is refused by the store's rule: one person cannot make it sendable again."""
    # given
    p = Payout(
        payout_cl_id="fin-1", amount=5_000_000, bank_name="BCA", name=NAME, number=NUMBER, notify_url=None
    )
    runtime.store.create(p, due_at=time.time() + 3600)
    runtime.store.transition("fin-1", State.SUBMITTING, reason="claim")
    runtime.store.transition("fin-1", State.REJECTED, reason="0012 unsupported bank")
    # when
    page = client.get("/order/fin-1", user="otto").body
    r = client.post(
        "/do/resubmit",
        user="otto",
        form={"csrf": csrf_token(SECRET, "otto"), "payout_cl_id": "fin-1", "expect_state": "rejected"},
    )
    # then
    assert "/do/resubmit" not in page and "final state was published" in page
    assert r.status == 400 and "second person" in r.body
    assert runtime.store.state_of("fin-1") is State.REJECTED
