"""Error codes of API keys (see ``core.errors`` for the scheme)."""

from __future__ import annotations

from core.errors import CodeEnum, set_statuses


class KeyCode(CodeEnum):
    INVALID_API_KEY = "invalid_api_key"
    API_KEY_REVOKED = "api_key_revoked"
    API_KEY_INACTIVE = "api_key_inactive"  # the key, or the user it is bound to, is deactivated
    API_KEY_EXPIRED = "api_key_expired"
    ALREADY_REVOKED = "already_revoked"
    ALREADY_EXPIRED = "already_expired"


set_statuses(KeyCode, {
    "invalid_api_key": 401, "api_key_revoked": 401, "api_key_inactive": 401, "api_key_expired": 401,
    "already_revoked": 409, "already_expired": 409,
})
