"""What one audit entry says about who did what to which object: every field as recorded."""

from __future__ import annotations

import pytest
from django.db import transaction

from audit import services
from audit.models import AuditEntry
from core.actors import Actor
from tests.factories import FlagFactory, UserFactory

pytestmark = pytest.mark.django_db


def _record(actor: Actor, **fields: object) -> AuditEntry:
    with transaction.atomic():
        return services.record(actor=actor, action="UPDATE_FLAG", **fields)  # type: ignore[arg-type]


@pytest.mark.django_db(transaction=True)
def test_record__outside_a_transaction__refused_saying_why(committed_db: None) -> None:
    with pytest.raises(RuntimeError) as refused:
        services.record(actor=Actor.for_system("tests"), action="UPDATE_FLAG")
    assert str(refused.value) == "audit.record must run inside the transaction of the change it records"
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    ("system", "actor_type"),
    [("vehicle:KMHXX00XXXX000001", "vehicle"), ("demo data", "system"), ("vehicles sweep", "system")],
)
def test_record__system_actor__vehicle_processes_apart_from_the_rest(system: str, actor_type: str) -> None:
    entry = _record(Actor.for_system(system))
    entry.refresh_from_db()
    assert (entry.actor_type, entry.actor, entry.user_id, entry.api_key_id) == (actor_type, f"system:{system}", None,
                                                                                None)


def test_record__flag_and_object__key_id_and_object_as_text() -> None:
    flag = FlagFactory(key="door.auto_lock")
    user = UserFactory(username="engineer")
    entry = _record(Actor.for_user(user), flag=flag, object_type="rule", object_id=42, before={"a": 1}, after=None)
    entry.refresh_from_db()
    assert (entry.actor_type, entry.actor, entry.user_id) == ("user", "engineer", user.pk)
    assert (entry.flag_key, entry.flag_id, entry.object_type, entry.object_id) == ("door.auto_lock", flag.pk, "rule",
                                                                                  "42")
    assert (entry.before, entry.after) == ({"a": 1}, None)


def test_record__no_flag__empty_key_and_no_id() -> None:
    entry = _record(Actor.for_system("tests"), object_type="user", object_id="")
    entry.refresh_from_db()
    assert (entry.flag_key, entry.flag_id, entry.object_id) == ("", None, "")


def test_record__long_actor_label_and_request_details__cut_to_their_columns() -> None:
    actor = Actor(system="x" * 400, user_agent="u" * 600, request_id="r" * 200, ip="192.0.2.7")
    entry = _record(actor)
    entry.refresh_from_db()
    assert entry.actor == ("system:" + "x" * 400)[:255]
    assert len(entry.actor) == 255
    assert (entry.user_agent, entry.request_id, entry.ip) == ("u" * 512, "r" * 128, "192.0.2.7")
    assert services.verify_chain().ok
