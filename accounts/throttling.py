"""Per-key rate limit (``rate_limit_per_min``): a fixed one-minute window shared by every
process through ``core.redis.incr_window`` (Redis in production: INCRBY + EXPIRE in one round
trip; local memory in the embedded default, where there is one process). The key check
(``accounts.authentication``) calls ``hit``; sessions are not limited.

A process does not go to Redis on every request: it counts locally and adds its count
to the shared window every ``SYNC_EVERY`` requests or ``SYNC_SECONDS``, and on every
request once the window is within ``SYNC_EVERY`` requests per process of the limit, so
the limit holds exactly where it matters and costs one round trip per batch elsewhere.
"""

from __future__ import annotations

import math
import threading
import time

from accounts.keys import KeyInfo
from core import redis

WINDOW_SECONDS = 60
SYNC_EVERY = 32
SYNC_SECONDS = 0.25


class _Window:
    __slots__ = ("known", "pending", "synced_at", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.known = 0  # the shared count at the last sync
        self.pending = 0  # this process's requests since then
        self.synced_at = 0.0


_windows: dict[int, _Window] = {}
_lock = threading.Lock()


def hit(info: KeyInfo, now: float | None = None) -> int | None:
    """Count one request; None when allowed, else the seconds until the window resets."""
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    limit = info.rate_limit_per_min
    with _lock:
        state = _windows.get(info.id)
        if state is None or state.window != window:
            state = _windows[info.id] = _Window(window)
        state.pending += 1
        near = state.known + state.pending + SYNC_EVERY >= limit
        due = near or state.pending >= SYNC_EVERY or now - state.synced_at >= SYNC_SECONDS
        delta = state.pending if due else 0
        if due:
            state.pending = 0
            state.synced_at = now
    count = redis.incr_window(f"ff:rl:{info.id}:{window}", delta, WINDOW_SECONDS + 5) if delta else state.known + state.pending
    if delta:
        with _lock:
            state.known = count
    if count <= limit:
        return None
    return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))


def forget_local() -> None:
    with _lock:
        _windows.clear()
