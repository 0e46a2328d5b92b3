"""The sandbox serves thousands of concurrent slow requests from one asyncio process."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

CONCURRENT = 2000
LATENCY_S = 0.5


async def _fire(url: str, bodies: list[bytes]) -> list[tuple[int, str]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Content-Type": "application/json;charset=utf-8"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(body: bytes) -> tuple[int, str]:
            async with session.post(url, data=body, headers=headers) as response:
                return response.status, await response.text()

        return await asyncio.gather(*(one(body) for body in bodies))


@pytest.mark.timeout(60)
def test_2000_concurrent_slow_creates_are_all_answered(gw, make_body):
    """2000 creates held 0.5 s each at the same time: every one is answered 0000 and created."""
    # given
    gw.admin.set_faults([{"kind": "latency", "seconds": LATENCY_S, "endpoints": ["create"]}])
    bodies = [json.dumps(make_body(f"c-{i:05d}")).encode() for i in range(CONCURRENT)]
    # when
    started = time.monotonic()
    answers = asyncio.run(_fire(gw.url + "/gateway/api/v2/payouts", bodies))
    elapsed = time.monotonic() - started
    # then
    assert [status for status, _ in answers] == [200] * CONCURRENT
    assert all(json.loads(text)["error_code"] == "0000" for _, text in answers)
    stats = gw.admin.stats()
    assert stats["max_in_flight"] >= CONCURRENT * 0.9
    assert gw.admin.ledger()["totals"]["orders"] == CONCURRENT
    assert elapsed < 15, f"took {elapsed:.1f}s"
