"""Bulk loading of order records straight into the store's keys (bench only).

Loading a million orders through ``OrderStore.create`` and two transitions would take
minutes; ``bulk_load.lua`` writes the same layout (order hash, history list, due-index
entry, counts) 20,000 orders per call, about 10 s per million on the bench machine. The
template is copied from an order the real worker drove to ``accepted`` when one is at
hand, so field names, value sizes and history entries are the real ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import redis

from worker import keys
from worker.pii import KeyRing, mask_name, mask_number
from worker.store import OrderStore

#: orders per Lua call: ~0.2 s of Redis time each, so the server stays responsive
LOAD_CHUNK = 20_000
#: per-order fields the loader writes itself (not taken from the template)
_OWN_FIELDS = ("state", "payout_cl_id", "payout_id")


@dataclass(frozen=True)
class OrderTemplate:
    """What every bulk-loaded order looks like, apart from its id and payout_id."""

    fields: Mapping[str, str]
    history: list[str] = field(default_factory=list)
    payout_id_prefix: str = "SBXPOT"


def synthetic_template(now: float | None = None) -> OrderTemplate:
    """An ``accepted`` order as ``store.create`` and ``submit_order`` write it."""
    now = time.time() if now is None else now
    # sealed as store.create seals them (worker/pii.py): the real sizes, under a throwaway key
    ring = KeyRing.parse(KeyRing.generate("k1"))
    fields = {
        "fp": ring.fingerprint(("template",)),
        "created_at": repr(now),
        "updated_at": repr(now + 0.05),
        "amount": "5000000",
        "bank_name": "BCA",
        "name": ring.seal("template", "name", "Siti Rahma"),
        "number": ring.seal("template", "number", "8800112233445566"),
        "name_mask": mask_name("Siti Rahma"),
        "number_mask": mask_number("8800112233445566"),
        "notify_url": "https://merchant.example.com/payouts/notify",
        "submitted_at": repr(now + 0.01),
        "sign_type": "HMAC-SHA256",
        "submit_attempts": "1",
        "reason": "0000 0000",
        "last_gateway": "0000",
        "answered_at": repr(now + 0.05),
    }
    steps = [
        (0.0, "", "received", "enqueued"),
        (0.01, "received", "submitting", "claimed (attempt 1)"),
        (0.05, "submitting", "accepted", "0000 0000"),
    ]
    # compact, 14 significant digits: what cjson writes in create.lua / transition.lua
    history = [
        json.dumps({"at": float(f"{now + dt:.14g}"), "from": a, "to": b, "reason": r}, separators=(",", ":"))
        for dt, a, b, r in steps
    ]
    return OrderTemplate(fields, history)


def template_from_store(store: OrderStore, payout_cl_id: str) -> OrderTemplate | None:
    """The layout of a real stored order, or None when it is not there."""
    data = store.redis.hgetall(keys.order(payout_cl_id))
    if not data:
        return None
    history = [str(h) for h in store.redis.lrange(keys.history(payout_cl_id), 0, -1)]
    payout_id = str(data.get("payout_id", ""))
    prefix = payout_id.rstrip("0123456789") or "SBXPOT"
    fields = {str(k): str(v) for k, v in data.items() if k not in _OWN_FIELDS}
    return OrderTemplate(fields, history, prefix)


class BulkLoader:
    """Writes orders with :data:`OrderTemplate` layout through ``bulk_load.lua``."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        text = resources.files("worker.harness.bench").joinpath("bulk_load.lua").read_text("utf-8")
        self._load = client.register_script(text)

    def load(
        self,
        template: OrderTemplate,
        *,
        id_prefix: str,
        first: int,
        count: int,
        due_at: float,
        state: str = "accepted",
    ) -> int:
        """Write ``count`` orders ``id_prefix + %09d`` from ``first``; return the count."""
        pairs: list[str] = []
        for k, v in template.fields.items():
            pairs.extend((k, v))
        done = 0
        while done < count:
            n = min(LOAD_CHUNK, count - done)
            self._load(
                keys=[keys.DUE, keys.COUNTS],
                args=[
                    keys.order(""),
                    keys.history(""),
                    id_prefix,
                    first + done,
                    n,
                    repr(due_at),
                    state,
                    "\n".join(template.history),
                    template.payout_id_prefix,
                    *pairs,
                ],
            )
            done += n
        return done
