"""Where the keys come from, and how a rotation reaches a running process and the vehicles."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from agent_client import signing as agent
from core import signing
from flags import snapshots
from tests.factories import FlagFactory
from tests.signing.conftest import spec_verify
from tests.signing.test_sign_verify import KILL_SWITCH


def test_development__nothing_configured__keyring_generated_once_mode_0600_with_a_warning(
        dev_settings: Path, caplog: Any) -> None:
    # Given a fresh machine: no SIGNING_KEY, no SIGNING_KEY_FILE, no development keyring yet
    assert not dev_settings.exists()
    # When something is signed
    with caplog.at_level(logging.WARNING, logger="core.signing"):
        signed = signing.sign(KILL_SWITCH)
    # Then the development keyring was generated, private to its owner, and the logs say so
    assert stat.S_IMODE(dev_settings.stat().st_mode) == 0o600
    assert signing.keyring().development is True
    assert any("development keyring" in record.getMessage() for record in caplog.records)
    # and a second process (the cache dropped) reads the same key rather than making another
    signing.forget()
    assert signing.keyring().active.kid == signed["kid"]
    assert spec_verify(signed, signing.public_keys())


def test_environment__signing_key__active_with_old_public_keys_inactive(settings: Any) -> None:
    # Given the active private key and one older public key in the environment
    older_public = agent.b64encode(bytes(range(32)))
    settings.SIGNING_OLD_PUBLIC_KEYS = [older_public]
    # Then both are listed, the older inactive, and the active one signs
    listed = signing.public_keys()
    assert [(key["active"], key["created_at"]) for key in listed] == [(True, None), (False, None)]
    assert listed[1] == {"kid": agent.key_id(bytes(range(32))), "algorithm": "Ed25519",
                         "public_key": older_public, "active": False, "created_at": None}
    assert signing.sign(KILL_SWITCH)["kid"] == listed[0]["kid"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"SIGNING_KEY": "short"}, "SIGNING_KEY:"),
    ({"SIGNING_KEY": "!" * 44}, "SIGNING_KEY: not base64"),
    ({"SIGNING_OLD_PUBLIC_KEYS": ["AAAA"]}, "SIGNING_OLD_PUBLIC_KEYS:"),
    ({"SIGNING_KEY_FILE": "/nonexistent/keys.json"}, "set SIGNING_KEY or SIGNING_KEY_FILE, not both"),
])
def test_environment__bad_configuration__improperly_configured_one_line(settings: Any, overrides: dict[str, Any],
                                                                       message: str) -> None:
    for name, value in overrides.items():
        setattr(settings, name, value)
    with pytest.raises(ImproperlyConfigured) as caught:
        signing.sign(KILL_SWITCH)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_key_file__configured_but_missing__refused_not_generated(settings: Any, tmp_path: Path) -> None:
    settings.SIGNING_KEY = ""
    settings.SIGNING_KEY_FILE = str(tmp_path / "mounted" / "keys.json")
    with pytest.raises(ImproperlyConfigured, match="no such keyring file"):
        signing.public_keys()
    assert not (tmp_path / "mounted").exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["keys"][0].update(active=False), "exactly one key must be active, 0 are"),
    (lambda d: d["keys"][0].update(kid="someone-else"), "is not the id of its public key"),
    (lambda d: d["keys"][0].pop("private_key"), "is active but has no private_key"),
    (lambda d: d["keys"].append(dict(d["keys"][0])), "is listed twice"),
    (lambda d: d.update(format=2), "not a keyring"),
    (lambda d: d["keys"][0].update(algorithm="RS256"), "only Ed25519 is supported"),
])
def test_key_file__damaged__refused_naming_what_is_wrong(keyring_file: Path, edit: Any, message: str) -> None:
    data = json.loads(keyring_file.read_text())
    edit(data)
    keyring_file.write_text(json.dumps(data))
    with pytest.raises(ImproperlyConfigured, match=message):
        signing.load()


def test_key_file__private_key_of_another_public_key__refused(keyring_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    signing.generate_file(other)
    data = json.loads(keyring_file.read_text())
    data["keys"][0]["private_key"] = json.loads(other.read_text())["keys"][0]["private_key"]
    keyring_file.write_text(json.dumps(data))
    with pytest.raises(ImproperlyConfigured, match="does not belong to public_key"):
        signing.load()


def test_rotation__running_process__next_payload_signed_with_the_new_key_without_restart(keyring_file: Path) -> None:
    # Given a process that signed with the first key (and cached it)
    old_payload = signing.sign(KILL_SWITCH)
    old_kid = old_payload["kid"]
    # When the keyring file is rotated (by another process: the command)
    _, after = signing.rotate_file(keyring_file)
    # Then the next payload carries the new kid, the old key is listed inactive, and both the new
    # payload and the old one verify with what is published
    new_payload = signing.sign(KILL_SWITCH)
    assert new_payload["kid"] == after.active.kid != old_kid
    published = signing.public_keys()
    assert [(key["kid"], key["active"]) for key in published] == [(after.active.kid, True), (old_kid, False)]
    assert spec_verify(new_payload, published) and spec_verify(old_payload, published)
    # and a vehicle that pins only the old key refuses the new payload but keeps the old one
    only_old = agent.pinned([key["public_key"] for key in published if key["kid"] == old_kid])
    assert agent.verify(old_payload, only_old) and not agent.verify(new_payload, only_old)


def test_rotation__retired_keys__public_half_only_and_file_stays_0600(keyring_file: Path) -> None:
    signing.rotate_file(keyring_file)
    signing.rotate_file(keyring_file)
    entries = json.loads(keyring_file.read_text())["keys"]
    assert [("private_key" in entry, entry["active"]) for entry in entries] == [(True, True), (False, False),
                                                                                 (False, False)]
    assert stat.S_IMODE(os.stat(keyring_file).st_mode) == 0o600
    created = [entry["created_at"] for entry in entries]
    assert created == sorted(created, reverse=True)  # newest first


def test_key_file__broken_after_a_good_load__last_good_keys_kept_and_logged(keyring_file: Path, caplog: Any) -> None:
    # Given a process that loaded its keys
    kid = signing.keyring().active.kid
    # When the file is damaged under it
    keyring_file.write_text("{not json")
    # Then it keeps signing (a kill switch must still go out) with the keys it had, and says so
    with caplog.at_level(logging.ERROR, logger="core.signing"):
        assert signing.sign(KILL_SWITCH)["kid"] == kid
    assert any("cannot be read" in record.getMessage() for record in caplog.records)
    # while a fresh process refuses to start signing from it
    signing.forget()
    with pytest.raises(ImproperlyConfigured, match="cannot read the keyring"):
        signing.keyring()


@pytest.mark.django_db
def test_rotation__snapshot_republished__new_kid_and_new_etag(keyring_file: Path) -> None:
    # Given a published snapshot
    FlagFactory(key="p.one")
    before = snapshots.publish("production")
    assert snapshots.publish("production").etag == before.etag  # same flags, same key: same tag
    # When the key is rotated and the snapshot published again
    signing.rotate_file(keyring_file)
    after = snapshots.publish("production")
    # Then it is signed with the new key, and its ETag changed so polling vehicles fetch it
    assert json.loads(after.body)["kid"] == signing.keyring().active.kid != json.loads(before.body)["kid"]
    assert after.etag != before.etag
    assert spec_verify(json.loads(after.body), signing.public_keys())


def test_check__broken_keyring__error_e001(settings: Any, tmp_path: Path) -> None:
    settings.SIGNING_KEY = ""
    settings.SIGNING_KEY_FILE = str(tmp_path / "missing.json")
    assert [message.id for message in signing.check_signing_keys()] == ["signing.E001"]


def test_check_deploy__development_keyring__warning_w001(dev_settings: Path, keyring_file: Path,
                                                         settings: Any) -> None:
    assert signing.check_signing_development_key() == []  # a keyring file is configured
    settings.SIGNING_KEY_FILE = ""
    assert [message.id for message in signing.check_signing_development_key()] == ["signing.W001"]
