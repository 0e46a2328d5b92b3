"""The Celery configuration, built from :class:`worker.settings.Settings`.

Each setting below answers a known Celery + Redis pitfall (docs/decisions.md,
"Celery and Redis settings"); the comment says which.
"""

from __future__ import annotations

from typing import Any

from celery.utils.nodenames import worker_direct
from kombu import Exchange, Queue

from worker.settings import Settings

#: the task names, used by the tasks, the routes, the beat schedule and every sender
SUBMIT_TASK = "payouts.submit"
CREATE_TASK = "payouts.create"
CHECK_TASK = "payouts.check"
CHECK_BATCH_TASK = "payouts.check_batch"
SWEEP_TASK = "payouts.sweep"
HEARTBEAT_TASK = "payouts.heartbeat"

SUBMIT_QUEUE = "payouts"
CHECK_QUEUE = "payouts.check"
SWEEP_QUEUE = "payouts.sweep"

ROUTES = {
    SUBMIT_TASK: {"queue": SUBMIT_QUEUE},
    CREATE_TASK: {"queue": SUBMIT_QUEUE},
    CHECK_TASK: {"queue": CHECK_QUEUE},
    CHECK_BATCH_TASK: {"queue": CHECK_QUEUE},
    SWEEP_TASK: {"queue": SWEEP_QUEUE},
}


def worker_queue(worker: str) -> Queue:
    """The direct queue only ``worker`` (its Celery node name) consumes (``worker_direct``)."""
    return worker_direct(worker)


def celery_config(s: Settings) -> dict[str, Any]:
    # a tick is skipped rather than queued behind others: expire at one interval
    sweep_expires = max(1.0, s.sweep_interval_s)
    scheme = s.effective_broker_url.split("://", 1)[0]
    transport = {
        "redis": "worker.transport:Transport",
        "rediss": "worker.transport:Transport",
        "sentinel": "worker.transport:SentinelTransport",
    }.get(scheme)
    sentinel: dict[str, Any] = {}
    if scheme == "sentinel":
        # the master is found through the sentinels; their own password (if any) goes
        # in sentinel_kwargs, the master's in the URL (celery#6301, kombu#2426)
        sentinel["master_name"] = s.redis_sentinel_master
        if s.redis_sentinel_password is not None:
            sentinel["sentinel_kwargs"] = {"password": s.redis_sentinel_password.reveal()}
    return {
        "broker_url": s.effective_broker_url,
        # kombu's Redis transport plus a fix for gevent workers stalling up to 2 s
        # whenever every slot is busy (worker/transport.py; measured in docs/performance.md)
        "broker_transport": transport,
        "broker_connection_retry_on_startup": True,
        # a failover's ReadOnlyError (a demoted master) is a channel error: retry it (celery#7946)
        "broker_channel_error_retry": scheme == "sentinel",
        "broker_transport_options": {
            **sentinel,
            # task limits stay well below this, or a running task is delivered twice
            "visibility_timeout": s.visibility_timeout_s,
            # gevent at -c N needs more than the default 10 connections (celery#1350)
            "max_connections": s.worker_concurrency + 16,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 30,
        },
        # JSON only: messages carry one order id, never pickled objects
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # no result backend: outcomes live in the order store and the events stream
        "result_backend": None,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        # the (disabled) backend is stateless: share it, instead of building one per
        # thread -- per task under gevent, ~4 % of a worker's CPU (docs/performance.md)
        "result_backend_thread_safe": True,
        # a killed worker's message comes back; the claim CAS makes it harmless
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # a broker reconnect otherwise re-runs tasks still in progress (celery#4671);
        # prefork only: the threads pool cannot terminate a thread (a warning in 5.7)
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # enforced by prefork and gevent only; the threads pool ignores both limits, so
        # every task bounds its own time (GATEWAY_TOTAL_TIMEOUT, SUBMIT_TOKEN_WAIT,
        # CHECK_BATCH_PAGES; settings.max_task_s <= half the visibility timeout, D19)
        "task_time_limit": s.task_time_limit_s,
        "task_soft_time_limit": max(1.0, s.task_time_limit_s - 5),
        # Flower: task events on, sent-events so queued tasks show too
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # each queue on its own direct exchange: a message goes to exactly one queue
        "task_queues": [
            Queue(q, Exchange(q, type="direct"), routing_key=q)
            for q in (SUBMIT_QUEUE, CHECK_QUEUE, SWEEP_QUEUE)
        ],
        "task_default_exchange": SUBMIT_QUEUE,
        "task_default_routing_key": SUBMIT_QUEUE,
        "task_default_queue": SUBMIT_QUEUE,
        "task_routes": ROUTES,
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_concurrency": s.worker_concurrency,
        # each worker also consumes its own direct queue: `payouts health --worker NAME`
        # sends it a heartbeat task there (worker/liveness.py)
        "worker_direct": True,
        "beat_schedule": {
            SWEEP_TASK: {
                "task": SWEEP_TASK,
                "schedule": s.sweep_interval_s,
                "options": {"expires": sweep_expires, "queue": SWEEP_QUEUE},
            },
        },
        "timezone": "UTC",
        "enable_utc": True,
    }
