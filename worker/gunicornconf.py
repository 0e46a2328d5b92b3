"""gunicorn settings for the callback receiver and ``/metrics``:

    gunicorn -c python:worker.gunicornconf worker.callbacks:app --bind 0.0.0.0:8000

Its only job is logging: gunicorn's error log ("Booting worker", "Listening at") and its
access log go through the same structlog pipeline as the rest (JSON lines on stderr,
redacted), instead of gunicorn's own text formats. Access lines are structured fields,
never the query string.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger

from worker.logs import configure_logging, get_logger
from worker.settings import get_settings

# gunicorn reads these module attributes as its settings
logger_class = "worker.gunicornconf.JsonLogger"
accesslog = "-"
worker_class = "gthread"
workers = 2
threads = 8
timeout = 30
# gunicorn >= 23 opens a control socket under $HOME by default; the receiver needs none
control_socket_disable = True


class JsonLogger(Logger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's logger, rendered by worker.logs (no handlers of its own)."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        s = get_settings()
        configure_logging(s.log_format, s.log_level)
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        for log in (self.error_log, self.access_log):
            log.handlers[:] = []
            log.propagate = True  # to the root handler configure_logging installed
        self.error_log.setLevel(self.loglevel)
        self.access_log.setLevel(logging.INFO)
        self._access = get_logger("gunicorn.access")

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.cfg.accesslog:
            return
        status = getattr(resp, "status_code", None) or str(getattr(resp, "status", "")).split(" ", 1)[0]
        self._access.info(
            "http.access",
            method=environ.get("REQUEST_METHOD"),
            path=environ.get("PATH_INFO"),
            status=int(status) if str(status).isdigit() else status,
            duration_ms=round(request_time.total_seconds() * 1000, 3),
            remote=environ.get("REMOTE_ADDR"),
            bytes=getattr(resp, "sent", None),
        )

    def reopen_files(self) -> None:  # nothing of ours to reopen: logs go to stderr
        return None

    def close_on_exec(self) -> None:
        return None
