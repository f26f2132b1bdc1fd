"""Error codes of flag changes and their governance (see ``core.errors`` for the scheme)."""

from __future__ import annotations

from core.errors import CodeEnum, set_statuses


class FlagCode(CodeEnum):
    STALE = "stale"  # the flag changed since the caller (or the change request) saw it
    EXPIRED = "expired"  # the change request is past its expiry
    TAMPERED = "tampered"  # the change request no longer matches its content hash
    ALREADY_DECIDED = "already_decided"
    ARCHIVED = "archived"
    NOT_KILLED = "not_killed"  # lifting a kill switch that is not engaged


set_statuses(FlagCode, {code.value: 409 for code in FlagCode})
