"""Sticky bucketing by VIN: the exact hash every FleetFlag evaluator must use.

``bucket = int.from_bytes(sha256(f"{flag_key}.{salt}.{vin}").digest()[:8], "big") % 10000``
A rollout of p percent includes the VIN when ``bucket < p * 100``.
"""

from __future__ import annotations

from hashlib import sha256

BUCKETS = 10_000
ROLLOUT_SALT = "rollout"
VARIANT_SALT = "variant"


def bucket(flag_key: str, salt: str, vin: str) -> int:
    digest = sha256(f"{flag_key}.{salt}.{vin}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def percent_to_buckets(percent: float) -> int:
    """How many of the 10,000 buckets a percentage covers (percentages have <= 2 decimals)."""
    return round(percent * 100)
