"""``register_vehicle`` and ``revoke_vehicle_token``: the token alone on the last line; one-line errors."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEntry
from vehicles import selectors
from vehicles.actions import VehicleAction
from vehicles.models import Vehicle

pytestmark = pytest.mark.django_db

VIN = "KMHAB81CBLU000001"
ARGS = ["--model", "ev6", "--sw-version", "2.9.1", "--region", "eu-west"]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_register_vehicle__valid__token_alone_on_last_line_and_audited_as_the_command() -> None:
    # When a vehicle is registered from the command line
    output = run("register_vehicle", VIN.lower(), *ARGS, "--environment", "staging")
    # Then the last line is the token alone, it opens the vehicle, and the command is the actor
    token = output.rstrip("\n").splitlines()[-1]
    assert token.startswith("ffv_") and token == token.strip()
    vehicle = selectors.vehicle_for_token(VIN, token)
    assert (vehicle.environment, vehicle.model) == ("staging", "ev6")
    entry = AuditEntry.objects.get(object_type="vehicle")
    assert (entry.action, entry.actor, entry.actor_type) == (
        VehicleAction.REGISTER_VEHICLE, "system:manage.py register_vehicle", "system")
    assert token not in "".join(output.splitlines()[:-1])


@pytest.mark.parametrize(("args", "message"), [
    (["KMHAB81CBLU00000I", *ARGS], "vin:"),
    (["KMHAB81CBLU000001", *ARGS, "--environment", "prod"], "environment:"),
    (["KMHAB81CBLU000001", "--model", "ev6", "--sw-version", "latest", "--region", "eu-west"], "sw_version:"),
    (["KMHAB81CBLU000001", "--model", "", "--sw-version", "2.9.1", "--region", "eu-west"], "model:"),
])
def test_register_vehicle__bad_input__one_line_error_nothing_stored(args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as refused:
        run("register_vehicle", *args)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not Vehicle.objects.exists()


def test_register_vehicle__duplicate__one_line_error_first_token_kept() -> None:
    token = run("register_vehicle", VIN, *ARGS).splitlines()[-1]
    with pytest.raises(CommandError, match="registered already"):
        run("register_vehicle", VIN, *ARGS)
    assert selectors.vehicle_for_token(VIN, token).vin == VIN


def test_revoke_vehicle_token__live__revoked_then_error_on_repeat_and_unknown() -> None:
    token = run("register_vehicle", VIN, *ARGS).splitlines()[-1]
    assert "revoked the token of vehicle KMHAB81CBLU000001" in run("revoke_vehicle_token", VIN.lower())
    with pytest.raises(selectors.VehicleRefused):
        selectors.vehicle_for_token(VIN, token)
    with pytest.raises(CommandError, match="revoked already"):
        run("revoke_vehicle_token", VIN)
    with pytest.raises(CommandError, match="no vehicle"):
        run("revoke_vehicle_token", "KMHAB81CBLU000009")


def test_register_vehicle__as_a_process__exit_codes_and_last_line(tmp_path: Path) -> None:
    # Given a fresh SQLite database (a subprocess does not see the test transaction)
    env = {"FLEETFLAG_SETTINGS": "test", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "REDIS_URL": "",
           "PATH": "/usr/bin:/bin"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, timeout=300)
    # When it registers a vehicle, then exit 0 and the last line is the token
    ok = subprocess.run([*manage, "register_vehicle", VIN, *ARGS], env=env, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("ffv_")
    # And a duplicate exits non-zero with a one-line error
    dup = subprocess.run([*manage, "register_vehicle", VIN, *ARGS], env=env, capture_output=True, text=True,
                         timeout=120)
    assert dup.returncode != 0
    assert dup.stderr.strip().count("\n") == 0 and "registered already" in dup.stderr
