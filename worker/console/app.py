"""The payout desk console: a WSGI app of server-rendered pages and plain POST forms.

Every action calls the same function as the ``payouts`` CLI (the desk, ``worker.desk``);
the console adds authentication, roles, CSRF, the same-origin
check, the expected-state check (409) and its audit trail, never a rule of its own
about orders.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final
from urllib.parse import quote

import redis

from worker.console import audit
from worker.console.actions import ACTIONS, NAMES, Action, Form
from worker.console.auth import Actor
from worker.console.config import ConsoleConfig, load_console_config
from worker.console.html import esc, page, table
from worker.console.login import PATHS as LOGIN_PATHS
from worker.console.pages import Pages, _name, _order_link, makers
from worker.console.plumbing import (
    Answer,
    Reply,
    Request,
    StartResponse,
    WSGIApp,
    read_form,
    redirect,
    send,
    static,
)
from worker.console.security import csrf_valid, same_origin
from worker.desk import pausing
from worker.errors import ApprovalRefused, InvalidTransition, OrderNotFound, PayoutError
from worker.logs import get_logger
from worker.payout import ID_RE
from worker.runtime import Runtime
from worker.states import State
from worker.store import Order

log = get_logger("payouts.console")


MAX_BULK: Final = 500


class Console(Pages):
    """The console: WSGI, sign-in, routing, the guard, the audit and the actions table;
    the pages are :class:`worker.console.pages.Pages`'."""

    # -- WSGI ------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        base = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        path = str(environ.get("PATH_INFO", "")) or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        rid = uuid.uuid4().hex[:16]
        if path.startswith("/static/") and method == "GET":
            return static(path[len("/static/") :], start, rid)
        req = Request(environ, method, path, base, None, rid)
        try:
            req.actor = self._identify(req)
            if method == "POST":
                req.form = read_form(environ)
            status, headers, body = self._dispatch(req)
        except Reply as r:
            status, headers, body = r.status, list(r.headers), self._error_page(req, r)
            if isinstance(r, _Challenge):
                headers = [("WWW-Authenticate", 'Basic realm="payout console", charset="UTF-8"')]
        except redis.exceptions.RedisError as exc:
            log.error("console.store_down", error=type(exc).__name__)
            status, headers, body = 503, [], self._error_page(req, Reply(503, "the store is unreachable"))
        return send(start, status, headers, body, rid)

    def _identify(self, req: Request) -> Actor | None:
        if self.config.identity is not None:
            return self.config.identity(req.environ)
        if self.signin is not None and self.config.users is not None:
            return self.signin.identify(req)
        return None

    # -- routing ---------------------------------------------------------------

    def _dispatch(self, req: Request) -> Answer:
        forms = self.signin is not None and self.config.users is not None
        if forms and req.path in LOGIN_PATHS:
            assert self.signin is not None
            if req.path == "/logout":
                if req.actor is None:
                    return redirect(req, "/login")
                self._guard(req, "view", mutation=False)
            return self.signin.handle(req)
        if req.actor is None:
            if req.method == "POST":
                self._audit(req, _action_of(req.path), "denied", detail="not authenticated")
            if forms and req.method == "GET":
                return redirect(req, "/login")
            if self.config.basic_challenge:
                raise _Challenge()
            raise Reply(
                403, "not signed in: the console denies every request without a user", result="denied"
            )
        if req.method == "GET":
            if not req.actor.may("view"):
                raise Reply(403, "your roles do not include viewing the console", result="denied")
            return 200, [], self._get(req)
        if req.method != "POST":
            raise Reply(405, "GET or POST only")
        if req.path == "/search":
            self._guard(req, "search", mutation=False)
            return self._search(req)
        if req.path.startswith("/do/"):
            return self._action(req, req.path[len("/do/") :])
        raise Reply(404, "no such page")

    def _get(self, req: Request) -> str:
        p = req.path
        if p == "/":
            return self.overview(req)
        if p == "/review":
            return self.review(req)
        if p == "/approvals":
            return self.approvals(req)
        if p == "/pause":
            return self.pause_page(req)
        if p == "/search":
            return self.search_page(req)
        if p.startswith("/order/"):
            return self.order_page(req, p[len("/order/") :])
        raise Reply(404, "no such page")

    # -- guards ----------------------------------------------------------------

    def _guard(self, req: Request, action: str, *, mutation: bool = True, payout_cl_id: str = "") -> None:
        """Read-only switch, role, same origin, CSRF token: any failure is a 403 and an audit row."""
        actor = req.actor
        assert actor is not None
        why = ""
        if mutation and self.config.read_only:
            why = "the console is read-only"
        elif not actor.may(action):
            why = f"role {','.join(sorted(actor.roles))} may not {action}"
        else:
            ok, reason = same_origin(req.environ, self.config.origin)
            if not ok:
                why = f"cross-origin request refused ({reason})"
            elif not csrf_valid(
                self.config.secret, actor.name, req.one("csrf"), ttl_s=self.config.token_ttl_s
            ):
                why = "missing or invalid CSRF token (reload the page)"
        if why:
            if mutation:
                self._audit(req, action, "denied", payout_cl_id=payout_cl_id, detail=why)
            raise Reply(403, why, result="denied")

    def _audit(
        self, req: Request, action: str, result: str, *, payout_cl_id: str = "", detail: str = ""
    ) -> None:
        rt = self.rt
        audit.record(
            rt.redis,
            req.actor,
            action,
            result,
            payout_cl_id=payout_cl_id or None,
            detail=detail,
            request_id=req.request_id,
            remote=req.remote,
            retention_s=rt.settings.order_retention_days * 86400.0,
        )

    # -- actions ---------------------------------------------------------------

    def _action(self, req: Request, name: str) -> Answer:
        """``POST /do/<name>``: a row of the actions table (worker.console.actions)."""
        if name not in NAMES:
            raise Reply(404, "no such action")
        if name == "bulk_approve":
            self._guard(req, "approve")
            return self.do_bulk_approve(req)
        action = ACTIONS[name]
        self._guard(req, action.permission, payout_cl_id=_safe_id(req.one("payout_cl_id")))
        if action.on == "scope":
            return self._do_scope(req, name, action)
        return self._do_order(req, name, action)

    def _do_order(self, req: Request, name: str, action: Action) -> Answer:
        pid, order = self._order_for(req, name)
        choice = req.one("state") if action.choices else ""
        if action.choices and choice not in action.choices:
            detail = f"state must be {' or '.join(action.choices)}"
            self._audit(req, name, "invalid", payout_cl_id=pid, detail=detail)
            raise Reply(400, detail)
        note = self._form_note(req, name, pid, action)
        if "maker" in action.checks:
            self._check_maker(req, order)
        if "step_up" in action.checks:
            self._check_step_up(req, order)
        expect = req.one("expect_state")
        form = Form(_name(req), pid, State(expect), note, choice)
        self._run(req, name, pid, expect, lambda: action.desk(self.rt, form))
        return self._back(req, pid)

    def _do_scope(self, req: Request, name: str, action: Action) -> Answer:
        bank = self._scope(req, name)
        note = self._form_note(req, name, "", action)
        try:
            action.desk(self.rt, Form(_name(req), note=note, bank=bank))
        except PayoutError as exc:
            self._audit(req, name, "invalid", detail=str(exc))
            raise Reply(400, str(exc)) from None
        self._audit(req, name, "ok", detail=f"scope {bank or '*'}" + (f": {note}" if note else ""))
        return redirect(req, "/pause")

    def _form_note(self, req: Request, name: str, pid: str, action: Action) -> str:
        if not action.note:
            return ""
        if action.note_required:
            return self._note(req, name, pid, action.note)
        return " ".join(req.one(action.note).split())[:500]

    def _order_for(self, req: Request, action: str) -> tuple[str, Order]:
        """The order the form names, in the state the form expects (else 409)."""
        pid = req.one("payout_cl_id")
        if not ID_RE.fullmatch(pid):
            self._audit(req, action, "invalid", detail="payout_cl_id missing or malformed")
            raise Reply(400, "payout_cl_id missing or malformed")
        order = self.rt.store.get(pid)
        if order is None:
            self._audit(req, action, "invalid", payout_cl_id=pid, detail="no such order")
            raise Reply(404, f"no order {pid}")
        expect = req.one("expect_state")
        if not expect:
            self._audit(req, action, "invalid", payout_cl_id=pid, detail="expect_state missing")
            raise Reply(400, "the form must carry expect_state (reload the page)")
        if order.state.value != expect:
            self._conflict(req, action, pid, expect, order.state.value)
        return pid, order

    def _conflict(self, req: Request, action: str, pid: str, expect: str, now: str | None) -> None:
        detail = f"expected {expect}, order is {now}"
        self._audit(req, action, "conflict", payout_cl_id=pid, detail=detail)
        raise Reply(409, f"order {pid} moved meanwhile: {detail}; nothing was changed", result="conflict")

    def _run(self, req: Request, action: str, pid: str, expect: str, fn: Callable[[], object]) -> None:
        """Call the command; map its refusals to 409/403/400 and audit them."""
        try:
            fn()
        except InvalidTransition:
            self._conflict(req, action, pid, expect, _state(self.rt, pid))
        except OrderNotFound:
            self._audit(req, action, "invalid", payout_cl_id=pid, detail="no such order")
            raise Reply(404, f"no order {pid}") from None
        except PayoutError as exc:
            if isinstance(exc, ApprovalRefused):
                self._audit(req, action, "refused", payout_cl_id=pid, detail=str(exc))
                raise Reply(403, str(exc), result="refused") from None
            self._audit(req, action, "invalid", payout_cl_id=pid, detail=str(exc))
            raise Reply(400, str(exc)) from None
        self._audit(req, action, "ok", payout_cl_id=pid)

    def _note(self, req: Request, action: str, pid: str, name: str = "note") -> str:
        note = " ".join(req.one(name).split())
        if not note:
            self._audit(req, action, "invalid", payout_cl_id=pid, detail=f"{name} is required")
            raise Reply(400, f"{name} is required: say why (it is kept in the order's history)")
        return note[:500]

    def _back(self, req: Request, pid: str) -> Answer:
        nxt = req.one("next")
        target = nxt if nxt in ("/review", "/approvals", "/pause", "/") else f"/order/{quote(pid)}"
        return 303, [("Location", f"{req.base}{target}")], ""

    def _check_maker(self, req: Request, order: Order) -> None:
        """Maker-checker: nobody approves an order they requested or last changed."""
        actor = _name(req)
        if actor in makers(order):
            detail = "maker-checker: you requested or last changed this order"
            self._audit(req, "approve", "refused", payout_cl_id=order.payout_cl_id, detail=detail)
            raise Reply(403, detail, result="refused")

    def _check_step_up(self, req: Request, order: Order) -> None:
        """An approval above ``CONSOLE_STEP_UP_ABOVE`` needs a fresh TOTP code of the approver."""
        if not self._needs_step_up(order):
            return
        code = req.one("otp")
        if self.signin is not None and code and self.signin.step_up(req, code):
            return
        why = "wrong or used code" if code else "no code given"
        detail = f"this amount needs a fresh code from your authenticator app ({why})"
        self._audit(req, "approve", "refused", payout_cl_id=order.payout_cl_id, detail=detail)
        raise Reply(403, detail, result="refused")

    def do_bulk_approve(self, req: Request) -> Answer:
        ids = [i for i in dict.fromkeys(req.form.get("id", [])) if i]
        if not ids or len(ids) > MAX_BULK:
            self._audit(req, "approve", "invalid", detail=f"bulk selection of {len(ids)} orders")
            raise Reply(400, f"select between 1 and {MAX_BULK} orders")
        results: list[tuple[str, str, str]] = []
        approve = ACTIONS["approve"]
        for pid in ids:
            sub = Request(req.environ, "POST", req.path, req.base, req.actor, req.request_id)
            sub.form = {"payout_cl_id": [pid], "expect_state": [req.one("expect_state")]}
            try:
                _, order = self._order_for(sub, "approve")
                self._check_maker(sub, order)
                if self._needs_step_up(order):
                    detail = "above the step-up amount: approve it on its own, with a code"
                    self._audit(sub, "approve", "refused", payout_cl_id=pid, detail=detail)
                    raise Reply(403, detail, result="refused")
                expect = sub.one("expect_state")
                form = Form(_name(req), pid, State(expect))
                self._run(sub, "approve", pid, expect, lambda f=form: approve.desk(self.rt, f))  # type: ignore[misc]
                results.append((pid, "approved", ""))
            except Reply as r:
                results.append((pid, r.result, r.message))
        rows = [(_order_link(req, p), esc(res), esc(msg)) for p, res, msg in results]
        done = sum(1 for _, res, _ in results if res == "approved")
        body = (
            f"<p>{done} of {len(results)} approved.</p>"
            + table(["Order", "Result", "Detail"], rows)
            + f'<p><a href="{esc(req.base)}/approvals">Back to approvals</a></p>'
        )
        return 200, [], self._page(req, "Bulk approval", body, active="approvals")

    def _scope(self, req: Request, action: str) -> str | None:
        """The bank the form names, by the desk's own rule (controls: every code a payout
        may carry, any letter case; D53), or None for every bank."""
        bank = req.one("bank").strip()
        if bank in ("", "*"):
            return None
        try:
            return pausing.scope_of(bank)
        except PayoutError as exc:
            self._audit(req, action, "invalid", detail="bank code malformed")
            raise Reply(400, str(exc)) from None

    def _error_page(self, req: Request, r: Reply) -> str:
        if self.signin is not None and req.path == "/login":
            return self.signin.form(req, r.message)
        if self.signin is not None and req.path == "/login/totp":
            return self.signin.totp_form(req, r.message)
        body = f'<p class="error">{esc(r.message)}</p><p><a href="{esc(req.base)}/">Overview</a></p>'
        title = {409: "Conflict", 403: "Forbidden", 404: "Not found", 400: "Refused"}.get(r.status, "Error")
        if req.actor is None:
            return page(base=req.base, title=title, body=body)
        return self._page(req, title, body)

    def _search(self, req: Request) -> Answer:
        pid = req.one("payout_cl_id").strip()
        if not ID_RE.fullmatch(pid):
            raise Reply(400, "payout_cl_id: 1-32 letters, digits, '_', '.', ':' or '-'")
        if self.rt.store.state_of(pid) is None:
            raise Reply(404, "no order with that payout_cl_id")
        return 303, [("Location", f"{req.base}/order/{quote(pid)}")], ""


