"""A snapshot publish that fails after commit (cache down) never undoes the change nor reports
it as failed: Django logs a failed robust on-commit hook, and vehicles converge later."""

from __future__ import annotations

import pytest

from flags import services, snapshots
from flags.models import Flag
from tests.factories import FlagFactory, actor


def test_flag_update__publish_fails_after_commit__change_kept_and_no_error(
    committed_db: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a cache that is down when the snapshot is published after commit
    flag = FlagFactory(key="ui.theme")

    def down(environment: str) -> None:
        raise ConnectionError("cache down")

    monkeypatch.setattr(snapshots, "publish", down)
    # When a change is committed (a real commit: Django runs the on-commit hooks)
    outcome = services.flag_update(actor=actor("WRITE"), flag=flag, changes={"name": "Theme"})
    # Then the change stands and is reported as made; the failed publish is logged
    stored = Flag.objects.get(pk=flag.pk)
    assert (outcome.applied, stored.name, stored.version) == (True, "Theme", 2)
    assert [type(r.exc_info[1]) for r in caplog.records if r.exc_info] == [ConnectionError]
