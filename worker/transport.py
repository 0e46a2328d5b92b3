"""The Redis broker transport: kombu's, with two fixes found by ``payouts bench``.

**One Redis client per channel.** kombu builds a new ``redis.Redis`` object for every
publish, ack and event (``Channel.conn_or_acquire``); with redis-py 8 that costs
~75 us of CPU each (its response-callback tables are rebuilt), and a task costs four
of them in the worker (ack + three Flower events) and two in the producer (message +
``task-sent`` event). :class:`Channel` keeps one client per channel and connection
pool; redis-py clients are thread-safe (each command borrows a pooled connection).

**Green workers re-check credit while every slot is busy.**

A green worker runs Celery's blocking consumer loop, which calls
``drain_events(timeout=2.0)``. With ``task_acks_late`` and ``prefetch_multiplier=1``
every slot holds an unacked message while its task runs; when all are busy kombu
stops reading the queue (no credit) and waits in ``poll(2.0)``, and an ack that
frees a slot does not wake it. Measured (``payouts bench``, gevent ``-c 100``,
200 ms gateway): the worker took ``-c`` messages, then sat idle until the 2 s poll
ran out -- 48 payouts/s instead of ~450. This poller re-checks the credit every
:data:`CREDIT_RECHECK_S` while none is left, which costs ~1 % of a core when busy
and nothing when idle (with credit the wait is the usual blocking ``BRPOP``).

Used through ``broker_transport`` (worker/celeryconf.py) for ``redis://`` and
``rediss://`` brokers, and as :class:`SentinelTransport` for ``REDIS_SENTINELS`` (threads
and prefork workers use the event loop, which this does not touch).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import redis
from kombu.transport import redis as kombu_redis

#: seconds between credit checks while every slot of a green worker is busy
CREDIT_RECHECK_S: Final = 0.01


class CreditAwarePoller(kombu_redis.MultiChannelPoller):  # type: ignore[misc]
    """Wait at most :data:`CREDIT_RECHECK_S` in one poll while no message may be taken."""

    def get(self, callback: Any, timeout: float | None = None) -> Any:
        if timeout is None or timeout > CREDIT_RECHECK_S:
            for channel in self._channels:
                if channel.active_queues and not channel.qos.can_consume():
                    timeout = CREDIT_RECHECK_S
                    break
        return super().get(callback, timeout)


class _ChannelFixes:
    """The two channel fixes, shared by the plain and the Sentinel channel."""

    # provided by kombu's channel this is mixed into
    pool: Any
    connection: Any
    _create_client: Any

    _shared: tuple[Any, Any] | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool  # replaced after a fork or a reconnect: then a new client
        shared = self._shared
        if shared is None or shared[0] is not pool:
            shared = self._shared = (pool, self._create_client())
        yield shared[1]

    def _connparams(self, asynchronous: bool = False) -> Any:
        # On a broker connection loss Celery clears the transport's client before it
        # closes the channel; restoring the unacked messages then rebuilds the pool
        # from ``None`` and the worker exits with AttributeError (seen in the chaos
        # run on every Redis restart with tasks in flight). Raising a connection error
        # instead lets kombu treat it as the connection loss it is and reconnect.
        # The Sentinel channel reads ``self.connection.client.alt`` right after this
        # (``_sentinel_managed_pool``): the same guard covers it.
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("broker connection closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class Channel(_ChannelFixes, kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel, reusing one client for publishes, acks and events."""


class SentinelChannel(_ChannelFixes, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """kombu's Sentinel channel with the same fixes: the master is found through the
    sentinels (``master_name``, ``sentinel_kwargs`` transport options) on every new pool."""


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel` and :class:`CreditAwarePoller`."""

    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = CreditAwarePoller()


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    """kombu's Sentinel transport (``sentinel://`` broker URLs) with the same fixes."""

    Channel = SentinelChannel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = CreditAwarePoller()
