"""Fixtures of the signing tests: the SPEC's verification recipe written out, and keyrings."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core import signing


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


@pytest.fixture(autouse=True)
def _fresh_keyring() -> Iterator[None]:
    signing.forget()
    yield
    signing.forget()


@pytest.fixture
def keyring_file(settings: Any, tmp_path: Path) -> Path:
    """Keys from a keyring file (as a mounted secret), generated for this test."""
    path = tmp_path / "signing-keys.json"
    signing.generate_file(path)
    settings.SIGNING_KEY = ""
    settings.SIGNING_KEY_FILE = str(path)
    return path


@pytest.fixture
def dev_settings(settings: Any, tmp_path: Path) -> Path:
    """Nothing configured (a fresh machine): the development keyring's path, not yet there."""
    settings.SIGNING_KEY = ""
    settings.SIGNING_KEY_FILE = ""
    settings.SIGNING_DEV_KEY_FILE = tmp_path / "var" / "signing-keys.dev.json"
    settings.SIGNING_DEV_KEY_FILE.parent.mkdir()
    path: Path = settings.SIGNING_DEV_KEY_FILE
    return path
