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
        count, _ = pipe.execute()
        return int(count)
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
        pipe.execute()
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
        raw: dict[Any, Any] = client.hgetall(backend.make_and_validate_key(name))
        return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
    return dict(caches["default"].get(name) or {})
