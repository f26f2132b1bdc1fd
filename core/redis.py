"""The one way to Redis: the cache backend with process-wide pools, and the few raw
commands Django's cache API has no word for (counters in a window, hash counters).

Everything else reaches Redis through Django's cache (``django.core.cache.cache``); the
channel layer and RQ are configured from the same ``REDIS_URL`` in settings. Without
Redis (the embedded default) the same functions fall back to the local-memory cache.

Pools: Django makes a new cache backend object per asyncio task (its cache handler is

context-local), and each ``RedisCache`` object builds its own connection pool: under ASGI
that is a new TCP connection to Redis for every request. Pools here are kept per process
(by server URL and options), so requests reuse warm connections. redis-py pools are
thread-safe; the pid check in redis-py makes forked workers open their own.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_pools: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


class SharedPoolRedisCacheClient(RedisCacheClient):
    # Django's private attributes, set by RedisCacheClient.__init__ (not in django-stubs).
    _servers: list[str]
    _pool_options: dict[str, Any]
    _pool_class: Any
    _get_connection_pool_index: Any

    def _get_connection_pool(self, write: bool) -> Any:
        index = self._get_connection_pool_index(write)
        key = (self._servers[index], tuple(sorted((k, repr(v)) for k, v in self._pool_options.items())))
        pool = _pools.get(key)
        if pool is None:
            with _lock:
                pool = _pools.get(key)
                if pool is None:
                    pool = self._pool_class.from_url(self._servers[index], **self._pool_options)
                    _pools[key] = pool
        return pool


    # Redis unreachable: the cache degrades to a cache that holds nothing, so that every reader
    # falls back to the database and no request fails for it (a kill switch engaged during a
    # Redis outage is committed and answered). Logged at most every 10 s.

    def get(self, key: Any, default: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).get(key, default), default)

    def get_many(self, keys: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).get_many(keys), {})

    def has_key(self, key: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).has_key(key), False)

    def add(self, key: Any, value: Any, timeout: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).add(key, value, timeout), False)

    def set(self, key: Any, value: Any, timeout: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).set(key, value, timeout), None)

    def set_many(self, data: Any, timeout: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).set_many(data, timeout), None)

    def touch(self, key: Any, timeout: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).touch(key, timeout), False)

    def delete(self, key: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).delete(key), False)

    def delete_many(self, keys: Any) -> Any:
        return _tolerant(lambda: super(SharedPoolRedisCacheClient, self).delete_many(keys), None)


_last_outage_log = 0.0


def _outage(exc: Exception) -> None:
    import logging
    import time

    global _last_outage_log
    now = time.monotonic()
    if now - _last_outage_log > 10:
        _last_outage_log = now
        logging.getLogger("fleetflag.redis").warning("Redis unreachable (%s): serving without the shared cache", exc)


def _tolerant(call: Any, fallback: Any) -> Any:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        return call()
    except (RedisConnectionError, RedisTimeoutError) as exc:
        _outage(exc)
        return fallback


class SharedPoolRedisCache(RedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedPoolRedisCacheClient


def _redis() -> tuple[Any, Any] | None:
    """(backend, raw client) when the default cache is Redis, else None."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    # Django's private client accessor, used here and nowhere else.
    return backend, backend._cache.get_client(write=True)


def incr_window(key: str, delta: int, ttl: int) -> int:
    """Add ``delta`` to a counter that lives ``ttl`` seconds from its first increment; the new total."""
    found = _redis()
    if found is not None:
        backend, client = found
        full = backend.make_and_validate_key(key)
        pipe = client.pipeline(transaction=False)
        pipe.incrby(full, delta)
        pipe.expire(full, ttl, nx=True)
        # Redis down: the window counts only this call (limits fail open while Redis is away).
        result = _tolerant(pipe.execute, None)
        return delta if result is None else int(result[0])
    local = caches["default"]
    local.add(key, 0, timeout=ttl)
    try:
        return int(local.incr(key, delta))
    except ValueError:  # expired between add and incr
        local.set(key, delta, timeout=ttl)
        return delta


_hash_lock = threading.Lock()


def hash_add(batch: dict[str, dict[str, float]]) -> None:
    """Add each value into its field of its hash (``HINCRBYFLOAT``), shared by all processes."""
    found = _redis()
    if found is not None:
        backend, client = found
        pipe = client.pipeline(transaction=False)
        for name, fields in batch.items():
            full = backend.make_and_validate_key(name)
            for field_name, value in fields.items():
                pipe.hincrbyfloat(full, field_name, value)
        _tolerant(pipe.execute, None)  # Redis down: these counts are lost, the request is not
        return
    local = caches["default"]
    with _hash_lock:
        for name, fields in batch.items():
            total: dict[str, float] = dict(local.get(name) or {})
            for field_name, value in fields.items():
                total[field_name] = total.get(field_name, 0) + value
            local.set(name, total, timeout=None)


