"""``manage.py signing_key generate|show|rotate``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

from core import signing
from flags import snapshots
from tests.factories import FlagFactory


def run(*args: str) -> str:
    out = StringIO()
    call_command("signing_key", *args, stdout=out)
    return out.getvalue()


def test_generate__new_file__written_0600_with_one_active_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    output = run("generate", "--file", str(path))
    ring = signing.read_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [key.active for key in ring.keys] == [True]
    assert f"new active key {ring.active.kid}" in output
    assert json.loads(path.read_text())["keys"][0]["private_key"] not in output


def test_generate__existing_file__refused_unchanged_unless_force(tmp_path: Path) -> None:
    # Given a keyring file
    path = tmp_path / "keys.json"
    run("generate", "--file", str(path))
    before = path.read_bytes()
    # When generate runs again, it refuses, naming the way out, and leaves the file as it was
    with pytest.raises(CommandError, match=r"exists: keep it, rotate it, or replace it with --force"):
        run("generate", "--file", str(path))
    assert path.read_bytes() == before
    # and with --force it replaces it
    run("generate", "--file", str(path), "--force")
    assert path.read_bytes() != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generate__directory_missing__one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="does not exist"):
        run("generate", "--file", str(tmp_path / "nope" / "keys.json"))


def test_generate__configured_file__used_when_no_file_given(keyring_file: Path) -> None:
    keyring_file.unlink()
    run("generate")
    assert signing.read_file(keyring_file).active.kid == signing.keyring().active.kid


def test_show__lists_public_keys_never_a_private_key(keyring_file: Path) -> None:
    # Given a rotated keyring (an active and an inactive key)
    run("rotate", "--no-publish")
    private = json.loads(keyring_file.read_text())["keys"][0]["private_key"]
    # When it is shown
    lines = run("show").splitlines()
    # Then one line per key, as the API publishes them, and no private key
    published = signing.public_keys()
    assert lines == [f"signing keys from {keyring_file}:"] + [
        f"{key['kid']} {'active' if key['active'] else 'inactive'} {key['created_at']} {key['public_key']}"
        for key in published
    ]
    assert private not in "\n".join(lines)


def test_show__keys_from_the_environment__listed() -> None:
    lines = run("show").splitlines()
    assert lines[0] == "signing keys from SIGNING_KEY:"
    assert lines[1].startswith(f"{signing.keyring().active.kid} active - ")
    assert django_settings.SIGNING_KEY not in "\n".join(lines)


@pytest.mark.django_db
def test_rotate__configured_file__old_key_inactive_and_snapshots_republished(keyring_file: Path) -> None:
    # Given a published snapshot signed with the first key
    FlagFactory(key="p.one")
    first_kid = json.loads(snapshots.publish("production").body)["kid"]
    # When the key is rotated
    output = run("rotate")
    # Then the old key is listed inactive, and the snapshot served now carries the new kid
    listed = [(key["kid"], key["active"]) for key in signing.public_keys()]
    assert listed[1] == (first_kid, False) and listed[0][1] is True
    assert json.loads(snapshots.document("production").body)["kid"] == listed[0][0]
    assert "re-published the snapshots of development, staging, production" in output


def test_rotate__no_publish__snapshot_untouched(keyring_file: Path) -> None:
    # no database access needed at all: nothing is published
    run("rotate", "--no-publish")
    assert len(signing.public_keys()) == 2


def test_rotate__keys_from_the_environment__refused() -> None:
    with pytest.raises(CommandError, match="comes from SIGNING_KEY"):
        run("rotate")


def test_rotate__missing_or_damaged_file__one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such keyring file") as caught:
        run("rotate", "--file", str(tmp_path / "missing.json"))
    assert "\n" not in str(caught.value)
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(CommandError, match="not a keyring"):
        run("rotate", "--file", str(tmp_path / "bad.json"))


@pytest.mark.parametrize("args", [("show", "--force"), ("rotate", "--force"), ("generate", "--no-publish")])
def test_options__for_another_action__refused(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError, match="applies to"):
        run(*args)


def test_command_line__refusal__exit_1_and_one_line_on_stderr(tmp_path: Path) -> None:
    # Given an existing keyring file
    path = tmp_path / "keys.json"
    signing.generate_file(path)
    # When a real manage.py process is asked to generate over it
    env = {**os.environ, "FLEETFLAG_SETTINGS": "test", "FLEETFLAG_VAR_DIR": str(tmp_path / "var")}
    completed = subprocess.run([sys.executable, "manage.py", "signing_key", "generate", "--file", str(path)],
                               cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                               timeout=60)
    # Then it exits 1 with one line saying why
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        f"CommandError: {path} exists: keep it, rotate it, or replace it with --force "
        "(which drops every older key vehicles may pin)"
    ]
