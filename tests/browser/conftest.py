"""The console in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The web process is the real one (``worker.web``'s one gunicorn launcher: the gateway's
callbacks on the public listener, the console under ``/console/`` on the admin
listener), beside a real Celery worker, the sandbox gateway and a private Redis.
Credentials go in an ``Authorization`` header set through the DevTools protocol, never
in a URL.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from sandbox.process import SandboxProcess
from tests.helpers import Stack
from worker.console.auth import hash_password
from worker.harness.processes import WebProcess
from worker.payout import Payout
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

    @property
    def redis(self) -> redis.Redis:
        return self.stack.redis

    @property
    def console(self) -> str:
        return self.web.admin_url + "/console"

    def browser(self, user: str) -> Browser:
        b = Browser(self, user, self.tmp / f"chrome-{user}-{len(self.browsers)}")
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

    def __init__(self, desk: Desk, user: str, profile: Path) -> None:
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
        self._sign_in()
        self.urls: list[str] = []
        self.responses: list[tuple[str, int]] = []
        self.console_log: list[dict[str, Any]] = []

    def _sign_in(self) -> None:
        """The Authorization header for every request of the current tab (DevTools is per tab)."""
        token = base64.b64encode(f"{self.user}:{PASSWORD}".encode()).decode()
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )

    def new_tab(self) -> str:
        """Open a second tab of the same user; returns its window handle (now current)."""
        self.driver.switch_to.new_window("tab")
        self._sign_in()
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
