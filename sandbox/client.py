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

    def __init__(self, base_url: str, timeout_s: float = 5.0, verify: bool | str = True) -> None:
        """``verify``: for an ``https://`` (TLS listener) URL, the sandbox's ``cert_path``."""
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.trust_env = False  # never route loopback calls through a proxy
        self.session.verify = verify

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
        """Ledger orders by ``payout_cl_id`` (the first payout of each id; see
        :meth:`payouts_per_id` when the duplicate check is off)."""
        found: dict[str, dict[str, Any]] = {}
        for entry in self.ledger()["orders"]:
            found.setdefault(entry["payout_cl_id"], entry)
        return found

    def id_counts(self, payout_cl_id: str) -> dict[str, Any]:
        """``{"payout_cl_id", "payouts_created": n, "payout_ids": [...],
        "create_requests": {"before", "after", "total"}}`` (zeros for an unknown id)."""
        return self._call("GET", f"ledger/{payout_cl_id}")  # type: ignore[no-any-return]

    def payouts_created(self, payout_cl_id: str) -> int:
        """How many payouts the sandbox created for ``payout_cl_id`` (> 1 only with the
        duplicate check off)."""
        return int(self.id_counts(payout_cl_id)["payouts_created"])

    def create_requests(self, payout_cl_id: str) -> int:
        """How many create requests carried ``payout_cl_id`` (any answer, faults included)."""
        return int(self.id_counts(payout_cl_id)["create_requests"]["total"])

    def payouts_per_id(self) -> dict[str, int]:
        """``payout_cl_id`` -> number of payouts created for it."""
        return self.ledger()["payouts_per_id"]  # type: ignore[no-any-return]

    def settings(self) -> dict[str, Any]:
        """The runtime settings (``worker.sandbox.config.RUNTIME_SETTINGS``)."""
        return self._call("GET", "settings")  # type: ignore[no-any-return]

    def balance(self) -> dict[str, Any]:
        """``{"platform_id", "unlimited", "total_balance", "total_frozen_balance",
        "insufficient", "insufficient_until", "insufficient_remaining_s"}``."""
        return self._call("GET", "balance")  # type: ignore[no-any-return]

    def tls(self) -> dict[str, Any]:
        """``{"enabled": false}`` or ``{"enabled": true, "url", "port", "cert_path",
        "fingerprint_sha256"}``."""
        return self._call("GET", "tls")  # type: ignore[no-any-return]

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

    def reset(self, keep_faults: bool = False, keep_settings: bool = False) -> None:
        """Forget orders, ledger, stats and (unless ``keep_faults``) the fault rules; go back
        to the start settings and balance (unless ``keep_settings``)."""
        self._call("POST", "reset", {"keep_faults": keep_faults, "keep_settings": keep_settings})

    def update_settings(self, **changes: Any) -> dict[str, Any]:
        """Change runtime settings, e.g. ``update_settings(duplicate_check=False)``; all or
        nothing (:class:`SandboxAdminError` naming a bad one). Returns every setting."""
        return self._call("PATCH", "settings", changes)  # type: ignore[no-any-return]

    def set_duplicate_check(self, enabled: bool) -> dict[str, Any]:
        """Off: a create with a used ``payout_cl_id`` makes another payout (no 0014)."""
        return self.update_settings(duplicate_check=enabled)

    def set_record_signature(self, mode: str) -> dict[str, Any]:
        """``order`` | ``spec`` | ``spec_md5`` | ``unverifiable`` (list-query records)."""
        return self.update_settings(record_signature=mode)

    def set_list_filter(self, mode: str, order: str | None = None) -> dict[str, Any]:
        """``honour`` | ``ignore`` | ``ignore_all`` | ``prefix`` | ``contains``; ``order``:
        ``oldest_first`` | ``newest_first``."""
        changes: dict[str, Any] = {"list_filter": mode}
        if order is not None:
            changes["list_order"] = order
        return self.update_settings(**changes)

    def set_callbacks(self, enabled: bool) -> dict[str, Any]:
        """Off: no notification is sent at all (pending retries stop too)."""
        return self.update_settings(callbacks=enabled)

    def set_callback_signature(self, mode: str) -> dict[str, Any]:
        """``order`` | ``spec`` (no sign_type, as D-NTF) | ``spec_md5`` (notifications)."""
        return self.update_settings(callback_signature=mode)

    def set_callback_framing(self, framing: str) -> dict[str, Any]:
        """``content-length`` | ``chunked``."""
        return self.update_settings(callback_framing=framing)

    def set_balance(self, balance_minor: int | None) -> dict[str, Any]:
        """Set the available balance (``total_balance``); ``None`` is unlimited."""
        return self._call("PUT", "balance", {"balance_minor": balance_minor})  # type: ignore[no-any-return]

    def insufficient_balance(self, seconds: float | None = None) -> dict[str, Any]:
        """Every create answers 0018 for ``seconds`` (``None``: until cleared)."""
        body = {} if seconds is None else {"seconds": seconds}
        return self._call("POST", "balance/insufficient", body)  # type: ignore[no-any-return]

    def clear_insufficient_balance(self) -> dict[str, Any]:
        return self._call("DELETE", "balance/insufficient")  # type: ignore[no-any-return]

    def force_status(
        self,
        payout_cl_id: str,
        status: int,
        error_msg: str | None = None,
        payout_id: str | None = None,
    ) -> dict[str, Any]:
        """Set an order's status now; a final status sends its callback. Every payout of
        the id (several only with the duplicate check off), or the one ``payout_id`` names."""
        body: dict[str, Any] = {"status": status}
        if error_msg is not None:
            body["error_msg"] = error_msg
        if payout_id is not None:
            body["payout_id"] = payout_id
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
