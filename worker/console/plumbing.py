"""The console's WSGI plumbing: the request, the answer, forms, static files, headers.

Nothing here knows about orders or roles: :mod:`worker.console.app` routes and guards,
:mod:`worker.console.actions` holds the table of actions, :mod:`worker.console.login`
signs people in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs

from worker.callbacks import BODY_DEADLINE_S, BodyError, read_body_within
from worker.console.auth import Actor
from worker.console.security import HEADERS

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Answer = tuple[int, list[tuple[str, str]], str]

MAX_FORM: Final = 64 * 1024
#: form fields at most (a bulk selection of 500 ids and a few more)
MAX_FIELDS: Final = 1020
STATIC: Final = {"console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
PHRASES: Final = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Reply(Exception):
    """Answer now with this status and message (an error page), and these headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        result: str = "invalid",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.result = result
        self.headers = headers or []


@dataclass
class Request:
    environ: dict[str, Any]
    method: str
    path: str
    base: str
    actor: Actor | None
    request_id: str
    form: dict[str, list[str]] = field(default_factory=dict)
    #: the session cookie's value ("" = none; worker.console.login)
    sid: str = ""

    def one(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    @property
    def remote(self) -> str:
        return str(self.environ.get("REMOTE_ADDR", ""))[:45]


def read_form(environ: Mapping[str, Any]) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body, at most :data:`MAX_FORM` bytes."""
    ctype = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0 or length > MAX_FORM:
        raise Reply(413, "the form is too large")
    try:
        # the same per-request body deadline as the callbacks (a slow client: 408)
        body = read_body_within(dict(environ), BODY_DEADLINE_S, MAX_FORM) if length else b""
    except BodyError as exc:
        raise Reply(int(exc.status.split()[0]), str(exc)) from None
    if ctype != "application/x-www-form-urlencoded":
        raise Reply(400, "forms are application/x-www-form-urlencoded")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise Reply(400, "the form could not be read") from None


def send(
    start: StartResponse, status: int, headers: list[tuple[str, str]], body: str, rid: str
) -> list[bytes]:
    """An HTML answer with the console's security headers."""
    data = body.encode()
    out = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(data))),
        ("X-Request-Id", rid),
        *HEADERS,
        *headers,
    ]
    start(f"{status} {PHRASES.get(status, 'Error')}", out)
    return [data]


def static(name: str, start: StartResponse, rid: str) -> list[bytes]:
    """``/static/<name>``: the stylesheet and the icon, from the package."""
    if name not in STATIC:
        start("404 Not Found", [("Content-Type", "text/plain"), *HEADERS])
        return [b"not found"]
    data = resources.files("worker.console").joinpath(f"static/{name}").read_bytes()
    headers = [("Content-Type", STATIC[name]), ("Content-Length", str(len(data))), ("X-Request-Id", rid)]
    start("200 OK", [*headers, *HEADERS])
    return [data]


def redirect(req: Request, target: str, *headers: tuple[str, str]) -> Answer:
    """303 to ``target`` under the console's base."""
    return 303, [("Location", f"{req.base}{target}"), *headers], ""