class _Challenge(Reply):
    def __init__(self) -> None:
        super().__init__(401, "sign in", result="denied")


def _state(rt: Runtime, pid: str) -> str | None:
    s = rt.store.state_of(pid)
    return s.value if s else None


def _safe_id(pid: str) -> str:
    return pid if ID_RE.fullmatch(pid) else ""


def _action_of(path: str) -> str:
    """The audit label of a POST: a known action's name, else ``unknown`` (D46: a path an
    anonymous client makes up must not become a new counter field or metrics series)."""
    if path == "/search":
        return "search"
    name = path[len("/do/") :] if path.startswith("/do/") else ""
    return name if name in NAMES else "unknown"


def make_console(runtime: Runtime | None = None, config: ConsoleConfig | None = None) -> WSGIApp:
    """The console as a WSGI app; ``config`` defaults to the ``CONSOLE_*`` environment."""
    return Console(runtime, config if config is not None else load_console_config())


def mount(host: WSGIApp, prefix: str, app: WSGIApp) -> WSGIApp:
    """Serve ``app`` under ``prefix`` (e.g. ``/console``) and everything else by ``host``."""
    prefix = "/" + prefix.strip("/")

    def dispatch(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path == prefix:
            start("308 Permanent Redirect", [("Location", f"{environ.get('SCRIPT_NAME', '')}{prefix}/")])
            return [b""]
        if path.startswith(prefix + "/"):
            environ = {
                **environ,
                "SCRIPT_NAME": str(environ.get("SCRIPT_NAME", "")) + prefix,
                "PATH_INFO": path[len(prefix) :],
            }
            return app(environ, start)
        return host(environ, start)

    return dispatch
