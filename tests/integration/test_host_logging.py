"""The library in a host process with its own logging: nothing on stdout, every library record
through the host's handlers, the host's root logger untouched, no personal data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import redis

from tests.helpers import base_env
from worker.harness.processes import free_port

NAME = "Budi Santoso"
NUMBER = "88776655443322"

HOST = textwrap.dedent(
    """
    import io, json, logging, logging.config, sys

    # the host's own logging: one file handler on the root logger, its own format
    logging.config.dictConfig({
        "version": 1,
        "formatters": {"host": {"format": "HOST %(levelname)s %(name)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": sys.argv[1],
                              "formatter": "host"}},
        "root": {"level": "DEBUG", "handlers": ["file"]},
    })
    root = logging.getLogger()
    before = (list(root.handlers), root.level, [type(h.formatter).__name__ for h in root.handlers])

    import worker                                  # imported ...
    from worker import enqueue_payout
    from worker.callbacks import make_web_app      # ... and mounted, with a request through it
    from worker.logs import get_logger

    app = make_web_app()
    status = []
    b"".join(app({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()},
                 lambda s, h: status.append(s)))
    # the broker does not answer: the order is stored, the publish failure is logged (D5)
    order = enqueue_payout("host-1", 1500000, "BCA", sys.argv[2], sys.argv[3])
    # a probe call with a name and an account number, as any library code could make
    get_logger("payouts.probe").warning("probe", name=sys.argv[2], number=sys.argv[3],
                                        note="acct " + sys.argv[3])
    after = (list(root.handlers), root.level, [type(h.formatter).__name__ for h in root.handlers])
    sys.stderr.write(json.dumps({"root_untouched": before == after, "metrics": status,
                                 "state": order.state.value}) + "\\n")
    """
)


def test_a_host_keeps_its_logging(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    """A host that configured logging imports, mounts and calls the library: 0 lines on stdout,
    the library's records in the host's file in the host's format, root unchanged, no name or
    account number anywhere."""
    # given
    script = tmp_path / "host.py"
    script.write_text(HOST)
    log_file = tmp_path / "host.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(base_env(redis_url, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"))
    # when
    proc = subprocess.run(
        [sys.executable, str(script), str(log_file), NAME, NUMBER],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == []
    report = json.loads(proc.stderr.splitlines()[-1])
    assert proc.stderr.splitlines()[:-1] == []  # nothing but the script's own report
    assert report == {"root_untouched": True, "metrics": ["200 OK"], "state": "received"}
    lines = log_file.read_text().splitlines()
    library = [ln for ln in lines if ln.split()[2].startswith("payouts.")]
    events = {ln.split()[3] for ln in library}
    assert {"payout.enqueue.publish_failed", "probe"} <= events, lines
    assert all(ln.startswith("HOST ") for ln in lines)
    text = log_file.read_text() + proc.stdout + proc.stderr
    assert NAME not in text and "Santoso" not in text
    assert NUMBER not in text and NUMBER[:-4] not in text
    assert redis_client.hget("payouts:order:host-1", "state") == "received"
