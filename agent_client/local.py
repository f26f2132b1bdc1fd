"""Evaluation for one vehicle: the hot path behind ``is_enabled`` on the vehicle.

A vehicle evaluates with its own VIN and (mostly) its own fixed context, so the result of
each flag for that base context is computed once per snapshot and then served from a
dict. Calls that bring extra context attributes are evaluated in full. Entries older than
their flag's TTL are served as the default value with reason STALE (the safe fallback),
except a killed flag, which stays killed: the kill switch is safer than any default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from agent_client.evaluator import KILL_SWITCH, STALE, Resolution, Snapshot, not_found


class LocalFlags:
    __slots__ = ("_booleans", "_clock", "_expires_at", "_results", "_synced_at", "context", "snapshot", "vin")

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        vin: str,
        context: Mapping[str, Any] | None = None,
        synced_at: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vin = vin
        self.context: dict[str, Any] = dict(context or {})
        self._clock = clock
        self.snapshot = snapshot
        self._results: dict[str, Resolution] = {}
        self._booleans: dict[str, bool] = {}
        self._expires_at = 0.0
        self._synced_at = 0.0
        self.load(snapshot, synced_at=synced_at)

    def load(self, snapshot: Snapshot, *, synced_at: float | None = None) -> None:
        """Swap in a new snapshot (after a sync or a kill switch) and precompute results."""
        synced = self._clock() if synced_at is None else synced_at
        results = snapshot.evaluate_all(self.vin, self.context)
        ttls = [flag.ttl_seconds for flag in snapshot.flags.values() if flag.ttl_seconds]
        # The hot path checks one deadline: the earliest expiry of any flag.
        self._expires_at = synced + min(ttls) if ttls else float("inf")
        self._synced_at = synced
        self.snapshot = snapshot
        self._results = results
        self._booleans = {key: r.value for key, r in results.items() if isinstance(r.value, bool)}

    def is_enabled(self, flag_key: str, default: bool = False) -> bool:
        if self._clock() < self._expires_at:
            return self._booleans.get(flag_key, default)
        result = self.evaluate(flag_key, default=default)
        return result.value if isinstance(result.value, bool) else default

    def get_value(self, flag_key: str, default: Any = None, context: Mapping[str, Any] | None = None) -> Any:
        return self.evaluate(flag_key, default=default, context=context).value

    def evaluate(self, flag_key: str, *, default: Any = None, context: Mapping[str, Any] | None = None) -> Resolution:
        flag = self.snapshot.flags.get(flag_key)
        if flag is None:
            return not_found(flag_key, default)
        if flag.ttl_seconds and self._clock() >= self._synced_at + flag.ttl_seconds:
            killed = flag.fixed
            if killed is not None and killed.reason == KILL_SWITCH:
                # The kill switch is the safe state and outlives the TTL: STALE would serve
                # the default value, which for a boolean flag may be true (the feature back on).
                return killed
            return Resolution(flag_key, flag.default_value, "default", STALE, flag.version)
        if not context:
            return self._results[flag_key]
        return flag.evaluate(self.vin, {**self.context, **context})
