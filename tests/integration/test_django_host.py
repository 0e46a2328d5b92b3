"""The library inside a real Django project: `startapp tasks` works beside the installed package,
and the project's LOGGING stays the project's (nothing on stdout, the library's records in the
project's handler, no personal data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from tests.helpers import base_env

NAME = "Dewi Lestari"
NUMBER = "55443322110099"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """`django-admin startproject webapp`, with a LOGGING setting of its own."""
    try:
        import django  # noqa: F401  # the test tools install it (Makefile TEST_TOOLS)
    except ModuleNotFoundError:
        if os.environ.get("CI"):
            pytest.fail("django not installed: `make install` installs the test tools")
        pytest.skip("django not installed")
    admin = shutil.which("django-admin", path=str(Path(sys.executable).parent)) or "django-admin"
    subprocess.run(
        [admin, "startproject", "webapp", str(tmp_path)], check=True, capture_output=True, timeout=60
    )
    settings = tmp_path / "webapp" / "settings.py"
    log_file = str(tmp_path / "site.log")
    settings.write_text(
        settings.read_text()
        + textwrap.dedent(
            f"""
            LOGGING = {{
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {{"site": {{"format": "SITE %(levelname)s %(name)s %(message)s"}}}},
                "handlers": {{
                    "file": {{"class": "logging.FileHandler", "filename": {log_file!r}, "formatter": "site"}}
                }},
                "root": {{"level": "INFO", "handlers": ["file"]}},
            }}
            """
        )
    )
    return tmp_path


def _env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    env.update(base_env(redis_url))
    return env


def test_startapp_tasks_beside_the_installed_package(project: Path, redis_url: str) -> None:
    """`python manage.py startapp tasks` is not refused: the package installs no top-level `tasks`."""
    # given: what the project's interpreter finds under the name `tasks`
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; s = u.find_spec('tasks'); print(s.origin if s else '')",
        ],
        cwd=project,
        env=_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.stdout.strip():
        pytest.skip(f"the installed package still provides a top-level `tasks` ({probe.stdout.strip()})")
    # when
    made = subprocess.run(
        [sys.executable, "manage.py", "startapp", "tasks"],
        cwd=project,
        env=_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then
    assert made.returncode == 0, made.stderr
    assert (project / "tasks" / "apps.py").exists()


def test_the_projects_logging_stays_the_projects(
    project: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    """In `manage.py shell`, importing and mounting the console and enqueueing a payout print
    nothing, leave Django's root logging as configured, and log through the project's handler."""
    # given
    code = textwrap.dedent(
        f"""
        import io, logging, sys
        root = logging.getLogger()
        before = (list(root.handlers), root.level)
        from worker import enqueue_payout
        from worker.callbacks import make_web_app
        from worker.logs import get_logger
        app = make_web_app()
        status = []
        b"".join(app({{"PATH_INFO": "/console/", "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}},
                     lambda s, h: status.append(s)))
        enqueue_payout("dj-1", 1500000, "BCA", {NAME!r}, {NUMBER!r})
        get_logger("payouts.probe").warning("probe", name={NAME!r}, number={NUMBER!r})
        assert (list(root.handlers), root.level) == before, "root logging changed"
        assert status, "the console answered nothing"
        """
    )
    # when
    proc = subprocess.run(
        [sys.executable, "manage.py", "shell", "--verbosity", "0", "-c", code],
        cwd=project,
        env={**_env(redis_url), "CELERY_BROKER_URL": "redis://127.0.0.1:9/0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""
    lines = (project / "site.log").read_text().splitlines()
    assert any(" payouts.probe probe " in ln for ln in lines), lines
    assert any(" payouts.producer payout.enqueue.publish_failed " in ln for ln in lines), lines
    text = "\n".join(lines) + proc.stderr
    assert NAME not in text and NUMBER not in text and NUMBER[:-4] not in text
    assert redis_client.hget("payouts:order:dj-1", "state") == "received"
