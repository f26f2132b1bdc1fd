"""Signing what the server sends vehicles (SPEC §4 "Signed payloads"): the server's side.

``sign(obj)`` returns a new dict with ``kid`` (the active key's id) and ``sig`` (Ed25519 over
``agent_client.signing.canonical`` -- the one canonical form, which vehicles verify with);
``sign_bytes(obj)`` is the same, serialised once, for a frame sent unchanged to many vehicles.
Sign a payload once, where it is made (a snapshot when it is published, a frame before its
fan-out), never per vehicle or per request. ``public_keys()`` is what ``GET
/api/v1/signing-keys/`` and ``manage.py signing_key show`` list.

Where the keys come from (settings; docs/operations.md "Signing keys"):

- ``SIGNING_KEY_FILE``: a keyring file (JSON, mode 0600; a mounted secret) written by
  ``manage.py signing_key generate|rotate``: one active key with its private half, older keys
  with their public half only, listed inactive so vehicles can be moved over;
- or ``SIGNING_KEY``: the active private key itself (base64url of its 32 raw bytes), with
  ``SIGNING_OLD_PUBLIC_KEYS`` listed inactive;
- neither (a fresh machine, ``make run``): a development keyring generated on first use at
  ``SIGNING_DEV_KEY_FILE`` under ``VAR_DIR``, with a logged warning (and ``check --deploy``).

How a rotation reaches running processes: the keyring is loaded once per process and cached
with the file's (mtime, size, inode); each ``sign`` -- once per payload, not per request --
stats the file and re-reads it when it changed, so the next payload is signed with the new
key. Key material from the environment changes only with a restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from agent_client.signing import (
    ALGORITHM,
    KID,
    PUBLIC_KEY_BYTES,
    SIG,
    b64decode,
    b64encode,
    canonical,
    key_id,
    public_key_bytes,
)

logger = logging.getLogger(__name__)

KEYRING_FORMAT = 1


@dataclass(frozen=True)
class PublicKey:
    kid: str
    public_key: bytes  # the 32 raw bytes
    active: bool
    created_at: str | None  # ISO 8601; None for a key given in the environment

    def as_dict(self) -> dict[str, Any]:
        return {"kid": self.kid, "algorithm": ALGORITHM, "public_key": b64encode(self.public_key),
                "active": self.active, "created_at": self.created_at}


@dataclass(frozen=True)
class Keyring:
    source: str  # "SIGNING_KEY" or the keyring file's path
    private_key: Ed25519PrivateKey  # the active key's
    keys: tuple[PublicKey, ...]  # the active key first, then the older ones, newest first
    development: bool = False

    @property
    def active(self) -> PublicKey:
        return self.keys[0]


# -- signing ----------------------------------------------------------------------------------------


def sign(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``obj`` with ``kid`` of the active key and ``sig`` over the canonical JSON of
    everything else (a ``sig`` already in ``obj`` is replaced)."""
    ring = keyring()
    signed = {key: value for key, value in obj.items() if key != SIG}
    signed[KID] = ring.active.kid
    signed[SIG] = b64encode(ring.private_key.sign(canonical(signed)))
    return signed


