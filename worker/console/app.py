"""The payout desk console: a WSGI app of server-rendered pages and plain POST forms.

Every action calls the same function as the ``payouts`` CLI (``worker.ops.commands``,
``worker.controls``); the console adds authentication, roles, CSRF, the same-origin
check, the expected-state check (409) and its audit trail, never a rule of its own
about orders.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, quote

import redis

from worker import controls, keys
from worker.checks import gateway_evidence
from worker.console import audit
from worker.console.auth import Actor
from worker.console.config import ConsoleConfig, load_console_config
from worker.console.html import age, esc, hidden, idr, masked_account, masked_name, page, table, when
from worker.console.security import HEADERS, csrf_token, csrf_valid, same_origin
from worker.errors import InvalidTransition, OrderNotFound, PayoutError
from worker.logs import get_logger
from worker.ops import commands
from worker.payout import ID_RE
from worker.runtime import Runtime, get_runtime
from worker.states import State
from worker.store import Order

log = get_logger("payouts.console")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

MAX_FORM: Final = 64 * 1024
MAX_BULK: Final = 500
#: order fields that are personal data or internal: never shown as evidence
_PRIVATE: Final = frozenset(
    {"name", "number", "name_mask", "number_mask", "fp", "notify_url", "state", "amount", "bank_name"}
)
_STATIC: Final = {"console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
_PHRASES: Final = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Reply(Exception):
    """Answer now with this status and message (an error page)."""

    def __init__(self, status: int, message: str, *, result: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.result = result


@dataclass
class Request:
    environ: dict[str, Any]
    method: str
    path: str
    base: str
    actor: Actor | None
    request_id: str
    form: dict[str, list[str]] = field(default_factory=dict)

    def one(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    @property
    def remote(self) -> str:
        return str(self.environ.get("REMOTE_ADDR", ""))[:45]


class Console:
    def __init__(self, runtime: Runtime | None, config: ConsoleConfig) -> None:
        self._runtime = runtime
        self.config = config

    @property
    def rt(self) -> Runtime:
        return self._runtime or get_runtime()

    # -- WSGI ------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        base = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        path = str(environ.get("PATH_INFO", "")) or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        rid = uuid.uuid4().hex[:16]
        if path.startswith("/static/") and method == "GET":
            return self._static(path[len("/static/") :], start, rid)
        actor = self.config.identity(environ) if self.config.identity else None
        req = Request(environ, method, path, base, actor, rid)
        try:
            if method == "POST":
                req.form = self._read_form(environ)
            status, headers, body = self._dispatch(req)
        except Reply as r:
            status, headers, body = r.status, [], self._error_page(req, r)
            if isinstance(r, _Challenge):
                headers = [("WWW-Authenticate", 'Basic realm="payout console", charset="UTF-8"')]
        except redis.exceptions.RedisError as exc:
            log.error("console.store_down", error=type(exc).__name__)
            status, headers, body = 503, [], self._error_page(req, Reply(503, "the store is unreachable"))
        return self._send(start, status, headers, body, rid)

    def _send(
        self, start: StartResponse, status: int, headers: list[tuple[str, str]], body: str, rid: str
    ) -> list[bytes]:
        data = body.encode()
        out = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("X-Request-Id", rid),
            *HEADERS,
            *headers,
        ]
        start(f"{status} {_PHRASES.get(status, 'Error')}", out)
        return [data]

    def _static(self, name: str, start: StartResponse, rid: str) -> list[bytes]:
        if name not in _STATIC:
            start("404 Not Found", [("Content-Type", "text/plain"), *HEADERS])
            return [b"not found"]
        data = resources.files("worker.console").joinpath(f"static/{name}").read_bytes()
        headers = [("Content-Type", _STATIC[name]), ("Content-Length", str(len(data))), ("X-Request-Id", rid)]
        start("200 OK", [*headers, *HEADERS])
        return [data]

    @staticmethod
    def _read_form(environ: Mapping[str, Any]) -> dict[str, list[str]]:
        ctype = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_FORM:
            raise Reply(413, "the form is too large")
        body = environ["wsgi.input"].read(length) if length else b""
        if ctype != "application/x-www-form-urlencoded":
            raise Reply(400, "forms are application/x-www-form-urlencoded")
        try:
            return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2 * MAX_BULK + 20)
        except (UnicodeDecodeError, ValueError):
            raise Reply(400, "the form could not be read") from None

    # -- routing ---------------------------------------------------------------

    def _dispatch(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        if req.actor is None:
            if req.method == "POST":
                self._audit(req, _action_of(req.path), "denied", detail="not authenticated")
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

    def _token(self, req: Request) -> str:
        assert req.actor is not None
        return csrf_token(self.config.secret, req.actor.name)

    def can(self, req: Request, action: str) -> bool:
        """Whether to render the control for ``action`` (the server checks again on POST)."""
        return req.actor is not None and not self.config.read_only and req.actor.may(action)

    # -- actions ---------------------------------------------------------------

    def _action(self, req: Request, action: str) -> tuple[int, list[tuple[str, str]], str]:
        handlers: dict[str, Callable[[Request], tuple[int, list[tuple[str, str]], str]]] = {
            "resolve": self.do_resolve,
            "back_to_polling": self.do_back_to_polling,
            "resubmit": self.do_resubmit,
            "approve": self.do_approve,
            "reject": self.do_reject,
            "bulk_approve": self.do_bulk_approve,
            "pause": self.do_pause,
            "resume": self.do_resume,
        }
        handler = handlers.get(action)
        if handler is None:
            raise Reply(404, "no such action")
        pid = req.one("payout_cl_id")
        self._guard(req, "approve" if action == "bulk_approve" else action, payout_cl_id=_safe_id(pid))
        return handler(req)

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
            if isinstance(exc, controls.ApprovalRefused):
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

    def _back(self, req: Request, pid: str) -> tuple[int, list[tuple[str, str]], str]:
        nxt = req.one("next")
        target = nxt if nxt in ("/review", "/approvals", "/pause", "/") else f"/order/{quote(pid)}"
        return 303, [("Location", f"{req.base}{target}")], ""

    def do_resolve(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        pid, _ = self._order_for(req, "resolve")
        state = req.one("state")
        if state not in ("succeeded", "failed"):
            self._audit(
                req, "resolve", "invalid", payout_cl_id=pid, detail="state must be succeeded or failed"
            )
            raise Reply(400, "state must be succeeded or failed")
        note = self._note(req, "resolve", pid)
        actor = _name(req)
        self._run(
            req,
            "resolve",
            pid,
            req.one("expect_state"),
            lambda: commands.resolve(self.rt, pid, State(state), note, by=actor),
        )
        return self._back(req, pid)

    def do_back_to_polling(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        pid, _ = self._order_for(req, "back_to_polling")
        note = self._note(req, "back_to_polling", pid)
        actor = _name(req)
        self._run(
            req,
            "back_to_polling",
            pid,
            req.one("expect_state"),
            lambda: commands.back_to_polling(self.rt, pid, by=actor, note=note),
        )
        return self._back(req, pid)

    def do_resubmit(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        pid, _ = self._order_for(req, "resubmit")
        note = " ".join(req.one("note").split()) or None
        actor = _name(req)
        self._run(
            req,
            "resubmit",
            pid,
            req.one("expect_state"),
            lambda: commands.resubmit(self.rt, pid, note=note, by=actor),
        )
        return self._back(req, pid)

    def _check_maker(self, req: Request, order: Order) -> None:
        """Maker-checker: nobody approves an order they requested or last changed."""
        actor = _name(req)
        if actor in makers(order):
            detail = "maker-checker: you requested or last changed this order"
            self._audit(req, "approve", "refused", payout_cl_id=order.payout_cl_id, detail=detail)
            raise Reply(403, detail, result="refused")

    def do_approve(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        pid, order = self._order_for(req, "approve")
        self._check_maker(req, order)
        expect, actor = req.one("expect_state"), _name(req)
        self._run(
            req,
            "approve",
            pid,
            expect,
            lambda: controls.approve(self.rt, pid, by=actor, expect_state=State(expect)),
        )
        return self._back(req, pid)

    def do_reject(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        pid, _ = self._order_for(req, "reject")
        note = self._note(req, "reject", pid, "reason")
        expect, actor = req.one("expect_state"), _name(req)
        self._run(
            req,
            "reject",
            pid,
            expect,
            lambda: controls.reject(self.rt, pid, by=actor, note=note, expect_state=State(expect)),
        )
        return self._back(req, pid)

    def do_bulk_approve(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        ids = [i for i in dict.fromkeys(req.form.get("id", [])) if i]
        if not ids or len(ids) > MAX_BULK:
            self._audit(req, "approve", "invalid", detail=f"bulk selection of {len(ids)} orders")
            raise Reply(400, f"select between 1 and {MAX_BULK} orders")
        results: list[tuple[str, str, str]] = []
        for pid in ids:
            sub = Request(req.environ, "POST", req.path, req.base, req.actor, req.request_id)
            sub.form = {"payout_cl_id": [pid], "expect_state": [req.one("expect_state")]}
            try:
                _, order = self._order_for(sub, "approve")
                self._check_maker(sub, order)
                actor, expect = _name(req), sub.one("expect_state")
                self._run(
                    sub,
                    "approve",
                    pid,
                    expect,
                    lambda p=pid, e=expect, a=actor: controls.approve(
                        self.rt, p, by=a, expect_state=State(e)
                    ),  # type: ignore[misc]
                )
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
        bank = req.one("bank").strip().upper()
        if bank in ("", "*"):
            return None
        if not bank.replace("_", "").isalnum() or len(bank) > 32:
            self._audit(req, action, "invalid", detail="bank code malformed")
            raise Reply(400, "bank must be a bank code (letters and digits) or empty for every bank")
        return bank

    def do_pause(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        bank = self._scope(req, "pause")
        note = self._note(req, "pause", "", "reason")
        actor = _name(req)
        try:
            controls.pause(self.rt, reason=note, by=actor, bank=bank)
        except PayoutError as exc:
            self._audit(req, "pause", "invalid", detail=str(exc))
            raise Reply(400, str(exc)) from None
        self._audit(req, "pause", "ok", detail=f"scope {bank or '*'}: {note}")
        return 303, [("Location", f"{req.base}/pause")], ""

    def do_resume(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        bank = self._scope(req, "resume")
        actor = _name(req)
        try:
            controls.resume(self.rt, by=actor, bank=bank)
        except PayoutError as exc:
            self._audit(req, "resume", "invalid", detail=str(exc))
            raise Reply(400, str(exc)) from None
        self._audit(req, "resume", "ok", detail=f"scope {bank or '*'}")
        return 303, [("Location", f"{req.base}/pause")], ""

    def _search(self, req: Request) -> tuple[int, list[tuple[str, str]], str]:
        pid = req.one("payout_cl_id").strip()
        if not ID_RE.fullmatch(pid):
            raise Reply(400, "payout_cl_id: 1-32 letters, digits, '_', '.', ':' or '-'")
        if self.rt.store.state_of(pid) is None:
            raise Reply(404, "no order with that payout_cl_id")
        return 303, [("Location", f"{req.base}/order/{quote(pid)}")], ""

    # -- pages -----------------------------------------------------------------

    def _banners(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.config.read_only:
            out.append(("readonly", "Read-only console: no action can be taken here."))
        for scope, p in sorted(read_pauses(self.rt).items()):
            what = "every bank" if scope == "*" else f"bank {esc(scope)}"
            kind = "held" if p.get("source") == "balance" else "paused"
            label = "Held (balance)" if kind == "held" else "Paused"
            out.append(
                (
                    kind,
                    f"<strong>{label}:</strong> no new payouts are sent for {what} — "
                    f"{esc(p.get('reason', ''))} (by {esc(p.get('by', '?'))}, "
                    f"since {esc(when(p.get('since')))})",
                )
            )
        return out

    def _page(self, req: Request, title: str, body: str, *, active: str = "") -> str:
        actor = req.actor
        return page(
            base=req.base,
            title=title,
            body=body,
            actor=actor.name if actor else "",
            roles=",".join(sorted(actor.roles)) if actor else "",
            banners=self._banners() if actor else [],
            active=active,
        )

    def _error_page(self, req: Request, r: Reply) -> str:
        body = f'<p class="error">{esc(r.message)}</p><p><a href="{esc(req.base)}/">Overview</a></p>'
        title = {409: "Conflict", 403: "Forbidden", 404: "Not found", 400: "Refused"}.get(r.status, "Error")
        if req.actor is None:
            return page(base=req.base, title=title, body=body)
        return self._page(req, title, body)

    def overview(self, req: Request) -> str:
        rt = self.rt
        s = commands.stats(rt)
        counts, swept = s["counts"], s["last_sweep_age_s"]
        rows = [(esc(state), f'<span class="num">{counts.get(state, 0)}</span>') for state in counts]
        oldest = (
            f"{_order_link(req, s['oldest_due'])} (due {age(s['oldest_due_late_s'])} ago)"
            if s["oldest_due"]
            else "none"
        )
        facts = [
            ("Open orders", esc(s["open"])),
            ("Due backlog (due now, not yet worked)", esc(s["due_backlog"])),
            ("Oldest open", oldest),
            ("In review", f'<a href="{esc(req.base)}/review">{esc(s["review"])}</a>'),
            (
                "Last sweep",
                esc(f"{age(swept)} ago" if swept is not None else "never"),
            ),
        ]
        aw = State.AWAITING_APPROVAL
        facts.insert(
            4, ("Awaiting approval", f'<a href="{esc(req.base)}/approvals">{counts.get(aw.value, 0)}</a>')
        )
        body = (
            '<section class="facts">' + table(["", ""], facts, cls="kv") + "</section>"
            "<h2>Orders per state</h2>" + table(["State", "Orders"], rows)
        )
        return self._page(req, "Overview", body, active="overview")

    def _row_actions(self, req: Request, o: Order, nxt: str) -> str:
        token = self._token(req)
        base = esc(req.base)
        proof: str | None = None
        common = hidden(csrf=token, payout_cl_id=o.payout_cl_id, expect_state=o.state.value, next=nxt)
        parts = []
        if o.state is State.REVIEW and self.can(req, "resolve"):
            parts.append(
                f'<form method="post" action="{base}/do/resolve" class="inline">{common}'
                '<input name="note" placeholder="note (required)" aria-label="note" maxlength="500">'
                '<button name="state" value="succeeded">Resolve succeeded</button>'
                '<button name="state" value="failed" class="danger">Resolve failed</button></form>'
            )
        if o.state is State.REVIEW and self.can(req, "back_to_polling"):
            parts.append(
                f'<form method="post" action="{base}/do/back_to_polling" class="inline">{common}'
                '<input name="note" placeholder="note (required)" aria-label="note" maxlength="500">'
                "<button>Back to polling</button></form>"
            )
        published = o.state is State.REJECTED or bool(o.fields.get("fin"))
        if o.state in (State.REVIEW, State.REJECTED) and self.can(req, "resubmit") and published:
            # final means final (D38): two people, from the CLI, recorded in the history
            proof = "its final state was published to the web app"
            parts.append(
                '<span class="mine">no resubmit: its final state was published; sending it again '
                "needs `payouts resubmit --force --note --approved-by` (a second person)</span>"
            )
        elif o.state in (State.REVIEW, State.REJECTED) and self.can(req, "resubmit"):
            proof = gateway_evidence(self.rt, o)
            if proof:
                parts.append(
                    f'<span class="mine">no resubmit: the gateway had this order ({esc(proof)}); '
                    "resolve it, or force from the CLI after the gateway confirms</span>"
                )
        if o.state in (State.REVIEW, State.REJECTED) and self.can(req, "resubmit") and not proof:
            parts.append(
                f'<form method="post" action="{base}/do/resubmit" class="inline">{common}'
                '<input name="note" placeholder="note" aria-label="note" maxlength="500">'
                "<button>Resubmit (after a gateway query)</button></form>"
            )
        if o.state is State.AWAITING_APPROVAL:
            if self.can(req, "approve") and _name(req) not in makers(o):
                parts.append(
                    f'<form method="post" action="{base}/do/approve" class="inline">{common}'
                    '<button class="primary">Approve</button></form>'
                )
            elif self.can(req, "approve"):
                parts.append('<span class="mine">your request: another approver decides</span>')
            if self.can(req, "reject"):
                parts.append(
                    f'<form method="post" action="{base}/do/reject" class="inline">{common}'
                    '<input name="reason" placeholder="reason (required)" aria-label="reason" '
                    'maxlength="500"><button class="danger">Reject</button></form>'
                )
        return "".join(parts)

    def review(self, req: Request) -> str:
        rt = self.rt
        rows_in = commands.list_orders(rt, State.REVIEW, limit=self.config.page_size)
        orders = rt.store.get_many([r["payout_cl_id"] for r in rows_in])
        scored: Any = rt.redis.zrange(keys.REVIEW, 0, self.config.page_size - 1, withscores=True)
        since = {str(k): float(v) for k, v in scored}
        now = time.time()
        rows = []
        for r in rows_in:
            o = orders.get(r["payout_cl_id"])
            if o is None:
                continue
            t = since.get(o.payout_cl_id)
            rows.append(
                (
                    _order_link(req, o.payout_cl_id),
                    esc(idr(o.amount)),
                    esc(o.reason),
                    esc(age(now - float(t)) if t is not None else ""),
                    esc(_last_answer(o)),
                    self._row_actions(req, o, "/review"),
                )
            )
        body = (
            f"<p>{len(rows)} order(s) need a person. Open one to see its evidence and history.</p>"
            + table(["Order", "Amount", "Reason", "In review for", "Last gateway answer", "Actions"], rows)
        )
        return self._page(req, "Review queue", body, active="review")

    def approvals(self, req: Request) -> str:
        aw = State.AWAITING_APPROVAL
        rt = self.rt
        listed = commands.list_orders(rt, aw, limit=self.config.page_size)
        orders = rt.store.get_many([r["payout_cl_id"] for r in listed])
        bulk = self.can(req, "approve")
        rows = []
        for r in listed:
            o = orders.get(r["payout_cl_id"])
            if o is None:
                continue
            mine = _name(req) in makers(o)
            pick = (
                f'<input type="checkbox" name="id" value="{esc(o.payout_cl_id)}" form="bulk" '
                f'aria-label="select {esc(o.payout_cl_id)}">'
                if bulk and not mine
                else ""
            )
            rows.append(
                (
                    pick,
                    _order_link(req, o.payout_cl_id),
                    esc(idr(o.amount)),
                    esc(o.bank_name),
                    esc(masked_account(o.number_mask)),
                    esc(o.fields.get("requested_by", "")),
                    esc(age(time.time() - o.created_at)),
                    self._row_actions(req, o, "/approvals"),
                )
            )
        form = ""
        if bulk and rows:
            form = (
                f'<form method="post" action="{esc(req.base)}/do/bulk_approve" id="bulk">'
                + hidden(csrf=self._token(req), expect_state=aw.value)
                + "<button class=primary>Approve selected</button></form>"
            )
        body = (
            f"<p>{len(rows)} order(s) wait for a checker. Nobody approves an order they requested.</p>"
            + form
            + table(["", "Order", "Amount", "Bank", "Account", "Requested by", "Waiting", "Actions"], rows)
        )
        return self._page(req, "Approvals", body, active="approvals")

    def order_page(self, req: Request, pid: str) -> str:
        if not ID_RE.fullmatch(pid):
            raise Reply(404, "no such order")
        o = self.rt.store.get(pid)
        if o is None:
            raise Reply(404, "no such order")
        facts = [
            ("State", f'<span class="state {esc(o.state.value)}">{esc(o.state.value)}</span>'),
            ("Amount", esc(idr(o.amount))),
            ("Bank", esc(o.bank_name)),
            ("Account", esc("(erased)" if o.erased else masked_account(o.number_mask))),
            ("Holder", esc("(erased)" if o.erased else masked_name(o.name_mask))),
            ("Gateway payout_id", esc(o.payout_id or "")),
            ("Reason", esc(o.reason)),
            ("Created", esc(when(o.created_at))),
            ("Last change", esc(when(o.updated_at))),
            ("Next check due", esc(when(o.due_at))),
            (
                "Gateway had it",
                esc(
                    gateway_evidence(self.rt, o) or "no proof recorded (a resubmit queries the gateway first)"
                ),
            ),
        ]
        evidence = [
            (esc(k), esc(when(v) if k.endswith("_at") and _is_number(v) else v))
            for k, v in sorted(o.fields.items())
            if k not in _PRIVATE
        ]
        hist = [
            (
                esc(when(e.get("at"))),
                esc(e.get("from", "")),
                esc(e.get("to", "")),
                esc(e.get("by") or _actor_in(e.get("reason", ""))),
                esc(e.get("reason", "")),
            )
            for e in o.history
        ]
        aud = [
            (
                esc(when(a.get("at"))),
                esc(a.get("actor")),
                esc(a.get("action")),
                esc(a.get("result")),
                esc(a.get("detail")),
            )
            for a in audit.order_entries(self.rt.redis, pid)
        ]
        actions = self._row_actions(req, o, "")
        body = (
            table(["", ""], facts, cls="kv")
            + (f'<section class="actions"><h2>Actions</h2>{actions}</section>' if actions else "")
            + "<h2>History</h2>"
            + table(["At", "From", "To", "Actor", "Reason"], hist)
            + "<h2>Evidence</h2>"
            + table(["Field", "Value"], evidence, cls="kv")
            + "<h2>Console actions that changed nothing</h2>"
            + table(["At", "Actor", "Action", "Result", "Detail"], aud)
        )
        return self._page(req, f"Order {pid}", body)

    def search_page(self, req: Request) -> str:
        body = (
            f'<form method="post" action="{esc(req.base)}/search" class="search">'
            + hidden(csrf=self._token(req))
            + '<label>payout_cl_id <input name="payout_cl_id" maxlength="32" autocomplete="off"></label>'
            "<button>Find</button></form>"
            "<p>The id is sent in the form body, never in the address.</p>"
        )
        return self._page(req, "Search", body, active="search")

    def pause_page(self, req: Request) -> str:
        pauses = read_pauses(self.rt)
        can_resume = self.can(req, "resume")
        rows = []
        for scope, p in sorted(pauses.items()):
            action = ""
            if can_resume:
                action = (
                    f'<form method="post" action="{esc(req.base)}/do/resume" class="inline">'
                    + hidden(csrf=self._token(req), bank="" if scope == "*" else scope)
                    + "<button>Resume</button></form>"
                )
            rows.append(
                (
                    esc("every bank" if scope == "*" else scope),
                    esc(p.get("source", "")),
                    esc(p.get("reason", "")),
                    esc(p.get("by", "")),
                    esc(when(p.get("since"))),
                    action,
                )
            )
        form = ""
        if self.can(req, "pause"):
            form = (
                "<h2>Pause submissions</h2>"
                f'<form method="post" action="{esc(req.base)}/do/pause" class="stack">'
                + hidden(csrf=self._token(req))
                + '<label>Bank code (empty = every bank) <input name="bank" maxlength="32"></label>'
                '<label>Reason (required) <input name="reason" maxlength="500"></label>'
                '<button class="danger">Pause</button></form>'
                "<p>While paused no create request leaves any worker; orders wait as received; "
                "queries and callbacks go on.</p>"
            )
        body = table(["Scope", "Source", "Reason", "By", "Since", ""], rows) + form
        return self._page(req, "Pause", body, active="pause")


class _Challenge(Reply):
    def __init__(self) -> None:
        super().__init__(401, "sign in", result="denied")


def read_pauses(rt: Runtime) -> dict[str, dict[str, Any]]:
    """The pauses in force (worker.controls.pauses): scope -> {reason, by, since, source}."""
    return {p.scope: p.public() for p in controls.pauses(rt)}


def makers(order: Order) -> set[str]:
    """Who requested or last changed ``order``: they may not approve it."""
    who = {order.fields.get("requested_by", ""), order.fields.get("approved_by", "")}
    if order.history:
        last = order.history[-1]
        who.add(str(last.get("by") or _actor_in(str(last.get("reason", "")))))
    return {w for w in who if w}


_ACTOR_RES: Final = (
    re.compile(r"^operator (?P<a>[^:]+):"),  # resolve: "operator dina: note"
    re.compile(r"^[a-z ]+? by (?P<a>[^:]+?)(?::|$)"),  # "resubmit by dina: ...", "approved by bob"
)


def _actor_in(reason: str) -> str:
    """The actor named by a command's history reason, or ""."""
    for rx in _ACTOR_RES:
        m = rx.match(reason)
        if m:
            return m.group("a").strip()
    return ""


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _name(req: Request) -> str:
    assert req.actor is not None
    return req.actor.name


def _state(rt: Runtime, pid: str) -> str | None:
    s = rt.store.state_of(pid)
    return s.value if s else None


def _safe_id(pid: str) -> str:
    return pid if ID_RE.fullmatch(pid) else ""


def _action_of(path: str) -> str:
    name = path[len("/do/") :] if path.startswith("/do/") else "post"
    return name if name.replace("_", "").isalpha() and len(name) < 32 else "post"


def _last_answer(o: Order) -> str:
    f = o.fields
    parts = [f.get("last_gateway", ""), f.get("gateway_status", "") and f"status {f.get('gateway_status')}"]
    if f.get("last_report"):
        parts.append(f"via {f['last_report']}")
    return ", ".join(p for p in parts if p)


def _order_link(req: Request, pid: str) -> str:
    return f'<a href="{esc(req.base)}/order/{esc(quote(pid))}">{esc(pid)}</a>'


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
