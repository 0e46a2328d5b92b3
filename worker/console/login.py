"""Sign-in pages of the console: ``/login`` (password), ``/login/totp`` (the second factor),
``/logout``. Sessions, throttling and TOTP are :mod:`worker.console.signin`'s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import redis

from worker.console import audit
from worker.console.auth import _DUMMY, Actor, User, verify_password
from worker.console.config import ConsoleConfig
from worker.console.html import esc, hidden, page
from worker.console.plumbing import Answer, Reply, Request, redirect
from worker.console.security import same_origin
from worker.console.signin import Sessions, Throttle, TotpSecrets, needs_second_factor, session_id
from worker.runtime import Runtime

PATHS: Final = frozenset({"/login", "/login/totp", "/logout"})


class SignIn:
    """The form sign-in of ``CONSOLE_USERS_FILE`` users, over the runtime's Redis."""

    def __init__(self, config: ConsoleConfig, runtime: Callable[[], Runtime]) -> None:
        self.config = config
        #: none under an identity function (trusted headers): then only step_up is used
        self.users = dict(config.users or {})
        self._rt = runtime
        self._parts: tuple[redis.Redis, Sessions, Throttle, TotpSecrets] | None = None

    def _tools(self) -> tuple[Sessions, Throttle, TotpSecrets]:
        client = self._rt().redis
        if self._parts is None or self._parts[0] is not client:
            policy = self.config.signin
            self._parts = (
                client,
                Sessions(client, policy),
                Throttle(client, policy),
                TotpSecrets(client, self.config.secret),
            )
        return self._parts[1], self._parts[2], self._parts[3]

    @property
    def sessions(self) -> Sessions:
        return self._tools()[0]

    @property
    def totp(self) -> TotpSecrets:
        return self._tools()[2]

    # -- who is asking ---------------------------------------------------------

    def identify(self, req: Request) -> Actor | None:
        """The signed-in actor of the request's session cookie (None: not signed in)."""
        req.sid = session_id(req.environ)
        if not req.sid:
            return None
        s = self.sessions.get(req.sid)
        return s.actor if s is not None and s.stage == "full" else None

    # -- pages -------------------------------------------------------------------

    def handle(self, req: Request) -> Answer:
        if req.path == "/login":
            return self._password(req) if req.method == "POST" else (200, [], self.form(req))
        if req.path == "/login/totp":
            return self._code(req) if req.method == "POST" else (200, [], self.totp_form(req))
        if req.method != "POST":
            raise Reply(405, "sign out with the button (POST)")
        return self._logout(req)

    def form(self, req: Request, error: str = "") -> str:
        msg = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
        body = (
            msg + f'<form method="post" action="{esc(req.base)}/login" class="stack" autocomplete="off">'
            '<label>User <input name="user" maxlength="64" autocomplete="username" '
            "required autofocus></label>"
            '<label>Password <input name="password" type="password" maxlength="200" '
            'autocomplete="current-password" required></label>'
            '<button class="primary">Sign in</button></form>'
        )
        return page(base=req.base, title="Sign in", body=body)

    def totp_form(self, req: Request, error: str = "") -> str:
        msg = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
        body = (
            msg + "<p>Your role needs a second factor: the 6-digit code of your authenticator app.</p>"
            f'<form method="post" action="{esc(req.base)}/login/totp" class="stack" autocomplete="off">'
            '<label>Code <input name="code" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" '
            'autocomplete="one-time-code" required autofocus></label>'
            '<button class="primary">Continue</button></form>'
        )
        return page(base=req.base, title="Second factor", body=body)

    def signout(self, req: Request, token: str) -> str:
        """The header's sign-out button."""
        return (
            f'<form method="post" action="{esc(req.base)}/logout" class="inline signout">'
            f"{hidden(csrf=token)}<button>Sign out</button></form>"
        )

    # -- steps -------------------------------------------------------------------

    def _audit(self, req: Request, action: str, result: str, detail: str, actor: Actor | None = None) -> None:
        rt = self._rt()
        audit.record(
            rt.redis,
            actor,
            action,
            result,
            detail=detail,
            request_id=req.request_id,
            remote=req.remote,
            retention_s=rt.settings.order_retention_days * 86400.0,
        )

    def _same_origin(self, req: Request, action: str) -> None:
        ok, reason = same_origin(req.environ, self.config.origin)
        if not ok:
            self._audit(req, action, "denied", f"cross-origin request refused ({reason})")
            raise Reply(403, f"cross-origin request refused ({reason})", result="denied")

    def _throttle(self, req: Request, action: str, name: str) -> None:
        """429 with Retry-After while this user or address must wait (audited, counted)."""
        _, throttle, _ = self._tools()
        v = throttle.take(name, req.remote)
        if v.retry_after_s:
            self._audit(
                req, action, v.result, f"{v.scope} {v.result} for {v.retry_after_s}s; user {name[:64]}"
            )
            what = "locked out" if v.result == "locked" else "throttled"
            raise Reply(
                429,
                f"too many attempts: sign-in {what}; try again in {v.retry_after_s} s",
                result=v.result,
                headers=[("Retry-After", str(v.retry_after_s))],
            )

    def _password(self, req: Request) -> Answer:
        self._same_origin(req, "login")
        name = req.one("user").strip()[:64]
        self._throttle(req, "login", name)
        user = self.users.get(name)
        ok = verify_password(req.one("password"), user.password_hash if user else _DUMMY)
        if not ok or user is None:
            self._audit(req, "login", "denied", f"wrong user name or password; user {name}")
            raise Reply(401, "wrong user name or password", result="denied")
        sessions, throttle, totp = self._tools()
        sessions.end(req.sid)  # whatever id came with the request is never promoted
        if needs_second_factor(user.roles):
            if not totp.enrolled(user.name):
                self._audit(
                    req, "login", "refused", "second factor not enrolled", Actor(user.name, user.roles)
                )
                raise Reply(
                    403,
                    "your role needs a second factor and none is enrolled: ask an admin to run "
                    "python -m worker.console enrol-totp --user NAME",
                    result="refused",
                )
            sid = sessions.create(user, "password")
            return redirect(req, "/login/totp", ("Set-Cookie", sessions.cookie(req.base, sid)))
        throttle.succeeded(user.name)
        sid = sessions.create(user, "full")
        self._audit(req, "login", "ok", "", Actor(user.name, user.roles))
        return redirect(req, "/", ("Set-Cookie", sessions.cookie(req.base, sid)))

    def _code(self, req: Request) -> Answer:
        sessions, throttle, totp = self._tools()
        req.sid = session_id(req.environ)
        pending = sessions.get(req.sid, touch=False) if req.sid else None
        if pending is None or pending.stage != "password":
            return redirect(req, "/login")
        self._same_origin(req, "login")
        self._throttle(req, "login", pending.user)
        if not totp.verify(pending.user, req.one("code")):
            self._audit(req, "login", "denied", f"wrong or reused TOTP code; user {pending.user}")
            raise Reply(401, "wrong or already used code", result="denied")
        throttle.succeeded(pending.user)
        sessions.end(req.sid)
        sid = sessions.create(User(pending.user, "", pending.roles), "full")
        self._audit(req, "login", "ok", "with TOTP", pending.actor)
        return redirect(req, "/", ("Set-Cookie", sessions.cookie(req.base, sid)))

    def _logout(self, req: Request) -> Answer:
        sessions = self.sessions
        sessions.end(req.sid)
        if req.actor is not None:
            self._audit(req, "logout", "ok", "", req.actor)
        return redirect(req, "/login", ("Set-Cookie", sessions.clear_cookie(req.base)))

    def step_up(self, req: Request, code: str) -> bool:
        """A fresh TOTP code of the signed-in user (an approval above the threshold)."""
        assert req.actor is not None
        self._throttle(req, "approve", req.actor.name)
        ok = self.totp.verify(req.actor.name, code)
        if ok:
            self._tools()[1].succeeded(req.actor.name)
        return ok
