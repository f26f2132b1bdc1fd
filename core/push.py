"""The push channel: messages for the vehicle sockets of every server process.

``publish(message)`` is called after commit (``flags.broadcasts``); every server process
runs one ``listen`` task (``realtime.fanout``) that receives each message once and fans it out
to its own sockets. Two transports, chosen by settings:

- ``REDIS_URL`` set: Redis pub/sub on one channel, ``{PUSH_PREFIX}:push`` (several daphne
  processes, each subscribed once). Reached only through ``core.redis``.
- the embedded default: in this process (one daphne process): ``publish`` hands the message
  to the listening event loop(s) of this process with ``call_soon_threadsafe``.

Pub/sub delivers at most once and only to processes subscribed at that moment: a message
published while Redis is down, or while a process is resubscribing, is lost to it. That is
why ``listen`` calls ``on_subscribed`` after every (re)subscription and the listener also
sweeps periodically: both compare its sockets' versions with the database and send what they
missed (``realtime.fanout``). A failed publish raises; the caller logs it and relies on that.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from django.conf import settings

from core import redis

_local_listeners: list[tuple[asyncio.AbstractEventLoop, Callable[[bytes], None]]] = []
_lock = threading.Lock()


def channel() -> str:
    return f"{settings.PUSH_PREFIX}:push"


def uses_redis() -> bool:
    return bool(settings.REDIS_URL)


def publish(message: bytes) -> int:
    """Hand ``message`` to every listening process; the number of listeners reached."""
    if uses_redis():
        return redis.pubsub_publish(channel(), message)
    with _lock:
        listeners = list(_local_listeners)
    for loop, on_message in listeners:
        loop.call_soon_threadsafe(on_message, message)
    return len(listeners)


async def listen(on_subscribed: Callable[[], Awaitable[None]], on_message: Callable[[bytes], None]) -> None:
    """Receive every published message until cancelled (one task per process)."""
    if uses_redis():
        await redis.pubsub_listen(settings.REDIS_URL, channel(), on_subscribed, on_message)
        return
    entry = (asyncio.get_running_loop(), on_message)
    with _lock:
        _local_listeners.append(entry)
    try:
        await on_subscribed()
        await asyncio.Event().wait()  # until cancelled
    finally:
        with _lock:
            _local_listeners.remove(entry)
