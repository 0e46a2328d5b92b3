"""Admin endpoints of the sandbox gateway, under ``/_sandbox/`` (no auth: it is a sandbox).

==========================================  ==============================================
``GET  /_sandbox/health``                   ``{"status": "ok", "orders": N, ...}``
``GET  /_sandbox/ledger``                   every payout created, payouts and create
                                            requests per id, totals
``GET  /_sandbox/ledger/{payout_cl_id}``    ``{"payout_cl_id", "payouts_created": n,
                                            "payout_ids": [...], "create_requests":
                                            {"before", "after", "total"}}`` (zeros if unknown)
``GET  /_sandbox/orders/{payout_cl_id}``    the first payout's ledger entry (404 when unknown)
``POST /_sandbox/orders/{id}/status``       body ``{"status": 3, "error_msg": "...",
                                            "payout_id": optional}``: force a status (every
                                            payout of the id, or the one named); a final one
                                            sends the callback
``GET  /_sandbox/settings``                 the runtime settings (``RUNTIME_SETTINGS``)
``PATCH /_sandbox/settings``                change some: ``{"duplicate_check": false, ...}``
``GET  /_sandbox/balance``                  balance, frozen, unlimited, insufficient window
``PUT  /_sandbox/balance``                  ``{"balance_minor": 123 | null}`` (null: unlimited)
``POST /_sandbox/balance/insufficient``     ``{"seconds": 5}`` or ``{}`` (until cleared):
                                            every create answers 0018
``DELETE /_sandbox/balance/insufficient``   end the window
``GET  /_sandbox/tls``                      ``{"enabled", "url", "port", "cert_path",
                                            "fingerprint_sha256"}``
``GET  /_sandbox/faults``                   ``{"rules": [... with "id" and "fired"]}``
``PUT  /_sandbox/faults``                   replace the rules (a list, or ``{"rules": [...]}``)
``POST /_sandbox/faults``                   append one rule (an object) or several (a list)
``DELETE /_sandbox/faults``                 remove every rule
``POST /_sandbox/reset``                    forget orders, ledger, stats and faults; back
                                            to the start settings and balance
                                            (``{"keep_faults": true}`` keeps the rules,
                                            ``{"keep_settings": true}`` the settings)
``GET  /_sandbox/stats``                    requests and answers per endpoint, faults fired
                                            per kind, callback counts, orders by status
``GET  /_sandbox/config``                   the running configuration (no key, no token)
==========================================  ==============================================

A malformed admin request gets HTTP 400 ``{"error": "..."}`` naming the problem.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .faults import FaultRuleError

if TYPE_CHECKING:
    from .server import Sandbox


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _bad(message: str, status: int = 400) -> web.Response:
    return _json({"error": message}, status=status)


async def _body(request: web.Request) -> Any:
    raw = await request.text()
    if not raw.strip():
        return None
    return json.loads(raw)


def _non_negative_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


def add_routes(app: web.Application, sandbox: Sandbox) -> None:  # noqa: C901 — one small handler per admin route, nested here to share the sandbox
    """Register the ``/_sandbox/`` routes on ``app``."""

    async def health(_: web.Request) -> web.Response:
        return _json(
            {
                "status": "ok",
                "orders": len(sandbox.book),
                "platform_id": sandbox.config.platform_id,
                "sign_types": list(sandbox.config.sign_types),
                "sandbox": True,
                "tls": sandbox.tls_info,
            }
        )

    async def ledger(_: web.Request) -> web.Response:
        return _json(sandbox.book.ledger())

    async def ledger_id(request: web.Request) -> web.Response:
        return _json(sandbox.book.id_counts(request.match_info["payout_cl_id"]))

    async def order(request: web.Request) -> web.Response:
        found = sandbox.book.first(request.match_info["payout_cl_id"])
        if found is None:
            return _bad("no such order", status=404)
        return _json(found.ledger_entry())

    async def force_status(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
        except ValueError:
            return _bad("body must be JSON")
        if not isinstance(body, dict):
            return _bad('body must be {"status": <0-5>, "error_msg": optional}')
        status = body.get("status")
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 5:
            return _bad("status must be an integer in [0, 5]")
        error_msg = body.get("error_msg")
        if error_msg is not None and not isinstance(error_msg, str):
            return _bad("error_msg must be a string")
        payout_id = body.get("payout_id")
        if payout_id is not None and not isinstance(payout_id, str):
            return _bad("payout_id must be a string")
        found = sandbox.bank.force_status(request.match_info["payout_cl_id"], status, error_msg, payout_id)
        if found is None:
            return _bad("no such order", status=404)
        return _json(found.ledger_entry())

    async def get_faults(_: web.Request) -> web.Response:
        return _json({"rules": sandbox.faults.describe()})

    async def change_faults(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
        except ValueError:
            return _bad("body must be JSON")
        if request.method == "PUT":
            rules = body.get("rules") if isinstance(body, dict) else body
            if rules is None:
                rules = []
        else:
            rules = [body] if isinstance(body, dict) else body
        if not isinstance(rules, list):
            return _bad("fault rules must be a JSON list (or one object to POST)")
        try:
            if request.method == "PUT":
                sandbox.faults.replace(rules)
            else:
                sandbox.faults.extend(rules)
        except FaultRuleError as exc:
            return _bad(str(exc))
        return _json({"rules": sandbox.faults.describe()})

    async def clear_faults(_: web.Request) -> web.Response:
        sandbox.faults.replace([])
        return _json({"rules": []})

    async def reset(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
        except ValueError:
            return _bad("body must be JSON")
        options = body if isinstance(body, dict) else {}
        sandbox.reset(
            keep_faults=bool(options.get("keep_faults")),
            keep_settings=bool(options.get("keep_settings")),
        )
        return _json({"status": "reset", "rules": sandbox.faults.describe()})

    async def stats(_: web.Request) -> web.Response:
        return _json(sandbox.stats())

    async def config(_: web.Request) -> web.Response:
        return _json(sandbox.config.to_dict())

    async def get_settings(_: web.Request) -> web.Response:
        return _json(sandbox.config.runtime_settings())

    async def change_settings(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
        except ValueError:
            return _bad("body must be JSON")
        if not isinstance(body, dict):
            return _bad('body must be a JSON object, e.g. {"duplicate_check": false}')
        try:
            sandbox.apply_settings(body)
        except ValueError as exc:
            return _bad(str(exc))
        return _json(sandbox.config.runtime_settings())

    async def get_balance(_: web.Request) -> web.Response:
        return _json(sandbox.bank.balance_view())

    async def set_balance(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
        except ValueError:
            return _bad("body must be JSON")
        if not isinstance(body, dict) or "balance_minor" not in body:
            return _bad('body must be {"balance_minor": <integer >= 0> | null}')
        value = body["balance_minor"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            return _bad("balance_minor must be an integer >= 0 or null (unlimited)")
        sandbox.bank.set_balance(value)
        return _json(sandbox.bank.balance_view())

    async def start_insufficient(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
        except ValueError:
            return _bad("body must be JSON")
        options = body if isinstance(body, dict) else {}
        seconds = options.get("seconds")
        if seconds is not None and not _non_negative_number(seconds):
            return _bad("seconds must be a number >= 0, or absent (until cleared)")
        sandbox.bank.insufficient_window(None if seconds is None else float(seconds))
        return _json(sandbox.bank.balance_view())

    async def end_insufficient(_: web.Request) -> web.Response:
        sandbox.bank.insufficient_window(0.0)
        return _json(sandbox.bank.balance_view())

    async def tls(_: web.Request) -> web.Response:
        return _json(sandbox.tls_info)

    app.router.add_get("/_sandbox/health", health)
    app.router.add_get("/_sandbox/ledger", ledger)
    app.router.add_get("/_sandbox/ledger/{payout_cl_id}", ledger_id)
    app.router.add_get("/_sandbox/orders/{payout_cl_id}", order)
    app.router.add_post("/_sandbox/orders/{payout_cl_id}/status", force_status)
    app.router.add_get("/_sandbox/faults", get_faults)
    app.router.add_put("/_sandbox/faults", change_faults)
    app.router.add_post("/_sandbox/faults", change_faults)
    app.router.add_delete("/_sandbox/faults", clear_faults)
    app.router.add_post("/_sandbox/reset", reset)
    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_get("/_sandbox/config", config)
    app.router.add_get("/_sandbox/settings", get_settings)
    app.router.add_patch("/_sandbox/settings", change_settings)
    app.router.add_get("/_sandbox/balance", get_balance)
    app.router.add_put("/_sandbox/balance", set_balance)
    app.router.add_post("/_sandbox/balance/insufficient", start_insufficient)
    app.router.add_delete("/_sandbox/balance/insufficient", end_insufficient)
    app.router.add_get("/_sandbox/tls", tls)
