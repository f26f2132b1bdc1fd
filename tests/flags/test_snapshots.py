"""Published snapshots: built from committed data only, served without the database."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from flags import services, snapshots
from tests.factories import FlagFactory, RuleFactory, actor

pytestmark = pytest.mark.django_db


def test_flag_to_dict__rules__ordered_by_priority_then_id() -> None:
    flag = FlagFactory(key="order.test")
    low = RuleFactory(flag=flag, priority=1)
    high = RuleFactory(flag=flag, priority=9, type="vehicle_target", conditions={"models": ["ev6"]})
    tie = RuleFactory(flag=flag, priority=1, type="user_attribute",
                      conditions={"attribute": "trim", "operator": "eq", "value": "gt"})
    data = snapshots.flag_to_dict(flag)
    assert [rule["id"] for rule in data["rules"]] == [high.pk, low.pk, tie.pk]
    assert "value" not in data["rules"][0]  # absent, not null: the evaluator decides the default


def test_document__published__served_without_queries(django_assert_num_queries: Any) -> None:
    FlagFactory(key="a.flag")
    first = snapshots.document("production")
    with django_assert_num_queries(0):
        again = snapshots.document("production")
        etag = snapshots.current_etag("production")
    assert again.etag == first.etag == etag
    assert [flag["key"] for flag in first.parsed()["flags"]] == ["a.flag"]


def test_publish__after_commit__new_etag_and_version(on_commit: Any) -> None:
    flag = FlagFactory(key="b.flag")
    before = snapshots.document("production")
    with on_commit():
        services.flag_update(actor=actor("WRITE"), flag=flag, changes={"name": "Renamed"})
    after = snapshots.document("production")
    assert after.etag != before.etag
    assert after.version == before.version + 1


def test_publish__rolled_back_change__not_published(django_capture_on_commit_callbacks: Any) -> None:
    flag = FlagFactory(key="c.flag", enabled=True)
    before = snapshots.document("production")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            services.flag_set_enabled(actor=actor("WRITE"), flag=flag, enabled=False)
            raise RuntimeError("the surrounding work failed")
    assert callbacks == []
    assert snapshots.document("production").etag == before.etag
    assert snapshots.compiled("production").evaluate("c.flag", None).reason == "DEFAULT"


def test_etag__same_flags__same_tag_on_every_process() -> None:
    FlagFactory(key="d.flag")
    first = snapshots.publish("production")
    snapshots.forget_local()
    second = snapshots.publish("production")
    assert first.etag == second.etag  # generated_at is outside the tag
