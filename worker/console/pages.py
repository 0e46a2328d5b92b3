"""The console's pages: overview, review and approvals queues (a page of their index each),
order, search, pause. Read-only views: every control they render is checked again on POST
by :mod:`worker.console.app`."""

from __future__ import annotations

import re
import time
from typing import Any, Final
from urllib.parse import parse_qs, quote

from worker import keys
from worker.checks import gateway_evidence
from worker.console import audit
from worker.console.config import ConsoleConfig
from worker.console.html import age, esc, hidden, idr, masked_account, masked_name, page, table, when
from worker.console.login import SignIn
from worker.console.plumbing import Reply, Request
from worker.console.security import csrf_token
from worker.desk import pausing, reads
from worker.payout import ID_RE
from worker.runtime import Runtime, get_runtime
from worker.states import State
from worker.store import Order

#: order fields that are personal data or internal: never shown as evidence
_PRIVATE: Final = frozenset(
    {"name", "number", "name_mask", "number_mask", "fp", "notify_url", "state", "amount", "bank_name"}
)


class Pages:
    """The pages, and what they share with the actions: the runtime, the config, the
    sign-in (for the header's sign-out and the approvals' step-up), role checks."""

    def __init__(self, runtime: Runtime | None, config: ConsoleConfig) -> None:
        self._runtime = runtime
        self.config = config
        #: the sign-in form (users file) and the approvals' second factor; None without a secret
        self.signin = SignIn(config, lambda: self.rt) if config.secret else None

    @property
    def rt(self) -> Runtime:
        return self._runtime or get_runtime()

    def _token(self, req: Request) -> str:
        assert req.actor is not None
        return csrf_token(self.config.secret, req.actor.name)

    def can(self, req: Request, action: str) -> bool:
        """Whether to render the control for ``action`` (the server checks again on POST)."""
        return req.actor is not None and not self.config.read_only and req.actor.may(action)

    def _needs_step_up(self, order: Order) -> bool:
        above = self.config.signin.step_up_above
        return bool(above) and order.amount > above

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
        signout = ""
        if actor is not None and self.signin is not None and self.config.users is not None:
            signout = self.signin.signout(req, self._token(req))
        return page(
            signout=signout,
            base=req.base,
            title=title,
            body=body,
            actor=actor.name if actor else "",
            roles=",".join(sorted(actor.roles)) if actor else "",
            banners=self._banners() if actor else [],
            active=active,
        )

    def overview(self, req: Request) -> str:
        rt = self.rt
        s = reads.stats(rt)
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
                otp = (
                    '<input name="otp" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" '
                    'autocomplete="one-time-code" placeholder="code" aria-label="authenticator code" '
                    "required>"
                    if self._needs_step_up(o)
                    else ""
                )
                parts.append(
                    f'<form method="post" action="{base}/do/approve" class="inline">{common}{otp}'
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

    def _queue(self, req: Request, key: str, state: State) -> tuple[list[tuple[Order, float]], str, int]:
        """One page of a queue index (``?from=N``): the orders still in ``state`` with the time
        they entered it, the pager's links, and the queue's length. Reads one page whatever
        the number of open orders: a ZRANGE, a ZCARD, one HGETALL per row."""
        start = _offset(req)
        size = self.config.page_size
        rt = self.rt
        page = rt.store.queue_page(key, start, size)
        total = int(rt.redis.zcard(key))
        orders = rt.store.get_many([i for i, _ in page])
        rows = [(o, t) for i, t in page if (o := orders.get(i)) is not None and o.state is state]
        return rows, _pager(req, start, size, total), total

    def review(self, req: Request) -> str:
        page, pager, total = self._queue(req, keys.REVIEW, State.REVIEW)
        now = time.time()
        rows = [
            (
                _order_link(req, o.payout_cl_id),
                esc(idr(o.amount)),
                esc(o.reason),
                esc(age(now - since)),
                esc(_last_answer(o)),
                self._row_actions(req, o, "/review"),
            )
            for o, since in page
        ]
        body = (
            f"<p>{total} order(s) need a person. Open one to see its evidence and history.</p>"
            + table(["Order", "Amount", "Reason", "In review for", "Last gateway answer", "Actions"], rows)
            + pager
        )
        return self._page(req, "Review queue", body, active="review")

    def approvals(self, req: Request) -> str:
        aw = State.AWAITING_APPROVAL
        self.rt.store.backfill_approvals()  # once per store: orders that waited before the index
        page, pager, total = self._queue(req, keys.APPROVALS, aw)
        bulk = self.can(req, "approve")
        now = time.time()
        rows = []
        for o, since in page:
            mine = _name(req) in makers(o)
            pick = (
                f'<input type="checkbox" name="id" value="{esc(o.payout_cl_id)}" form="bulk" '
                f'aria-label="select {esc(o.payout_cl_id)}">'
                if bulk and not mine and not self._needs_step_up(o)
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
                    esc(age(now - since)),
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
            f"<p>{total} order(s) wait for a checker. Nobody approves an order they requested.</p>"
            + form
            + table(["", "Order", "Amount", "Bank", "Account", "Requested by", "Waiting", "Actions"], rows)
            + pager
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


def read_pauses(rt: Runtime) -> dict[str, dict[str, Any]]:
    """The pauses in force (worker.desk.pausing.pauses): scope -> {reason, by, since, source}."""
    return {p.scope: p.public() for p in pausing.pauses(rt)}


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


def _offset(req: Request) -> int:
    """The ``from`` query parameter: the rank of a queue page's first row (0 if absent or bad)."""
    raw = parse_qs(str(req.environ.get("QUERY_STRING", ""))).get("from", ["0"])[0]
    return int(raw) if raw.isdigit() and len(raw) < 10 else 0


def _pager(req: Request, start: int, size: int, total: int) -> str:
    """Previous / next links of a queue page (rank offsets only: no personal data in URLs)."""
    if total <= size and start == 0:
        return ""
    here = esc(f"{req.base}{req.path}")
    links = []
    if start > 0:
        links.append(f'<a href="{here}?from={max(0, start - size)}" rel="prev">Previous</a>')
    shown_to = min(total, start + size)
    links.append(f"<span>{start + 1 if total else 0} to {shown_to} of {total}</span>")
    if start + size < total:
        links.append(f'<a href="{here}?from={start + size}" rel="next">Next</a>')
    return '<nav class="pager">' + " ".join(links) + "</nav>"


def _last_answer(o: Order) -> str:
    f = o.fields
    parts = [f.get("last_gateway", ""), f.get("gateway_status", "") and f"status {f.get('gateway_status')}"]
    if f.get("last_report"):
        parts.append(f"via {f['last_report']}")
    return ", ".join(p for p in parts if p)


def _order_link(req: Request, pid: str) -> str:
    return f'<a href="{esc(req.base)}/order/{esc(quote(pid))}">{esc(pid)}</a>'
