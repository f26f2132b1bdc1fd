"""Signed payloads (SPEC §4 "Signed payloads"): the one canonical form, and verification.

Every snapshot the server serves (the ``sync/`` body, SYNC frames) and every KILL_SWITCH and
FLAG_UPDATE frame carries ``kid`` (the id of the key that signed it) and ``sig``: the base64url
Ed25519 signature over ``canonical(obj)`` -- the UTF-8 of
``json.dumps(obj without "sig", sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
``kid`` is inside what is signed, so it cannot be swapped for another key's id.

The server signs with ``core.signing`` (which uses ``canonical`` from here, so there is one
canonical form); a vehicle verifies with ``verify`` against the keys it pins. A key's id is
derived from its public key (``key_id``), so a vehicle given only public keys
(``FleetFlagClient(public_keys=[...])``) knows their ids too (``pinned``).

Standard library and ``cryptography`` only: no Django, nothing of the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ALGORITHM = "Ed25519"
KID = "kid"
SIG = "sig"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

Reason = Literal["unsigned", "unknown_kid", "malformed", "bad_signature"]


class SignatureError(ValueError):
    """Why a payload was refused: ``reason`` is one of ``Reason``."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the object without ``sig``, as the SPEC's recipe says."""
    unsigned = {key: value for key, value in obj.items() if key != SIG}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def b64encode(raw: bytes) -> str:
    """base64url (RFC 4648 §5) with its padding, as the server writes keys and signatures."""
    return base64.urlsafe_b64encode(raw).decode("ascii")


def b64decode(text: str) -> bytes:
    """base64url, padded or not; the standard alphabet (``+/``) is accepted for pinned keys
    copied from elsewhere. Anything else raises ``ValueError`` (no characters are skipped)."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not a base64 string")
    stripped = text.rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None


def key_id(public_key: bytes) -> str:
    """A key's id: the first 16 hex digits of the SHA-256 of its 32 raw public bytes."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_key_bytes(text: str) -> bytes:
    """The 32 raw bytes of a base64 Ed25519 public key; ``ValueError`` if it is not one."""
    raw = b64decode(text.strip())
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
    return raw


def pinned(public_keys: Iterable[str]) -> dict[str, bytes]:
    """``{kid: raw public key}`` of base64 public keys (``ValueError`` on one that is not)."""
    keys: dict[str, bytes] = {}
    for text in public_keys:
        raw = public_key_bytes(text)
        keys[key_id(raw)] = raw
    return keys


def check(obj: Mapping[str, Any], public_keys: Mapping[str, bytes]) -> None:
    """Return if ``obj`` is signed by one of ``public_keys`` (``{kid: raw public key}``);
    else raise ``SignatureError`` saying why."""
    if not isinstance(obj, Mapping):
        raise SignatureError("malformed", "a signed payload is a JSON object")
    kid = obj.get(KID)
    sig = obj.get(SIG)
    if kid is None or sig is None:
        raise SignatureError("unsigned", "the payload carries no kid and sig")
    if not isinstance(kid, str) or not isinstance(sig, str):
        raise SignatureError("malformed", "kid and sig must be strings")
    public = public_keys.get(kid)
    if public is None:
        raise SignatureError("unknown_kid", f"no pinned key has the id {kid!r}")
    try:
        signature = b64decode(sig)
        if len(signature) != SIGNATURE_BYTES:
            raise ValueError(f"an Ed25519 signature is {SIGNATURE_BYTES} bytes, not {len(signature)}")
        message = canonical(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SignatureError("malformed", f"the payload cannot be checked: {exc}") from None
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except ValueError as exc:  # a pinned key that is not 32 bytes
        raise SignatureError("malformed", f"pinned key {kid!r} is not an Ed25519 public key: {exc}") from None
    except InvalidSignature:
        raise SignatureError("bad_signature", f"the signature does not match key {kid!r}") from None


def verify(obj: Mapping[str, Any], public_keys: Mapping[str, bytes]) -> bool:
    """True when ``obj`` is signed by one of ``public_keys``; False for an unsigned payload, an
    unknown kid, bad base64 or a wrong signature. Never raises."""
    try:
        check(obj, public_keys)
    except SignatureError:
        return False
    return True
