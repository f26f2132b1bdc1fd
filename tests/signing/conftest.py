"""Fixtures of the signing tests: the SPEC's verification recipe written out, and keyrings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import signing
from tests.spec_signing import spec_verify  # noqa: F401 - the signing tests import it from here


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