def hash_read(name: str) -> dict[str, float]:
    found = _redis()
    if found is not None:
        backend, client = found
        raw: dict[Any, Any] = _tolerant(lambda: client.hgetall(backend.make_and_validate_key(name)), {})
        return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
    return dict(caches["default"].get(name) or {})


# -- presence: who is online, shared by every server process -------------------------------
# One sorted set per environment (member: VIN, score: last seen, epoch seconds) and one hash
# naming the connection that holds each VIN, so that a vehicle that moved to another process
# is not marked offline when its old socket finally closes. Without Redis (one process, the
# embedded default) the same structures live in this process's memory.

_LEAVE = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 1
end
return 0
"""
_memory_online: dict[str, dict[str, float]] = {}
_memory_holders: dict[str, str] = {}
_memory_lock = threading.Lock()


def _client() -> Any | None:
    found = _redis()
    return None if found is None else found[1]


def presence_seen(keys: dict[str, str], holders_key: str, seen: dict[str, dict[str, float]],
                  holders: dict[str, str]) -> None:
    """Mark VINs seen: ``seen`` maps environment -> {VIN: epoch seconds}; ``holders`` maps VIN ->
    connection id for VINs that (re)connected. ``keys`` maps environment -> sorted-set name."""
    client = _client()
    if client is None:
        with _memory_lock:
            for environment, members in seen.items():
                _memory_online.setdefault(keys[environment], {}).update(members)
            _memory_holders.update(holders)
        return
    pipe = client.pipeline(transaction=False)
    if holders:
        pipe.hset(holders_key, mapping=holders)
    for environment, members in seen.items():
        if members:
            pipe.zadd(keys[environment], members)
    pipe.execute()


def presence_leave(key: str, holders_key: str, vin: str, holder: str) -> bool:
    """Remove the VIN if ``holder`` still holds it; True when it did (the vehicle is offline)."""
    client = _client()
    if client is None:
        with _memory_lock:
            if _memory_holders.get(vin) != holder:
                return False
            del _memory_holders[vin]
            _memory_online.get(key, {}).pop(vin, None)
            return True
    return bool(client.eval(_LEAVE, 2, key, holders_key, vin, holder))


def presence_count(key: str, since: float) -> int:
    """VINs seen at or after ``since`` (epoch seconds)."""
    client = _client()
    if client is None:
        with _memory_lock:
            return sum(1 for score in _memory_online.get(key, {}).values() if score >= since)
    return int(client.zcount(key, since, "+inf"))


def presence_expire(key: str, holders_key: str, before: float) -> list[str]:
    """Remove and return the VINs last seen before ``before``: their process died or lost them."""
    client = _client()
    if client is None:
        with _memory_lock:
            members = _memory_online.get(key, {})
            stale = [vin for vin, score in members.items() if score < before]
            for vin in stale:
                del members[vin]
                _memory_holders.pop(vin, None)
            return stale
    stale = [v.decode() if isinstance(v, bytes) else str(v) for v in client.zrangebyscore(key, "-inf", f"({before}")]
    if stale:
        pipe = client.pipeline(transaction=False)
        pipe.zrem(key, *stale)
        pipe.hdel(holders_key, *stale)
        pipe.execute()
    return stale


# -- pub/sub: the push channel's transport (core.push) ------------------------------------


def pubsub_publish(channel: str, data: bytes) -> int:
    """Publish on the shared Redis (raises when Redis is unreachable); the number of subscribers."""
    client = _client()
    if client is None:
        raise RuntimeError("pub/sub needs Redis (REDIS_URL)")
    return int(client.publish(channel, data))


async def pubsub_listen(url: str, channel: str, on_subscribed: Any, on_message: Any) -> None:
    """Subscribe to ``channel`` and call ``on_message(bytes)`` for each message, until cancelled.

    ``await on_subscribed()`` runs after every (re)subscription: messages published while this
    process was not subscribed are lost to it, so the caller catches up from the database.
    Connection errors are logged and retried with a backoff up to 5 s; the subscription
    connection has no socket timeout (it waits for messages) but keepalive and a health check."""
    import asyncio
    import logging

    import redis.asyncio as aioredis

    log = logging.getLogger("fleetflag.push")
    delay = 0.2
    while True:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_keepalive=True,
                                         health_check_interval=15)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            delay = 0.2
            await on_subscribed()
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is not None and message.get("type") == "message":
                    on_message(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis went away: resubscribe when it is back
            log.warning("push subscription to %s lost (%s); retrying in %.1f s", channel, exc, delay)
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception:  # noqa: BLE001 - the connection is gone already
                pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
