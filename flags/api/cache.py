"""A Redis cache backend whose connection pools are shared by the whole process.

Django makes a new cache backend object per asyncio task (its cache handler is
context-local), and each ``RedisCache`` object builds its own connection pool: under ASGI
that is a new TCP connection to Redis for every request. Pools here are kept per process
(by server URL and options), so requests reuse warm connections. redis-py pools are
thread-safe; the pid check in redis-py makes forked workers open their own.
"""

from __future__ import annotations

import threading
from typing import Any

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
