"""gunicorn settings of the web process (started by ``python -m worker.web``, never by hand).

gevent workers (issue 21, measured in docs/performance.md): a client that trickles its
request holds one greenlet, not a thread; each process serves ``worker_connections`` at
once. Request line and headers are bounded by gunicorn's limits below; the body by the
receiver's own deadline and size cap (``worker.callbacks``).

Logging: gunicorn's error log ("Booting worker", "Listening at") and its
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
worker_class = "gevent"
workers = 2
worker_connections = 1000
timeout = 30
graceful_timeout = 10
#: seconds an idle keep-alive connection is kept
keepalive = 5
#: the request line and headers: small, as a callback's or a console page's are
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
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
