"""SPEC §4 "Signed payloads", written out by hand for the tests that check what the server sends."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def spec_verify(obj: dict[str, Any], published: list[dict[str, Any]]) -> bool:
    """SPEC §4 "Signed payloads", followed by hand: nothing of FleetFlag's code is used, so a
    vehicle written from the SPEC alone accepts what the server sends."""
    public_keys = {key["kid"]: key["public_key"] for key in published}
    if "sig" not in obj or obj.get("kid") not in public_keys:
        return False
    unsigned = {name: value for name, value in obj.items() if name != "sig"}
    message = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    public_key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(public_keys[obj["kid"]]))
    try:
        public_key.verify(base64.urlsafe_b64decode(obj["sig"]), message)
    except InvalidSignature:
        return False
    return True
