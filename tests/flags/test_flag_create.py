"""Creating a flag through the services: defaults, who, the audit entry, the snapshot vehicles
get, and each refusal's message. Written against mutants of flags.services that survived."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditEntry
from core.errors import PermissionDenied
from flags import services, snapshots
from flags.models import Flag
from tests.factories import FlagFactory, actor

pytestmark = pytest.mark.django_db


def test_flag_create__only_key_and_name__defaults_and_who_recorded() -> None:
    # Given a WRITE user
    writer = actor("WRITE", "writer")
    # When they create a flag giving only key and name
    flag = services.flag_create(actor=writer, key="ui.theme", name="Theme")
    # Then it has the documented defaults, and they created and last changed it
    stored = Flag.objects.get(key="ui.theme")
    assert (stored.type, stored.default_value, stored.description, stored.enabled, stored.safety_level,
            stored.environment, stored.ttl_seconds, stored.version) == (
        "boolean", False, "", False, "NON_CRITICAL", "production", 604800, 1)
    assert (stored.created_by_id, stored.updated_by_id) == (writer.user.pk, writer.user.pk)
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.flag_id, entry.object_type, entry.object_id, entry.before, entry.after) == (
        "CREATE_FLAG", flag.pk, "flag", str(flag.pk), None, services.flag_fields(stored))


def test_flag_create__enabled__served_in_the_published_snapshot_after_commit(on_commit: Any) -> None:
    # Given the production snapshot as vehicles hold it
    assert snapshots.compiled("production").evaluate("ui.theme", "KMHXX00XXXX000001").error_code == "FLAG_NOT_FOUND"
    # When an enabled flag is created there
    with on_commit():
        services.flag_create(actor=actor("WRITE"), key="ui.theme", name="Theme", enabled=True)
    # Then the published snapshot has it
    result = snapshots.compiled("production").evaluate("ui.theme", "KMHXX00XXXX000001")
    assert (result.value, result.reason, result.error_code) == (False, "DEFAULT", None)


def test_flag_create__read_user__permission_denied_and_nothing_saved() -> None:
    with pytest.raises(PermissionDenied) as refused:
        services.flag_create(actor=actor("READ", "reader"), key="ui.theme", name="Theme")
    assert str(refused.value) == "reader may not create flags"
    assert not Flag.objects.exists()
    assert not AuditEntry.objects.exists()


def test_flag_create__asil_d_enabled__refused_naming_enabled() -> None:
    with pytest.raises(ValidationError) as refused:
        services.flag_create(actor=actor("WRITE"), key="brake.blend", name="Brake", safety_level="ASIL_D",
                             enabled=True)
    assert refused.value.message_dict == {
        "enabled": ["ASIL-D flags are created disabled; enabling one needs a SAFETY approval"]}
    assert not Flag.objects.exists()


def test_flag_create__key_taken__refused_naming_key_and_nothing_saved() -> None:
    FlagFactory(key="ui.theme")
    with pytest.raises(ValidationError) as refused:
        services.flag_create(actor=actor("WRITE"), key="ui.theme", name="Again")
    assert refused.value.message_dict == {"key": ["a flag with key 'ui.theme' exists already (keys are never reused)"]}
    assert Flag.objects.count() == 1
    assert not AuditEntry.objects.exists()


def test_flag_create__description__saved() -> None:
    services.flag_create(actor=actor("WRITE"), key="ui.theme", name="Theme", description="Dark or light cockpit")
    assert Flag.objects.get(key="ui.theme").description == "Dark or light cockpit"
