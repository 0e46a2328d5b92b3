"""HTML building blocks: everything passes through :func:`esc`; no inline script or style."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from typing import Any


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def masked_account(number: str) -> str:
    """``••••1234``: only the last four digits, never more."""
    return "••••" + number[-4:] if len(number) > 4 else "••••"


def masked_name(name: str) -> str:
    return (name[:1] + "…") if name else ""


def idr(amount: int) -> str:
    """Minor units (IDR x 100) as the desk reads them: ``IDR 12.500,00``."""
    whole, cents = divmod(amount, 100)
    return "IDR " + f"{whole:,}".replace(",", ".") + f",{cents:02d}"


def when(ts: float | str | None) -> str:
    if ts in (None, ""):
        return ""
    t = float(ts)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(max(0.0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    """``rows`` hold already-escaped HTML cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">nothing here</td></tr>'
    return f'<table class="{esc(cls)}">{thead}<tbody>{body}</tbody></table>'


def hidden(**fields: Any) -> str:
    return "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())


def page(
    *,
    base: str,
    title: str,
    body: str,
    actor: str = "",
    roles: str = "",
    banners: Sequence[tuple[str, str]] = (),
    active: str = "",
    signout: str = "",
) -> str:
    """The layout. ``title`` must carry no personal data (it lands in history and tabs)."""
    nav = "".join(
        f'<a href="{esc(base)}{href}"{" class=active" if key == active else ""}>{esc(label)}</a>'
        for key, href, label in (
            ("overview", "/", "Overview"),
            ("review", "/review", "Review queue"),
            ("approvals", "/approvals", "Approvals"),
            ("pause", "/pause", "Pause"),
            ("search", "/search", "Search"),
        )
    )
    if not actor:
        nav = ""  # nothing of the console is shown before sign-in
    who = f'<span class="who">{esc(actor)} <small>({esc(roles)})</small>{signout}</span>' if actor else ""
    ban = "".join(f'<div class="banner {esc(kind)}" role="status">{text}</div>' for kind, text in banners)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · Payout desk</title>"
        f'<link rel="stylesheet" href="{esc(base)}/static/console.css">'
        f'<link rel="icon" href="{esc(base)}/static/favicon.svg">'
        f"</head><body><header><strong>Payout desk</strong><nav>{nav}</nav>{who}</header>"
        f"{ban}<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )
