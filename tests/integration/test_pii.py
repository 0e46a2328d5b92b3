"""Personal data at rest, end to end (D72, D73): real workers, the sandbox, the real Redis files.

* After a demo-sized run (enqueued by API and by name; some open, some final, some
  dead-lettered, one forgotten), every Redis value, the AOF and an RDB hold **no account
  number and no name** in plain text, apart from the by-name messages the web app itself
  wrote to the broker. A planted plain-text value proves each scan finds one.
* Rotation under load: orders sealed under the old key, sent by workers while
  ``payouts rekey`` re-seals them: nothing is sent twice, nothing is left unreadable.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import shutil
import string
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import TEST_PII_KEYS, Stack, base_env
from worker import keys
from worker.celery_app import make_producer_app
from worker.celeryconf import CREATE_TASK
from worker.desk import pausing
from worker.harness.processes import RedisServer, free_port, wait_for
from worker.pii import KeyRing
from worker.privacy import forget, key_usage, rekey_page
from worker.producer import enqueue_payout
from worker.runtime import Runtime, build_runtime, set_runtime
from worker.sandbox.process import SandboxProcess
from worker.settings import load_settings
from worker.states import FINAL, State

#: a Celery message's body inside a JSON text (a Redis value, the AOF, an RDB)
BODY_RE = re.compile(rb'"body":\s*"([A-Za-z0-9+/=]{8,})"')
APPROVAL_ABOVE = 9_000_000


@dataclass
class Scan:
    """What one medium (the values, the AOF, an RDB) showed."""

    #: needle label -> where it was found in plain text
    leaks: dict[str, set[str]] = field(default_factory=dict)
    #: the web app's own by-name messages seen (their plain text is allowed)
    web_app_messages: int = 0

    def add(self, label: str, where: str) -> None:
        self.leaks.setdefault(label, set()).add(where)


@dataclass
class Needles:
    """Every account number and name of the run (label = which order, or ``planted``)."""

    by_bytes: dict[bytes, str] = field(default_factory=dict)
    #: the kwargs the web app sent by name: its own messages may hold them
    web_app_kwargs: list[dict[str, Any]] = field(default_factory=list)

    def add(self, label: str, *values: str) -> None:
        for v in values:
            self.by_bytes[v.encode()] = label

    def found_in(self, blob: bytes) -> set[str]:
        return {label for needle, label in self.by_bytes.items() if needle in blob}

    def scan(self, blob: bytes, where: str, out: Scan) -> None:
        """Needles in ``blob`` as written, and in every base64 message body in it."""
        for label in self.found_in(blob):
            out.add(label, where)
        for m in BODY_RE.finditer(blob):
            try:
                body = base64.b64decode(m.group(1), validate=True)
            except (binascii.Error, ValueError):
                continue
            hits = self.found_in(body)
            if not hits:
                continue
            if self.is_web_app_message(body):
                out.web_app_messages += 1
            else:
                for label in hits:
                    out.add(label, f"{where} (message body)")

    def is_web_app_message(self, body: bytes) -> bool:
        try:
            _args, kwargs, _embed = json.loads(body)
        except (ValueError, TypeError):
            return False
        return kwargs in self.web_app_kwargs


def dump_values(client: redis.Redis) -> Iterable[tuple[str, bytes]]:
    """Every key's whole value as bytes (strings, hashes, lists, sets, sorted sets, streams)."""
    for k in client.scan_iter(count=1000):
        kind = client.type(k)
        if kind == b"string":
            parts: list[Any] = [client.get(k)]
        elif kind == b"hash":
            parts = [x for kv in client.hgetall(k).items() for x in kv]
        elif kind == b"list":
            parts = client.lrange(k, 0, -1)
        elif kind == b"set":
            parts = list(client.smembers(k))
        elif kind == b"zset":
            parts = [m for m, _ in client.zrange(k, 0, -1, withscores=True)]
        elif kind == b"stream":
            parts = [x for _id, entry in client.xrange(k) for kv in entry.items() for x in kv]
        else:
            parts = []
        yield (
            k.decode(errors="replace"),
            b"\0".join(p if isinstance(p, bytes) else str(p).encode() for p in parts),
        )


def scan_values(client: redis.Redis, needles: Needles) -> Scan:
    out = Scan()
    for key, blob in dump_values(client):
        needles.scan(blob, key, out)
    return out


def scan_files(paths: Iterable[Path], needles: Needles) -> Scan:
    out = Scan()
    for path in paths:
        needles.scan(path.read_bytes(), path.name, out)
    return out


def person(rng: random.Random) -> tuple[str, str]:
    """A name and an account number no other value can contain by chance (letters + 14 digits)."""
    name = "".join(rng.choice(string.ascii_lowercase) for _ in range(11)).capitalize() + " Q"
    return name, str(rng.randrange(10**13, 10**14))


def wait_rewrite(client: redis.Redis) -> None:
    def done() -> bool:
        info = client.info("persistence")
        return info["aof_rewrite_in_progress"] == 0 and info["aof_rewrite_scheduled"] == 0

    wait_for(done, 30, what="the AOF rewrite")


def dead_letter(fields: Mapping[str, Any], broker_rt: Runtime) -> None:
    """A by-name create whose store refuses every write (a replica of a missing master):
    retried, then parked on the dead-letter queue by the worker's own code path."""
    from worker.tasks.payouts import create

    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        client.replicaof("127.0.0.1", str(free_port()))
        client.close()
        read_only = build_runtime(load_settings(base_env(server.url)))
        set_runtime(read_only)
        try:
            assert create.apply(kwargs=dict(fields)).get() == "dead_letter"
        finally:
            set_runtime(broker_rt)
            read_only.close()
    finally:
        server.cleanup()


def test_no_account_number_or_name_in_redis_the_aof_or_an_rdb(
    make_stack: Any, gateway: SandboxProcess, redis_server: RedisServer | None
) -> None:
    """After a demo-sized run, the values, the AOF (every command since the run began) and an
    RDB (SAVE, read raw and loaded into a scratch server) hold 0 account numbers and 0 names in
    plain text, but the planted one and the web app's own by-name messages."""
    if redis_server is None:
        pytest.skip("PAYOUTS_TEST_REDIS_URL: the server's files are not ours to read")
    rng = random.Random(23)
    needles = Needles()
    # given: a fresh AOF (everything from here is in its incr file as text) and an RDB that
    # stores strings as they are (no LZF), so a raw scan could see plain text
    stack: Stack = make_stack(gateway.url, APPROVAL_ABOVE=str(APPROVAL_ABOVE), PII_RETENTION_DAYS="1")
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("rdbcompression", "no")
    try:
        admin.bgrewriteaof()
        wait_rewrite(admin)
        planted_name, planted_number = person(rng)
        admin.hset("payouts:test:planted", mapping={"name": planted_name, "number": planted_number})
        needles.add("planted", planted_name, planted_number)
        stack.start_callbacks()
        stack.start_worker()
        rt = stack.rt
        pausing.pause(rt, reason="hold BNI for the test", by="test", bank="BNI")
        final_ids: list[str] = []
        # when: 40 by API (30 to be paid, 5 held by a pause, 5 awaiting approval) ...
        for i in range(40):
            name, number = person(rng)
            pid = f"scan-api-{i:02d}"
            needles.add(pid, name, number)
            bank = "BNI" if 30 <= i < 35 else "BCA"
            amount = APPROVAL_ABOVE if i >= 35 else 5_000_000
            enqueue_payout(pid, amount, bank, name, number, runtime=rt)
            if i < 30:
                final_ids.append(pid)
        # ... 15 by name, as a web app without this package sends them (its own Celery app) ...
        web_app = make_producer_app(stack.settings)
        for i in range(15):
            name, number = person(rng)
            pid = f"scan-byname-{i:02d}"
            needles.add(pid, name, number)
            kwargs = {
                "payout_cl_id": pid,
                "amount": 4_000_000,
                "bank_name": "BRI",
                "name": name,
                "number": number,
            }
            needles.web_app_kwargs.append(kwargs)
            web_app.send_task(CREATE_TASK, kwargs=kwargs, kwargsrepr=repr({"payout_cl_id": pid}))
            final_ids.append(pid)
        # ... and 3 dead-lettered (the store refused every write)
        for i in range(3):
            name, number = person(rng)
            pid = f"scan-dead-{i}"
            needles.add(pid, name, number)
            dead_letter(
                {
                    "payout_cl_id": pid,
                    "amount": 3_000_000,
                    "bank_name": "BCA",
                    "name": name,
                    "number": number,
                },
                rt,
            )

        def settled() -> bool:
            return all(rt.store.state_of(p) in FINAL for p in final_ids)

        wait_for(settled, 60, what="the payouts to settle")
        forget(rt.redis, final_ids[0], reason="test: a data subject's request")
        # then: the run is what the test says it is
        states = {p: rt.store.state_of(p) for p in final_ids}
        assert set(states.values()) == {State.SUCCEEDED}
        assert rt.store.state_of("scan-api-30") is State.RECEIVED  # held by the pause: open
        assert rt.store.state_of("scan-api-39") is State.AWAITING_APPROVAL
        assert admin.llen("payouts.dead") == 3
        assert admin.zcard(keys.PII_ERASE) == len(final_ids) - 1  # queued for erasure
        # the values
        values = scan_values(admin, needles)
        assert values.leaks == {"planted": {"payouts:test:planted"}}, values.leaks
        # the AOF: every write of the run as text (the web app's LPUSHes of its messages too)
        aof = scan_files(sorted((redis_server.dir / "appendonlydir").glob("*.aof")), needles)
        assert set(aof.leaks) == {"planted"}, aof.leaks
        assert aof.web_app_messages >= 15  # found, and allowed: the by-name path's plain text
        # an RDB: raw (strings as stored), then loaded by a scratch server and scanned as values
        admin.save()
        rdb = redis_server.dir / "dump.rdb"
        raw = scan_files([rdb], needles)
        assert set(raw.leaks) == {"planted"}, raw.leaks
        scratch = RedisServer(appendonly=False)
        shutil.copy(rdb, scratch.dir / "dump.rdb")
        scratch.start()
        try:
            loaded = scan_values(redis.Redis.from_url(scratch.url), needles)
        finally:
            scratch.cleanup()
        assert loaded.leaks == {"planted": {"payouts:test:planted"}}, loaded.leaks
        # and the worker's logs: no number, no name, no key material
        logs = stack.logs().encode()
        assert needles.found_in(logs) == set()
        assert TEST_PII_KEYS.split(":", 1)[1].encode() not in logs
    finally:
        admin.config_set("rdbcompression", "yes")
        admin.delete("payouts:test:planted")
        admin.close()


def test_rotation_under_load_sends_nothing_twice_and_leaves_nothing_unreadable(
    make_stack: Any, gateway: SandboxProcess, redis_url: str
) -> None:
    """Workers holding the new key first send orders sealed under the old one while
    ``rekey`` re-seals them page by page: every order is created exactly once, none goes to
    review, and after the walk the old key protects nothing."""
    # given: workers with PII_KEYS = new, old; an old producer still sealing with the old key
    new_entry = KeyRing.generate("t2")
    rotated = f"{new_entry},{TEST_PII_KEYS}"
    stack: Stack = make_stack(gateway.url, PII_KEYS=rotated)
    old = build_runtime(load_settings(base_env(redis_url, gateway.url)))
    assert old.store.pii_keys is not None and old.store.pii_keys.current == "t1"
    ids = [f"rot-{i:03d}" for i in range(120)]
    rng = random.Random(5)
    for pid in ids[:80]:
        name, number = person(rng)
        enqueue_payout(pid, 5_000_000, "BCA", name, number, runtime=old)
    stack.start_callbacks()
    stack.start_worker()
    ring = KeyRing.parse(rotated)
    walked: list[int] = []
    unreadable: list[str] = []

    def rekey_all() -> None:
        cursor, pages = 0, 0
        while True:
            page = rekey_page(stack.rt.redis, ring, cursor=cursor, count=10)
            unreadable.extend(page.unreadable)
            cursor, pages = page.cursor, pages + 1
            if cursor == 0:
                walked.append(pages)
                return

    # when: the rekey runs while the workers send and 40 more orders arrive (half old, half new)
    rekey = threading.Thread(target=rekey_all)
    rekey.start()
    for n, pid in enumerate(ids[80:]):
        name, number = person(rng)
        enqueue_payout(pid, 5_000_000, "BCA", name, number, runtime=old if n % 2 else stack.rt)
    rekey.join(60)
    assert walked and not rekey.is_alive()
    rekey_all()  # a second walk: SCAN may miss keys created during the first
    wait_for(
        lambda: all(stack.rt.store.state_of(p) in FINAL | {State.REVIEW} for p in ids), 60, what="settle"
    )
    # then
    states = {p: stack.rt.store.state_of(p) for p in ids}
    assert set(states.values()) == {State.SUCCEEDED}, {
        p: s for p, s in states.items() if s is not State.SUCCEEDED
    }
    ledger = gateway.admin.ledger()  # type: ignore[union-attr]
    assert all(ledger["create_requests"][p]["total"] == 1 for p in ids)
    assert all(gateway.admin.payouts_per_id()[p] == 1 for p in ids)  # type: ignore[union-attr]
    assert unreadable == []
    usage = key_usage(stack.rt.redis)
    assert set(usage) == {"t2"} and usage["t2"] == 3 * len(ids)
    old.close()


def test_a_worker_refuses_to_start_without_pii_keys(make_stack: Any, gateway: SandboxProcess) -> None:
    """No PII_KEYS (nor PII_KEYS_FILE): the worker exits at start with one line naming the setting."""
    # given
    stack: Stack = make_stack(gateway.url, PII_KEYS="")
    # when
    w = stack.start_worker()
    # then
    wait_for(lambda: not w.alive(), 60, what="the worker to refuse to start")
    logs = stack.logs()
    assert "refusing to start" in logs and "PII_KEYS" in logs


def test_operator_commands_rekey_doctor_and_forget(
    use_env: Any, gateway: SandboxProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """``payouts doctor`` counts the values per key and warns while an old key still protects
    some; ``payouts rekey`` re-seals them in pages; ``payouts forget`` erases a final order and
    refuses an open one; ``payouts rekey --new-key`` prints an entry PII_KEYS accepts."""
    from worker.ops.cli import main as cli
    from worker.runtime import get_runtime

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()  # what came before (set-up log lines)
        code = cli(list(argv))
        out = capsys.readouterr()
        return code, out.out + out.err

    # given: three orders sealed under t1, one of them final
    use_env(gateway.url)
    rt = get_runtime()
    for i in range(3):
        enqueue_payout(f"cli-{i}", 5_000_000, "BCA", "Sulistyowati", f"55500011{i}", runtime=rt)
    for target in (State.SUBMITTING, State.REJECTED):
        rt.store.transition_or_raise("cli-0", target, reason="setup")
    # when: the new key goes first
    capsys.readouterr()
    code = cli(["rekey", "--new-key", "t2"])
    new_entry = capsys.readouterr().out
    assert code == 0 and KeyRing.parse(new_entry.strip()).ids == ("t2",)
    use_env(gateway.url, PII_KEYS=f"{new_entry.strip()},{TEST_PII_KEYS}")
    # then
    code, out = run("doctor", "--skip-gateway")
    assert "values per key t1: 9" in out and "run `payouts rekey` before removing t1" in out
    code, out = run("rekey", "--page", "2")
    assert code == 0 and "3 re-sealed" in out and "values per key: t2=9" in out
    code, out = run("doctor", "--skip-gateway")
    assert "values per key t2: 9" in out and "before removing" not in out
    code, out = run("forget", "cli-1", "--reason", "customer request")
    assert code == 1 and "cannot move to forgotten" in out
    code, out = run("forget", "cli-0", "--reason", "customer request", "--by", "ana")
    assert code == 0 and "personal data erased (rejected" in out
    assert get_runtime().store.require("cli-0").fields["erased_reason"] == "ana: customer request"
    assert "Sulistyowati" not in capsys.readouterr().out
