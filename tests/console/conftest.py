"""The console over WSGI: users of every role, a runtime on the test Redis, a tiny client."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest

from worker.console import ConsoleConfig, make_console
from worker.console.auth import BasicAuth, User, hash_password
from worker.runtime import Runtime

PASSWORD = "correct horse battery"
SECRET = b"console-test-secret-0123456789"
ORIGIN = "http://desk.test"
# one hash for every user keeps the fixture fast (scrypt is slow on purpose)
_HASH = hash_password(PASSWORD)
USERS = {
    "vera": ("viewer",),
    "otto": ("operator",),
    "olga": ("operator",),
    "alice": ("approver",),
    "bob": ("approver",),
    "ada": ("admin",),
}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


class Client:
    """Calls the WSGI app in-process, like a browser on ``ORIGIN`` would."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        #: the browser's cookie jar (name -> value), fed by Set-Cookie
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        password: str = PASSWORD,
        form: dict[str, Any] | list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        same_origin: bool = True,
        query: str = "",
        remote: str = "192.0.2.10",
    ) -> Response:
        data = urlencode(form or {}, doseq=True).encode()
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "/console",
            "HTTP_HOST": "desk.test",
            "QUERY_STRING": query,
            "REMOTE_ADDR": remote,
            "wsgi.input": io.BytesIO(data),
            "CONTENT_LENGTH": str(len(data)),
        }
        if method == "POST":
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
            if same_origin:
                environ["HTTP_ORIGIN"] = ORIGIN
                environ["HTTP_SEC_FETCH_SITE"] = "same-origin"
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            environ["HTTP_AUTHORIZATION"] = f"Basic {token}"
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for k, v in (headers or {}).items():
            environ["HTTP_" + k.upper().replace("-", "_")] = v
        setup_testing_defaults(environ)
        got: dict[str, Any] = {}

        def start(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
            got["status"], got["headers"] = status, hdrs

        body = b"".join(self.app(environ, start))
        hdrs = dict(got["headers"])
        cookie = hdrs.get("Set-Cookie")
        if cookie:
            name, _, value = cookie.split(";")[0].partition("=")
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return Response(int(got["status"].split()[0]), hdrs, body.decode())

    @staticmethod
    def token(user: str) -> str:
        """A valid CSRF token for ``user``."""
        from worker.console.security import csrf_token

        return csrf_token(SECRET, user)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Response:
        return self.request("POST", path, **kw)


def users() -> dict[str, User]:
    return {n: User(n, _HASH, frozenset(r)) for n, r in USERS.items()}


@pytest.fixture
def make_client(runtime: Runtime) -> Callable[..., Client]:
    def make(rt: Runtime | None = None, **config: Any) -> Client:
        config.setdefault("identity", BasicAuth(users()))
        config.setdefault("secret", SECRET)
        config.setdefault("basic_challenge", True)
        return Client(make_console(rt or runtime, ConsoleConfig(**config)))

    return make


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


def users_file(tmp: Path) -> Path:
    path = tmp / "console-users.json"
    path.write_text(json.dumps({n: {"password": _HASH, "roles": list(r)} for n, r in USERS.items()}))
    return path
