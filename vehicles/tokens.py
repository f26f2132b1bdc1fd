"""Vehicle credential material: making and hashing tokens. No database, no cache.

A token reads ``ffv_<secret>``: the secret is ``secrets.token_urlsafe(32)`` (43 URL-safe
characters, 256 bits); only ``sha256(token)`` is stored (``Vehicle.token_hash``, unique and
indexed), and the token itself is shown once, when it is issued (``vehicles.services``).
A plain hash is enough: the secret is random, so there is nothing to guess from the hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "ffv_"
TOKEN_RE = re.compile(r"ffv_[A-Za-z0-9_-]{43}")
TOKEN_LENGTH = len(PREFIX) + 43


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def well_formed(raw: object) -> bool:
    """Whether ``raw`` has the shape of a token (checked before any hashing or query)."""
    return isinstance(raw, str) and len(raw) == TOKEN_LENGTH and TOKEN_RE.fullmatch(raw) is not None
