"""Admin endpoints of the sandbox gateway, under ``/_sandbox/`` (no auth: it is a sandbox).

==========================================  ==============================================
``GET  /_sandbox/health``                   ``{"status": "ok", "orders": N, ...}``
``GET  /_sandbox/ledger``                   every order created, create requests per id,
                                            totals
``GET  /_sandbox/orders/{payout_cl_id}``    one ledger entry (404 when unknown)
``POST /_sandbox/orders/{id}/status``       body ``{"status": 3, "error_msg": "..."}``:
                                            force a status; a final one sends the callback
``GET  /_sandbox/faults``                   ``{"rules": [... with "id" and "fired"]}``
``PUT  /_sandbox/faults``                   replace the rules (a list, or ``{"rules": [...]}``)
``POST /_sandbox/faults``                   append one rule (an object) or several (a list)
``DELETE /_sandbox/faults``                 remove every rule
``POST /_sandbox/reset``                    forget orders, ledger, stats and faults
                                            (``{"keep_faults": true}`` keeps the rules)
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

from sandbox.faults import FaultRuleError

if TYPE_CHECKING:
    from sandbox.server import Sandbox


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(
        payload, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False)
    )


def _bad(message: str, status: int = 400) -> web.Response:
    return _json({"error": message}, status=status)


async def _body(request: web.Request) -> Any:
    raw = await request.text()
    if not raw.strip():
        return None
    return json.loads(raw)


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    """Register the ``/_sandbox/`` routes on ``app``."""

    async def health(_: web.Request) -> web.Response:
        return _json(
            {
                "status": "ok",
                "orders": len(sandbox.book.orders),
                "platform_id": sandbox.config.platform_id,
                "sign_types": list(sandbox.config.sign_types),
            }
        )

    async def ledger(_: web.Request) -> web.Response:
        return _json(sandbox.book.ledger())

    async def order(request: web.Request) -> web.Response:
        found = sandbox.book.orders.get(request.match_info["payout_cl_id"])
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
        found = sandbox.force_status(request.match_info["payout_cl_id"], status, error_msg)
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
        keep = bool(body.get("keep_faults")) if isinstance(body, dict) else False
        sandbox.reset(keep_faults=keep)
        return _json({"status": "reset", "rules": sandbox.faults.describe()})

    async def stats(_: web.Request) -> web.Response:
        return _json(sandbox.stats())

    async def config(_: web.Request) -> web.Response:
        return _json(sandbox.config.to_dict())

    app.router.add_get("/_sandbox/health", health)
    app.router.add_get("/_sandbox/ledger", ledger)
    app.router.add_get("/_sandbox/orders/{payout_cl_id}", order)
    app.router.add_post("/_sandbox/orders/{payout_cl_id}/status", force_status)
    app.router.add_get("/_sandbox/faults", get_faults)
    app.router.add_put("/_sandbox/faults", change_faults)
    app.router.add_post("/_sandbox/faults", change_faults)
    app.router.add_delete("/_sandbox/faults", clear_faults)
    app.router.add_post("/_sandbox/reset", reset)
    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_get("/_sandbox/config", config)
