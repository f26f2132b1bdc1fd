"""Database work from async views: in Django's sync thread, connections looked after.

``flags`` and ``vehicles`` read caches on the event loop and go to the database only on a
miss, through ``db``. Inside ``core.http.lane.HotLane`` Django's request signals do not run,
so ``db`` closes stale connections around the call itself.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

# Set while core.http.lane.HotLane serves a request.
in_lane: contextvars.ContextVar[bool] = contextvars.ContextVar("ff_in_lane", default=False)


def db(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run ``function`` in Django's sync thread (cache misses only)."""

    def run(*args: Any) -> Any:
        if not in_lane.get():
            return function(*args)
        close_old_connections()
        try:
            return function(*args)
        finally:
            close_old_connections()

    return sync_to_async(run)
