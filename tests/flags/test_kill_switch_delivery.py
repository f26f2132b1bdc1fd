"""The kill-switch event: made in the engage's transaction, pushed only after commit, ACKs
recorded once per targeted vehicle."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from unittest.mock import patch

import pytest
from django.utils import timezone

from core import push
from flags import services
from flags.models import KillSwitchAck, KillSwitchEvent, Revision
from tests.factories import FlagFactory, actor
from vehicles.models import Vehicle

pytestmark = pytest.mark.django_db


def vehicles(n: int, environment: str = "production") -> list[Vehicle]:
    return [Vehicle.objects.create(vin=f"KMHDL0000000{environment[:1].upper()}{i:04d}", model="ev6", sw_version="2.9.1",
                                   region="eu", environment=environment) for i in range(n)]


def test_engage__event_with_version_and_targets__pushed_only_after_commit(on_commit: Any) -> None:
    # Given three production vehicles and one in staging
    vehicles(3)
    vehicles(1, "staging")
    flag = FlagFactory(key="brake.blend", environment="production")
    published: list[bytes] = []
    with patch.object(push, "publish", side_effect=published.append):
        with on_commit():
            outcome = services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="recall 26-01")
            # Then nothing is pushed before the commit
            assert published == []
    event = KillSwitchEvent.objects.get()
    assert outcome.kill_switch_event == event
    assert (event.environment, event.targeted_all, event.reason, event.sent) == ("production", 3, "recall 26-01", 0)
    assert event.version == Revision.objects.get(environment="production").value
    # And after it, one envelope with the signed KILL_SWITCH frame at that version
    kill = [json.loads(m) for m in published if json.loads(m).get("event") == event.pk]
    assert len(kill) == 1 and kill[0]["environment"] == "production"
    frame = json.loads(kill[0]["frame"])
    assert (frame["type"], frame["flag_key"], frame["version"], frame["reason"]) == (
        "KILL_SWITCH", "brake.blend", event.version, "recall 26-01")
    assert {"kid", "sig", "sent_at"} <= set(frame)
    event.refresh_from_db()
    assert event.pushed is True


def test_engage__push_channel_down__committed_event_not_pushed(on_commit: Any) -> None:
    flag = FlagFactory(key="brake.blend")
    with patch.object(push, "publish", side_effect=ConnectionError("redis down")), on_commit():
        outcome = services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="x")
    assert outcome.applied and KillSwitchEvent.objects.get().pushed is False


def test_engage_rolled_back__no_event_nothing_pushed() -> None:
    flag = FlagFactory(key="brake.blend")
    published: list[bytes] = []
    with patch.object(push, "publish", side_effect=published.append):
        with pytest.raises(RuntimeError), __import__("django.db").db.transaction.atomic():
            services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="x")
            raise RuntimeError("rolled back")
    assert (KillSwitchEvent.objects.count(), published) == (0, [])


def test_acks__once_per_vehicle__only_targeted_and_at_or_past_the_version() -> None:
    # Given a kill switch at version v and two vehicles registered before it
    first, second = vehicles(2)
    flag = FlagFactory(key="brake.blend")
    event = services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="x").kill_switch_event
    late = Vehicle.objects.create(vin="KMHDL0000000L0001", model="ev6", sw_version="1", region="eu",
                                  created_at=timezone.now() + timedelta(seconds=5))
    now = timezone.now()
    # When the first acknowledges twice, the second an older version, a late vehicle the version
    services.kill_switch_acks_record(acks=[(first.vin, "production", event.version, now),
                                           (first.vin, "production", event.version + 3, now),
                                           (second.vin, "production", event.version - 1, now),
                                           (late.vin, "production", event.version, now)])
    services.kill_switch_acks_record(acks=[(first.vin, "production", event.version, now)])
    # Then one acknowledgement, from the first vehicle
    assert list(KillSwitchAck.objects.values_list("vehicle_id", "event_id")) == [(first.vin, event.pk)]
    services.kill_switch_sent_record(sent={event.pk: 3})
    services.kill_switch_sent_record(sent={event.pk: 2})
    event.refresh_from_db()
    assert event.sent == 5


def test_acks__after_an_earlier_ack__only_the_kill_switches_between_the_two_versions_written() -> None:
    # Given two kill switches, the first acknowledged already by the vehicle's connection
    (first,) = vehicles(1)
    one = services.kill_switch_engage(actor=actor("WRITE"), flag=FlagFactory(key="brake.blend"),
                                      reason="x").kill_switch_event
    two = services.kill_switch_engage(actor=actor("WRITE"), flag=FlagFactory(key="seat.heat"),
                                      reason="y").kill_switch_event
    now = timezone.now()
    services.kill_switch_acks_record(acks=[(first.vin, "production", one.version, now, -1)])
    marked = now - timedelta(hours=1)
    KillSwitchAck.objects.filter(event=one).update(acked_at=marked)  # marks the row written by that first ACK
    # When the next ACK says which version it follows
    services.kill_switch_acks_record(acks=[(first.vin, "production", two.version, now, one.version)])
    # Then only the second kill switch gets a row; the first is not written again
    assert sorted(KillSwitchAck.objects.values_list("event_id", "acked_at")) == [(one.pk, marked), (two.pk, now)]
    # And an ACK that follows a version above both writes nothing
    KillSwitchAck.objects.all().delete()
    services.kill_switch_acks_record(acks=[(first.vin, "production", two.version, now, two.version)])
    assert not KillSwitchAck.objects.exists()
