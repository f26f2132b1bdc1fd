"""The unique-constraint backstops behind the service layer's own checks.

``flag_create`` checks that the key is free, and ``save_rule`` that no rule of the same type
holds the priority, before they insert. A writer on another connection can still take the
key or the priority between that check and the insert: the database's unique constraint
then refuses the insert, and the caller must get the same clear 400 as for the checked
case, with nothing changed, never an ``IntegrityError`` (a 500).

The other writer here runs on its own connection, in a thread started from the first
writer's ``pre_save`` signal, after the check has passed: a real interleaving of two
PostgreSQL transactions, not a simulated error. (A flag's rules are written under the
flag's row lock, so the rule race needs a writer that bypasses the service layer, such as
a maintenance script moving a rule's priority with a plain UPDATE.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models.signals import pre_save

from audit.models import AuditEntry
from flags import services
from flags.models import Flag, Rule
from tests.factories import FlagFactory, RuleFactory, actor

pytestmark = pytest.mark.usefixtures("committed_db_postgres")


def _on_other_connection(work: Callable[[], Any]) -> None:
    """Run ``work`` in its own thread (its own connection, its own committed transaction)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            failure.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the other writer hung"
    assert not failure, failure


@pytest.fixture
def just_before_insert() -> Iterator[Callable[[type, Callable[[], Any]], None]]:
    """Arrange for ``work`` to run on another connection right before the first insert of ``model``."""
    receivers: list[tuple[type, Any]] = []

    def arrange(model: type, work: Callable[[], Any]) -> None:
        fired = threading.Event()

        def receiver(sender: type, instance: Any, **_: Any) -> None:
            if instance.pk is None and not fired.is_set() and threading.current_thread() is threading.main_thread():
                fired.set()
                _on_other_connection(work)

        pre_save.connect(receiver, sender=model, weak=False)
        receivers.append((model, receiver))

    yield arrange
    for model, receiver in receivers:
        pre_save.disconnect(receiver, sender=model)


def test_flag_create__key_taken_between_check_and_insert__same_clear_error_nothing_written(
    just_before_insert: Callable[[type, Callable[[], Any]], None],
) -> None:
    writer = actor("WRITE", "writer")
    just_before_insert(Flag, lambda: FlagFactory(key="door.auto_lock", name="the other writer's"))
    entries_before = AuditEntry.objects.count()

    with pytest.raises(ValidationError) as refused:
        services.flag_create(actor=writer, key="door.auto_lock", name="Auto lock")

    assert refused.value.message_dict == {"key": ["a flag with key 'door.auto_lock' exists already"]}
    assert list(Flag.objects.values_list("key", "name")) == [("door.auto_lock", "the other writer's")]
    assert AuditEntry.objects.count() == entries_before


def test_rule_create__priority_taken_between_check_and_insert__same_clear_error_nothing_written(
    just_before_insert: Callable[[type, Callable[[], Any]], None],
) -> None:
    flag = FlagFactory(key="door.auto_lock")
    other = RuleFactory(flag=flag, type="vehicle_whitelist", priority=10,
                        conditions={"vins": ["KMHXX00XXXX000001"]})
    just_before_insert(Rule, lambda: Rule.objects.filter(pk=other.pk).update(priority=20))
    version_before, entries_before = flag.version, AuditEntry.objects.count()

    with pytest.raises(ValidationError) as refused:
        services.rule_create(actor=actor("WRITE", "writer"), flag=flag, type="vehicle_whitelist",
                             priority=20, conditions={"vins": ["KMHXX00XXXX000002"]})

    assert refused.value.message_dict == {"priority": ["another rule of this type has this priority"]}
    assert list(Rule.objects.filter(flag=flag).values_list("pk", "priority")) == [(other.pk, 20)]
    flag.refresh_from_db()
    assert flag.version == version_before
    assert AuditEntry.objects.count() == entries_before