def sign_bytes(obj: Mapping[str, Any]) -> bytes:
    """``sign(obj)`` as compact UTF-8 JSON: the frame to send as it is, to every vehicle."""
    return json.dumps(sign(obj), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def public_keys() -> list[dict[str, Any]]:
    """Every listed key: ``{kid, algorithm, public_key (base64url), active, created_at}``."""
    return [key.as_dict() for key in keyring().keys]


# -- the keyring of this process ----------------------------------------------------------------


def configured_file() -> Path | None:
    """The keyring file the settings name (the development one when nothing is set), or None
    when the key comes from the environment (``SIGNING_KEY``)."""
    if settings.SIGNING_KEY_FILE and settings.SIGNING_KEY:
        raise ImproperlyConfigured("set SIGNING_KEY or SIGNING_KEY_FILE, not both")
    if settings.SIGNING_KEY:
        return None
    return Path(settings.SIGNING_KEY_FILE or settings.SIGNING_DEV_KEY_FILE)


def _is_development() -> bool:
    return not settings.SIGNING_KEY and not settings.SIGNING_KEY_FILE


def _stamp() -> tuple[Any, ...]:
    config = (settings.SIGNING_KEY, tuple(settings.SIGNING_OLD_PUBLIC_KEYS), settings.SIGNING_KEY_FILE,
              str(settings.SIGNING_DEV_KEY_FILE))
    path = configured_file()
    if path is None:
        return config
    try:
        found = path.stat()
    except OSError:
        return (*config, None)
    return (*config, found.st_mtime_ns, found.st_size, found.st_ino)


_lock = threading.Lock()
_cached: tuple[tuple[Any, ...], Keyring] | None = None
_warned: set[str] = set()


def keyring() -> Keyring:
    """The keyring in use, loaded once and again only when its file (or the settings) changed.
    A keyring file that turns unreadable after a good load keeps the last good keys (logged):
    a kill switch must still go out while an operator fixes the file."""
    global _cached
    stamp = _stamp()
    cached = _cached
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _lock:
        cached = _cached
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            ring = load()
        except ImproperlyConfigured:
            if cached is None or cached[0][:4] != stamp[:4]:
                raise
            logger.exception("signing keyring %s changed and cannot be read; still signing with key %s",
                             cached[1].source, cached[1].active.kid)
            _cached = (stamp, cached[1])
            return cached[1]
        if ring.development and ring.source not in _warned:
            _warned.add(ring.source)
            logger.warning("payloads are signed with the development keyring %s, generated on this machine: "
                           "set SIGNING_KEY_FILE (docs/operations.md, \"Signing keys\")", ring.source)
        _cached = (stamp, ring)
        return ring


def forget() -> None:
    """Drop this process's keyring (tests that switch settings under it)."""
    global _cached
    _cached = None


def load() -> Keyring:
    """The keyring the settings name, read now (the development one is created if missing)."""
    path = configured_file()
    if path is None:
        return _from_environment(settings.SIGNING_KEY, settings.SIGNING_OLD_PUBLIC_KEYS)
    if _is_development() and not path.exists():
        try:
            generate_file(path)
            logger.warning("generated the development signing keyring %s (mode 0600)", path)
        except FileExistsError:
            pass  # another process made it first: read theirs
    ring = read_file(path)
    return Keyring(ring.source, ring.private_key, ring.keys, development=_is_development())


def _from_environment(private: str, old_public: list[str]) -> Keyring:
    try:
        raw = b64decode(private.strip())
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 private key is {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
    except ValueError as exc:
        raise ImproperlyConfigured(f"SIGNING_KEY: {exc}") from None
    private_key = Ed25519PrivateKey.from_private_bytes(raw)
    public = _public_raw(private_key)
    keys = [PublicKey(key_id(public), public, True, None)]
    for text in old_public:
        try:
            old = public_key_bytes(text)
        except ValueError as exc:
            raise ImproperlyConfigured(f"SIGNING_OLD_PUBLIC_KEYS: {exc}") from None
        if any(key.public_key == old for key in keys):
            raise ImproperlyConfigured(f"SIGNING_OLD_PUBLIC_KEYS: key {key_id(old)} is listed twice")
        keys.append(PublicKey(key_id(old), old, False, None))
    return Keyring("SIGNING_KEY", private_key, tuple(keys))


# -- keyring files (manage.py signing_key) ------------------------------------------------------------


def _public_raw(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_raw(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())


def _new_entry() -> dict[str, Any]:
    private_key = Ed25519PrivateKey.generate()
    public = _public_raw(private_key)
    return {"kid": key_id(public), "algorithm": ALGORITHM, "active": True,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "public_key": b64encode(public), "private_key": b64encode(_private_raw(private_key))}


def read_file(path: Path) -> Keyring:
    """A keyring file, checked: ``ImproperlyConfigured`` with one line saying what is wrong."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ImproperlyConfigured(f"{path}: no such keyring file (manage.py signing_key generate)") from None
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"{path}: cannot read the keyring: {exc}") from None
    return _parse(data, str(path))


def _parse(data: Any, source: str) -> Keyring:
    def bad(message: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"{source}: {message}")

    if not isinstance(data, dict) or data.get("format") != KEYRING_FORMAT or not isinstance(data.get("keys"), list):
        raise bad(f'not a keyring (expected {{"format": {KEYRING_FORMAT}, "keys": [...]}})')
    active: list[PublicKey] = []
    older: list[PublicKey] = []
    private_key: Ed25519PrivateKey | None = None
    for index, entry in enumerate(data["keys"]):
        if not isinstance(entry, dict):
            raise bad(f"key {index} is not an object")
        try:
            public = public_key_bytes(entry.get("public_key", ""))
        except (ValueError, AttributeError) as exc:
            raise bad(f"key {index}: public_key: {exc}") from None
        kid = key_id(public)
        if entry.get("kid") != kid:
            raise bad(f"key {index}: kid {entry.get('kid')!r} is not the id of its public key ({kid})")
        if entry.get("algorithm", ALGORITHM) != ALGORITHM:
            raise bad(f"key {kid}: algorithm {entry.get('algorithm')!r}, only {ALGORITHM} is supported")
        created_at = entry.get("created_at")
        key = PublicKey(kid, public, entry.get("active") is True, created_at if isinstance(created_at, str) else None)
        if any(other.kid == kid for other in (*active, *older)):
            raise bad(f"key {kid} is listed twice")
        if key.active:
            if not isinstance(entry.get("private_key"), str):
                raise bad(f"key {kid} is active but has no private_key")
            try:
                raw = b64decode(entry["private_key"])
                candidate = Ed25519PrivateKey.from_private_bytes(raw)
            except ValueError as exc:
                raise bad(f"key {kid}: private_key: {exc}") from None
            if _public_raw(candidate) != public:
                raise bad(f"key {kid}: private_key does not belong to public_key")
            private_key = candidate
            active.append(key)
        else:
            older.append(key)
    if len(active) != 1 or private_key is None:
        raise bad(f"exactly one key must be active, {len(active)} are")
    return Keyring(source, private_key, (active[0], *older))


def _write(path: Path, data: dict[str, Any], *, replace: bool) -> None:
    """Write the keyring whole (mode 0600): a reader sees the old file or the new one, never part.
    ``replace=False`` refuses an existing file (``FileExistsError``), also against a racing writer."""
    body = (json.dumps(data, indent=2) + "\n").encode()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise
            except OSError:  # a filesystem without hard links: exclusive, if not atomic
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                    handle.write(body)
    finally:
        temporary.unlink(missing_ok=True)


def generate_file(path: Path, *, force: bool = False) -> Keyring:
    """A new keyring with one new active key (``FileExistsError`` unless ``force``)."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists")
    _write(path, {"format": KEYRING_FORMAT, "keys": [_new_entry()]}, replace=force)
    return read_file(path)


def rotate_file(path: Path) -> tuple[Keyring, Keyring]:
    """(before, after): a new active key first; the old ones stay listed, inactive, without
    their private half (a retired key signs nothing again)."""
    before = read_file(path)
    retired = [{"kid": key.kid, "algorithm": ALGORITHM, "active": False, "created_at": key.created_at,
                "public_key": b64encode(key.public_key)} for key in before.keys]
    _write(path, {"format": KEYRING_FORMAT, "keys": [_new_entry(), *retired]}, replace=True)
    return before, read_file(path)


# -- manage.py check ----------------------------------------------------------------------------------


@checks.register(checks.Tags.security)
def check_signing_keys(**kwargs: Any) -> list[checks.CheckMessage]:
    """The configured keys load (a broken keyring would stop every publish)."""
    try:
        keyring()
    except ImproperlyConfigured as exc:
        return [checks.Error(f"signing keys: {exc}", hint="see docs/operations.md, \"Signing keys\"",
                             id="signing.E001")]
    return []


@checks.register(checks.Tags.security, deploy=True)
def check_signing_development_key(**kwargs: Any) -> list[checks.CheckMessage]:
    """``check --deploy``: a development keyring is per machine; every server must share the keys."""
    if not _is_development():
        return []
    return [checks.Warning(
        "payloads are signed with a development keyring generated under VAR_DIR on this machine",
        hint="set SIGNING_KEY_FILE to a keyring from `manage.py signing_key generate`; see docs/operations.md",
        id="signing.W001",
    )]
