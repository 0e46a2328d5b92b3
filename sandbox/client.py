"""``SandboxAdmin``: a small ``requests`` client of the ``/_sandbox/`` admin endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests


class SandboxAdminError(RuntimeError):
    """The admin endpoint refused a request (the message carries its reason)."""


class SandboxAdmin:
    """Drive a running sandbox gateway: ledger, faults, forced statuses, stats."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.trust_env = False  # never route loopback calls through a proxy

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.session.request(
            method,
            f"{self.base_url}/_sandbox/{path}",
            json=body,
            timeout=self.timeout_s,
        )
        if response.status_code >= 400:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text
            raise SandboxAdminError(f"{method} /_sandbox/{path}: {response.status_code} {reason}")
        return response.json()

    # ------------------------------------------------------------- reading

    def health(self) -> dict[str, Any]:
        return self._call("GET", "health")  # type: ignore[no-any-return]

    def ledger(self) -> dict[str, Any]:
        """``{"orders": [...], "create_requests": {id: {before, after, total}}, "totals": {}}``."""
        return self._call("GET", "ledger")  # type: ignore[no-any-return]

    def orders(self) -> dict[str, dict[str, Any]]:
        """Ledger orders by ``payout_cl_id``."""
        return {o["payout_cl_id"]: o for o in self.ledger()["orders"]}

    def order(self, payout_cl_id: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"orders/{payout_cl_id}")  # type: ignore[no-any-return]
        except SandboxAdminError as exc:
            if " 404 " in str(exc):
                return None
            raise

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")  # type: ignore[no-any-return]

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")  # type: ignore[no-any-return]

    def faults(self) -> list[dict[str, Any]]:
        """The active rules, each with its ``id`` and ``fired`` count."""
        return self._call("GET", "faults")["rules"]  # type: ignore[no-any-return]

    # ------------------------------------------------------------- changing

    def set_faults(self, rules: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Replace every rule."""
        return self._call("PUT", "faults", list(rules))["rules"]  # type: ignore[no-any-return]

    def add_fault(self, rule: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append one rule (or several)."""
        body = dict(rule) if isinstance(rule, Mapping) else list(rule)
        return self._call("POST", "faults", body)["rules"]  # type: ignore[no-any-return]

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def reset(self, keep_faults: bool = False) -> None:
        """Forget orders, ledger, stats and (unless ``keep_faults``) the fault rules."""
        self._call("POST", "reset", {"keep_faults": keep_faults})

    def force_status(self, payout_cl_id: str, status: int, error_msg: str | None = None) -> dict[str, Any]:
        """Set an order's status now; a final status sends its callback."""
        body: dict[str, Any] = {"status": status}
        if error_msg is not None:
            body["error_msg"] = error_msg
        return self._call("POST", f"orders/{payout_cl_id}/status", body)  # type: ignore[no-any-return]

    # ------------------------------------------------------------- waiting

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Poll ``/_sandbox/health`` until it answers; ``TimeoutError`` at the deadline."""
        self.wait_until(lambda: self.health().get("status") == "ok", timeout_s, "sandbox ready")

    def wait_order_status(
        self, payout_cl_id: str, statuses: Iterable[int], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Poll until the order exists with one of ``statuses``; return its ledger entry."""
        wanted = set(statuses)
        found: dict[str, Any] = {}

        def reached() -> bool:
            entry = self.order(payout_cl_id)
            if entry is not None and entry["status"] in wanted:
                found.update(entry)
                return True
            return False

        self.wait_until(reached, timeout_s, f"{payout_cl_id} in status {sorted(wanted)}")
        return found

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while True:
            try:
                if predicate():
                    return
            except (requests.RequestException, ValueError) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}") from last_error
            time.sleep(0.02)
