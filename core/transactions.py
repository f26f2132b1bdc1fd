"""Side effects that leave only after commit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction


def after_commit(function: Callable[..., Any], *args: Any) -> None:
    """Run ``function(*args)`` once the current transaction commits (at once outside one).

    Robust: a failure (a cache or broker outage) is logged and never reported as a failed
    change — what it would have refreshed expires and is rebuilt from the database. The hook
    is a named function, not ``functools.partial``: Django logs a failed robust hook by its
    ``__qualname__``, which a partial lacks, so the failure escaped the commit as an
    AttributeError."""

    def hook() -> None:
        function(*args)

    hook.__qualname__ = f"after_commit({getattr(function, '__qualname__', repr(function))})"
    transaction.on_commit(hook, robust=True)
