"""The console in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The web process is the real one (``worker.web``'s one gunicorn launcher: the gateway's
callbacks on the public listener, the console under ``/console/`` on the admin
listener), beside a real Celery worker, the sandbox gateway and a private Redis.
Each browser signs in through the console's own form (and the TOTP step for
approvers), as a person would; no credential ever goes in a URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
import redis

from tests.helpers import Stack
from worker.console.auth import hash_password
from worker.console.signin import TotpSecrets
from worker.harness.processes import WebProcess
from worker.payout import Payout
from worker.sandbox.process import SandboxProcess
from worker.states import State

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "correct horse battery"
SECRET = "browser-test-console-secret-0123456789"
NUMBER = "98765432101234"
NAME = "Siti Rahayu"
USERS = {
    "vera": ["viewer"],
    "otto": ["operator"],
    "alice": ["approver"],
    "bob": ["approver"],
}
#: docs/console/*.png are written here when set (``CONSOLE_SCREENSHOTS=docs/console``)
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


def _have_browser() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


@pytest.fixture(scope="session", autouse=True)
def _browser_installed() -> None:
    if not _have_browser():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser layer: .ci/run installs chromium and chromium-driver")
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")


@dataclass
class Desk:
    """The running system: the stack (worker + runtime), the web process, the gateway."""

    stack: Stack
    web: WebProcess
    gateway: SandboxProcess
    tmp: Path
    browsers: list[Browser] = field(default_factory=list)
    #: the approvers' authenticators (enrolled by make_desk), and the 30 s steps used
    totp: dict[str, Any] = field(default_factory=dict)
    used: set[tuple[str, int]] = field(default_factory=set)

    def code(self, user: str) -> str:
        """A TOTP code of ``user`` whose step was not used yet (the server takes each once;
        it accepts one step of drift, so the next step's code also works)."""
        totp = self.totp[user]
        now = time.time()
        for at in (now, now + 30, now - 30):
            step = int(totp.timecode(at))
            if (user, step) not in self.used:
                self.used.add((user, step))
                return str(totp.at(at))
        raise AssertionError("three sign-ins of one approver within a minute: no fresh code left")

    @property
    def redis(self) -> redis.Redis:
        return self.stack.redis

    @property
    def console(self) -> str:
        return self.web.admin_url + "/console"

    def browser(self, user: str, *, signed_in: bool = True) -> Browser:
        b = Browser(self, user, self.tmp / f"chrome-{user}-{len(self.browsers)}", signed_in=signed_in)
        self.browsers.append(b)
        return b

    def seed(self, pid: str, state: State, *, amount: int = 5_000_000, **fields: str) -> str:
        """One order stored as the worker would leave it, moved to ``state`` without sending it."""
        p = Payout(
            payout_cl_id=pid, amount=amount, bank_name="BCA", name=NAME, number=NUMBER, notify_url=None
        )
        rt = self.stack.rt
        rt.store.create(p, due_at=time.time() + 3600)
        if fields:
            rt.store.transition(pid, None, sources={State.RECEIVED}, reason="seed", fields=fields)
        if state is not State.RECEIVED:
            rt.store.transition(pid, state, reason="gateway does not know the order after the grace period")
        return pid


class Browser:
    """One headless Chromium signed in as ``user`` (its own profile: a separate person)."""

    def __init__(self, desk: Desk, user: str, profile: Path, *, signed_in: bool = True) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.desk, self.user = desk, user
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            # two tabs of one user stay live side by side (no background freezing)
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--disable-background-timer-throttling",
            "--window-size=1360,900",
            f"--user-data-dir={profile}",
        ):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        # an explicit driver path: Selenium Manager never looks for (or downloads) anything
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(30)
        self.urls: list[str] = []
        self.responses: list[tuple[str, int]] = []
        self.console_log: list[dict[str, Any]] = []
        if signed_in:
            self._sign_in()

    def fill(self, **fields: str) -> None:
        """Type into the page's inputs by name, then press the button of the page's one form
        (the sign-in pages: the header has no form before sign-in)."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.expected_conditions import staleness_of
        from selenium.webdriver.support.wait import WebDriverWait

        el = None
        for name, value in fields.items():
            el = self.driver.find_element(By.NAME, name)
            el.clear()
            el.send_keys(value)
        assert el is not None
        button = self.driver.find_element(By.CSS_SELECTOR, "main form button")  # the page's one form
        button.click()
        # the answer page has loaded: the pressed button is gone. While the page navigates,
        # chromedriver may answer a look at the old element with an inspector error ("cannot
        # find context") instead of "stale": that is "not yet", looked at again
        WebDriverWait(self.driver, 15, ignored_exceptions=(WebDriverException,)).until(staleness_of(button))

    def sign_in(self, password: str = PASSWORD, code: str | None = None) -> None:
        """The sign-in form (and the TOTP step for approvers), as a person would."""
        self.driver.get(self.desk.console + "/login")
        self.fill(user=self.user, password=password)
        if self.driver.current_url.endswith("/login/totp"):
            self.fill(code=code if code is not None else self.desk.code(self.user))

    def _sign_in(self) -> None:
        self.sign_in()
        assert "/login" not in self.driver.current_url, self.text()

    def new_tab(self) -> str:
        """Open a second tab of the same user (the same cookie jar); returns its handle."""
        self.driver.switch_to.new_window("tab")
        return str(self.driver.current_window_handle)

    def open(self, path: str) -> None:
        self.driver.get(self.desk.console + path)
        self.collect()

    def collect(self) -> None:
        """Every request URL the browser sent and every console message, so far."""
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                self.urls.append(msg["params"]["request"]["url"])
            elif msg.get("method") == "Network.responseReceived":
                r = msg["params"]["response"]
                self.responses.append((r["url"], int(r["status"])))
        self.console_log.extend(self.driver.get_log("browser"))

    def csp_violations(self) -> list[str]:
        self.collect()
        return [e["message"] for e in self.console_log if "Content Security Policy" in e.get("message", "")]

    def forms(self, action: str = "/do/") -> list[Any]:
        from selenium.webdriver.common.by import By

        return [
            f
            for f in self.driver.find_elements(By.CSS_SELECTOR, "form")
            if action in (f.get_attribute("action") or "")
        ]

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.quit()


def _users_file(tmp: Path) -> Path:
    digest = hash_password(PASSWORD)
    path = tmp / "console-users.json"
    path.write_text(json.dumps({n: {"password": digest, "roles": r} for n, r in USERS.items()}))
    return path


@pytest.fixture
def make_desk(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str, sandbox: SandboxProcess
) -> Iterator[Callable[..., Desk]]:
    """``make_desk(**env)``: the worker, the real web process with the console, the sandbox."""
    desks: list[Desk] = []
    assert sandbox.admin is not None
    sandbox.admin.reset()

    def make(**env: Any) -> Desk:
        users = _users_file(tmp_path)
        stack = Stack(
            tmp_path, redis_url, sandbox.url, CONSOLE_USERS_FILE=str(users), CONSOLE_SECRET=SECRET, **env
        )
        logs = tmp_path / f"web{len(desks)}"
        logs.mkdir()
        web = WebProcess(stack.env, port=stack.callback_port, log_dir=logs).start()
        desk = Desk(stack, web, sandbox, tmp_path)
        for user, roles in USERS.items():
            if set(roles) & {"approver", "admin"}:
                uri = TotpSecrets(stack.redis, SECRET.encode()).enrol(user, replace=True)
                desk.totp[user] = pyotp.parse_uri(uri)
        desks.append(desk)
        stack.start_worker()
        return desk

    yield make
    for d in desks:
        for b in d.browsers:
            b.quit()
        d.web.stop()
        d.stack.stop()
    sandbox.admin.reset()
