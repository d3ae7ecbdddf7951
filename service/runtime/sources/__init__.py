"""Where items come from besides the HTTP API: brokers whose streams already hold them.

``labelagent worker --source URL`` picks the broker by the URL's scheme: ``redis://``/``rediss://`` (a Redis
stream, service/runtime/sources/redis_stream.py), ``nats://``/``tls://`` (NATS JetStream, nats_stream.py) and
``amqp://``/``amqps://`` (RabbitMQ, amqp_queue.py). The message format and what they share: common.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from policies import InputError
from service.runtime.feedback import FeedbackSink
from service.store import SqlStore

BROKERS = {"redis": "redis", "rediss": "redis", "nats": "nats", "tls": "nats", "amqp": "amqp", "amqps": "amqp"}
SCHEMES_HELP = ("redis:// or rediss:// (Redis stream), nats:// or tls:// (NATS JetStream), "
                "amqp:// or amqps:// (RabbitMQ)")


class Source(Protocol):
    async def run(self, stopping: Callable[[], bool]) -> None: ...

    async def close(self) -> None: ...


def broker_of(url: str) -> str:
    """``redis``, ``nats`` or ``amqp`` for a source URL; InputError naming the supported schemes otherwise."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    broker = BROKERS.get(scheme)
    if broker is None:
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        raise InputError(f"source {url!r}: {shown} is not supported; use {SCHEMES_HELP}")
    return broker


def check_source(url: str) -> None:
    """Parse a source URL (scheme, address, options) without connecting: InputError saying what is wrong."""
    _address(url)


def open_source(url: str, store: SqlStore, sink: FeedbackSink | None = None) -> Source:
    """The consumer for a source URL (not connected yet: ``run`` connects and retries)."""
    broker, address = _address(url)
    if broker == "redis":
        from service.runtime.sources.redis_stream import RedisStreamSource

        return RedisStreamSource(store, address, sink=sink)
    if broker == "nats":
        from service.runtime.sources.nats_stream import NatsStreamSource

        return NatsStreamSource(store, address, sink=sink)
    from service.runtime.sources.amqp_queue import AmqpQueueSource

    return AmqpQueueSource(store, address, sink=sink)


def _address(url: str) -> tuple[str, Any]:
    broker = broker_of(url)
    try:
        if broker == "redis":
            from service.runtime.sources.redis_stream import StreamAddress

            return broker, StreamAddress.parse(url)
        if broker == "nats":
            from service.runtime.sources.nats_stream import NatsAddress

            return broker, NatsAddress.parse(url)
        from service.runtime.sources.amqp_queue import AmqpAddress

        return broker, AmqpAddress.parse(url)
    except ModuleNotFoundError as exc:
        raise InputError(f"source {url!r} needs the package {exc.name!r}: "
                         "pip install 'labelagent[brokers]'") from None
