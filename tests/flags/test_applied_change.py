"""What an applied change leaves behind: version, who changed it, revisions, snapshots
published on commit for every environment it touched, and its audit entry. Written against mutants of flags.services that survived."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEntry
from core.actors import Actor
from flags import services, snapshots
from flags.models import Flag, Revision
from tests.factories import FlagFactory, actor

pytestmark = pytest.mark.django_db

VIN = "KMHXX00XXXX000001"


def revisions() -> dict[str, int]:
    return dict(Revision.objects.values_list("environment", "value"))


def test_flag_update__twice__revision_of_its_environment_up_by_one_each_time() -> None:
    flag = FlagFactory(key="ui.theme", environment="staging")
    Revision.objects.create(environment="production", value=7)
    writer = actor("WRITE")
    services.flag_update(actor=writer, flag=flag, changes={"name": "One"})
    first = revisions()
    services.flag_update(actor=writer, flag=flag, changes={"name": "Two"})
    assert (first, revisions()) == ({"production": 7, "staging": 1}, {"production": 7, "staging": 2})


def test_flag_update__moved_to_another_environment__both_revisions_and_snapshots_follow(on_commit: Any) -> None:
    # Given an enabled flag in production, in the snapshots vehicles hold
    flag = FlagFactory(key="ui.theme", environment="production", enabled=True)
    Revision.objects.create(environment="production", value=3)
    Revision.objects.create(environment="staging", value=5)
    assert snapshots.compiled("production").evaluate("ui.theme", VIN).error_code is None
    assert snapshots.compiled("staging").evaluate("ui.theme", VIN).error_code == "FLAG_NOT_FOUND"
    # When it is moved to staging
    with on_commit():
        services.flag_update(actor=actor("WRITE"), flag=flag, changes={"environment": "staging"})
    # Then both environments move on: production no longer serves it, staging does
    assert revisions() == {"production": 4, "staging": 6}
    assert snapshots.compiled("production").evaluate("ui.theme", VIN).error_code == "FLAG_NOT_FOUND"
    assert snapshots.compiled("staging").evaluate("ui.theme", VIN).reason == "DEFAULT"


def test_flag_update__by_user__updated_by_them_by_system__kept() -> None:
    # Given a flag last changed by one user
    first = actor("WRITE", "first")
    flag = FlagFactory(key="ui.theme", updated_by=first.user)
    second = actor("WRITE", "second")
    # When another user changes it, then a system process
    services.flag_update(actor=second, flag=flag, changes={"name": "Two"})
    by_user = Flag.objects.get(pk=flag.pk).updated_by_id
    services.flag_update(actor=Actor.for_system("import"), flag=flag, changes={"name": "Three"})
    # Then the user is recorded; the system process leaves the last person in place
    assert (by_user, Flag.objects.get(pk=flag.pk).updated_by_id) == (second.user.pk, second.user.pk)


def test_flag_update__applied__audit_entry_names_the_flag_before_and_after() -> None:
    flag = FlagFactory(key="ui.theme", name="Theme")
    before = services.flag_fields(flag)
    services.flag_update(actor=actor("WRITE", "writer"), flag=flag, changes={"name": "Dark theme"})
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.flag_id, entry.flag_key, entry.object_type, entry.object_id,
            entry.before, entry.after) == ("UPDATE_FLAG", "writer", flag.pk, "ui.theme", "flag", str(flag.pk),
                                           before, {**before, "name": "Dark theme"})
