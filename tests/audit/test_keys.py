"""The audit key: settings, rotation by key id, the development default, legacy SHA-256 entries."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from audit import services
from audit.models import GENESIS_HASH, AuditEntry, ChainHead
from fleetflag.settings.base import AUDIT_HMAC_DEV_KEY, audit_hmac_settings
from tests.audit.conftest import KEY_1, KEY_2, append, move_head, sha256_of, triggers_off, update_entry, use_keys

pytestmark = pytest.mark.django_db


def run_verify_audit() -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("verify_audit", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# -- settings ---------------------------------------------------------------------------------


def test_audit_hmac_settings__nothing_set__development_key_flagged() -> None:
    assert audit_hmac_settings({}) == ("dev", {"dev": AUDIT_HMAC_DEV_KEY}, True)


def test_audit_hmac_settings__key_kid_and_old_keys__all_by_kid() -> None:
    # Given the current key under k2 and the key it replaced under k1
    environ = {"AUDIT_HMAC_KEY": KEY_2, "AUDIT_HMAC_KID": "k2", "AUDIT_HMAC_OLD_KEYS": f"k1:{KEY_1}"}
    # Then both are configured, k2 is current, and it is not the development key
    assert audit_hmac_settings(environ) == ("k2", {"k2": KEY_2, "k1": KEY_1}, False)


def test_audit_hmac_settings__key_files__read_comments_skipped(tmp_path: Path) -> None:
    # Given the keys as mounted secrets
    (tmp_path / "current").write_text(f"  {KEY_2}\n")
    (tmp_path / "old").write_text(f"# retired 2026-11\nk1:{KEY_1}\n\n2025-a : {'x' * 40}\n")
    environ = {"AUDIT_HMAC_KEY_FILE": str(tmp_path / "current"), "AUDIT_HMAC_KID": "2026-b",
               "AUDIT_HMAC_OLD_KEYS_FILE": str(tmp_path / "old")}
    # Then whitespace and comment lines are ignored
    assert audit_hmac_settings(environ) == ("2026-b", {"2026-b": KEY_2, "k1": KEY_1, "2025-a": "x" * 40}, False)


def test_audit_hmac_settings__key_without_kid__k1() -> None:
    assert audit_hmac_settings({"AUDIT_HMAC_KEY": KEY_1}) == ("k1", {"k1": KEY_1}, False)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AUDIT_HMAC_KEY": KEY_1, "AUDIT_HMAC_KEY_FILE": "/run/secrets/audit"}, "not both"),
        ({"AUDIT_HMAC_KEY": "short"}, "audit key 'k1' is shorter than 32"),
        ({"AUDIT_HMAC_KEY": KEY_1, "AUDIT_HMAC_KID": "k 1"}, "key id 'k 1' must match"),
        ({"AUDIT_HMAC_KEY": KEY_1, "AUDIT_HMAC_KID": "dev"}, "the development audit key is public"),
        ({"AUDIT_HMAC_KEY": AUDIT_HMAC_DEV_KEY}, "the development audit key is public"),
        ({"AUDIT_HMAC_KEY": KEY_1, "AUDIT_HMAC_OLD_KEYS": f"dev:{AUDIT_HMAC_DEV_KEY}"}, "development audit key"),
        ({"AUDIT_HMAC_KID": "k1"}, "there is no AUDIT_HMAC_KEY"),
        ({"AUDIT_HMAC_OLD_KEYS": f"k1:{KEY_1}"}, "there is no AUDIT_HMAC_KEY"),
        ({"AUDIT_HMAC_KEY": KEY_1, "AUDIT_HMAC_OLD_KEYS": f"k1:{KEY_2}"}, "key id 'k1' is configured twice"),
        ({"AUDIT_HMAC_KEY": KEY_1, "AUDIT_HMAC_OLD_KEYS": KEY_2}, "each entry is kid:key"),
    ],
)
def test_audit_hmac_settings__misconfigured__refused_at_startup(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        audit_hmac_settings(environ)
    assert message in str(caught.value)


def test_audit_hmac_settings__key_file_missing__refused_not_development_key(tmp_path: Path) -> None:
    # A missing secret must not quietly fall back to the public development key.
    with pytest.raises(FileNotFoundError):
        audit_hmac_settings({"AUDIT_HMAC_KEY_FILE": str(tmp_path / "absent")})


# -- rotation ---------------------------------------------------------------------------------


def test_rotation__old_kid_configured__whole_chain_verifies(settings: Any) -> None:
    # Given three entries under k1, then k2 made current with k1 kept as an old key
    append(3)
    use_keys(settings, "k2", k2=KEY_2, k1=KEY_1)
    append(2)
    # When verified
    report = services.verify_chain()
    # Then every entry verifies under its own key; the chain runs on across the rotation
    assert report.ok, report.problem
    assert list(AuditEntry.objects.order_by("seq").values_list("kid", flat=True)) == ["k1", "k1", "k1", "k2", "k2"]
    assert AuditEntry.objects.get(seq=4).prev_hash == AuditEntry.objects.get(seq=3).hash
    assert report.kids == (("k1", 3), ("k2", 2))
    assert ChainHead.objects.get(pk=1).kid == "k2"
    assert "entries (#1..#5) from genesis, keys k1 (3), k2 (2); head #5" in report.summary()


def test_rotation__old_key_removed__its_entries_fail(settings: Any) -> None:
    # Given entries under k1 and k2, then k1 dropped from the settings
    append(3)
    use_keys(settings, "k2", k2=KEY_2, k1=KEY_1)
    append(2)
    use_keys(settings, "k2", k2=KEY_2)
    # When verified
    report = services.verify_chain()
    # Then the first k1 entry cannot be verified
    assert (report.ok, report.first_broken_seq, report.checked) == (False, 1, 0)
    assert report.problem == ("its key id 'k1' is not configured (AUDIT_HMAC_KEY / AUDIT_HMAC_OLD_KEYS), so its MAC "
                              "cannot be checked")


def test_rotation__kid_relabelled_to_other_configured_key__fails(settings: Any) -> None:
    # Given both keys configured and entry #2 relabelled from k1 to k2, its MAC untouched
    append(3)
    use_keys(settings, "k2", k2=KEY_2, k1=KEY_1)
    with triggers_off() as cursor:
        update_entry(cursor, 2, kid="k2")
    # Then its MAC does not verify under k2
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq) == (False, 2)
    assert report.problem.startswith("its content does not match its MAC")


def test_rotation__same_key_other_kid__mac_differs() -> None:
    # The kid is inside the MAC: the same key under another id gives another MAC.
    entry = AuditEntry(seq=1, actor_type="system", actor="a", action="TEST", prev_hash=GENESIS_HASH, kid="k1")
    first = entry.compute_hash()
    entry.kid = "k2"
    with override_settings(AUDIT_HMAC_KEYS={"k1": KEY_1, "k2": KEY_1}):
        assert entry.compute_hash() != first


def test_record__current_kid_without_key__refused_nothing_written(settings: Any, chain: list[AuditEntry]) -> None:
    settings.AUDIT_HMAC_KID = "k7"
    with pytest.raises(ImproperlyConfigured) as caught:
        append(1)
    assert "no audit key is configured for the current key id 'k7'" in str(caught.value)
    assert AuditEntry.objects.count() == 5


# -- the development key -----------------------------------------------------------------------


@pytest.fixture
def development_key(settings: Any) -> None:
    settings.AUDIT_HMAC_KID = "dev"
    settings.AUDIT_HMAC_KEYS = {"dev": AUDIT_HMAC_DEV_KEY}
    settings.AUDIT_HMAC_DEV_KEY_IN_USE = True


@pytest.mark.usefixtures("development_key")
def test_verify_audit__development_key__intact_with_note(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    # Given a fresh machine: no key configured
    monkeypatch.setattr(services, "_dev_key_warned", False)
    with caplog.at_level(logging.WARNING, logger="audit.services"):
        append(2)
    # When verified
    out, err = run_verify_audit()
    # Then the chain verifies under kid dev, and both the log and verify say what that is worth
    assert out.startswith("audit chain intact: 2 entries (#1..#2) from genesis, keys dev (2); head #2 ")
    assert err == ("note: the audit key is the embedded development key (its value is public): these MACs prove "
                   "nothing; set AUDIT_HMAC_KEY or AUDIT_HMAC_KEY_FILE (docs/audit.md)\n")
    assert [r.getMessage() for r in caplog.records].count(
        "audit entries are MACed with the embedded development key, whose value is public: set AUDIT_HMAC_KEY or "
        "AUDIT_HMAC_KEY_FILE (docs/audit.md)") == 1


@pytest.mark.usefixtures("development_key")
def test_check_deploy__development_key__warns() -> None:
    found = checks.run_checks(include_deployment_checks=True, tags=[checks.Tags.security])
    assert "audit.W001" in [message.id for message in found]


def test_check_deploy__configured_key__no_warning() -> None:
    found = checks.run_checks(include_deployment_checks=True, tags=[checks.Tags.security])
    assert "audit.W001" not in [message.id for message in found]


def test_verify__development_chain_after_key_configured__refused(settings: Any, development_key: None) -> None:
    # Given entries made with the development key, then a real key configured: the public key
    # is never accepted next to it, so the development chain does not pass as production's
    append(2)
    use_keys(settings, "k1", k1=KEY_1)
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq) == (False, 1)
    assert report.problem.startswith("its key id 'dev' is not configured")


# -- legacy SHA-256 entries (made before keyed MACs) ---------------------------------------------


def legacy_prefix(count: int) -> list[AuditEntry]:
    """Entries as the code before keyed MACs wrote them: no kid, plain SHA-256, a head without MAC."""
    made: list[AuditEntry] = []
    for seq in range(1, count + 1):
        entry = AuditEntry(seq=seq, actor_type="system", actor="system:old", action="TEST", after={"n": seq},
                           prev_hash=made[-1].hash if made else GENESIS_HASH)
        entry.hash = sha256_of(entry)
        entry.save(force_insert=True)
        move_head(seq, entry.hash)
        made.append(entry)
    return made


def test_verify_audit__legacy_prefix_within_setting__intact_and_reported(settings: Any) -> None:
    # Given three legacy entries, AUDIT_LEGACY_LAST_SEQ=3 as the upgrade said, then two keyed ones
    legacy_prefix(3)
    settings.AUDIT_LEGACY_LAST_SEQ = 3
    append(2)
    # When verified
    out, err = run_verify_audit()
    # Then it is intact, and says which entries are only SHA-256
    assert out.startswith("audit chain intact: 5 entries (#1..#5) from genesis, keys legacy SHA-256 (3), k1 (2); ")
    assert err == ("note: entries #1 to #3 predate keyed MACs (plain SHA-256): before the first keyed entry anyone "
                   "with the database's rights could have rewritten them\n")
    assert AuditEntry.objects.get(seq=4).prev_hash == AuditEntry.objects.get(seq=3).hash


def test_verify_chain__legacy_entries_without_setting__refused(db: None) -> None:
    legacy_prefix(2)
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq) == (False, 1)
    assert report.problem == ("it carries no MAC, only plain SHA-256, beyond the legacy entries "
                              "(AUDIT_LEGACY_LAST_SEQ=0): it was not written by the audit service")


def test_verify_chain__legacy_prefix_rewritten_after_keyed_entry__link_breaks(settings: Any) -> None:
    # Given the legacy prefix sealed by a keyed entry, then #2 rewritten and #2..#3 re-hashed
    # consistently with plain SHA-256 (which needs no key)
    made = legacy_prefix(3)
    settings.AUDIT_LEGACY_LAST_SEQ = 3
    append(1)
    made[1].actor = "system:someone-else"
    made[1].hash = sha256_of(made[1])
    made[2].prev_hash = made[1].hash
    made[2].hash = sha256_of(made[2])
    with triggers_off() as cursor:
        update_entry(cursor, 3, hash="t" * 64)
        update_entry(cursor, 2, actor=made[1].actor, hash=made[1].hash)
        update_entry(cursor, 3, prev_hash=made[2].prev_hash, hash=made[2].hash)
    # Then the legacy entries verify among themselves, but the keyed #4 no longer links to #3
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq, report.checked) == (False, 4, 3)
    assert report.problem == "its link to entry #3 is broken (prev_hash differs from that entry's MAC)"


def test_verify_chain__legacy_entry_after_keyed_ones__refused_even_in_range(settings: Any) -> None:
    # Given a generous AUDIT_LEGACY_LAST_SEQ and a plain SHA-256 entry appended after keyed ones
    legacy_prefix(2)
    settings.AUDIT_LEGACY_LAST_SEQ = 10
    append(1)
    forged = AuditEntry(seq=4, actor_type="user", actor="sue", action="APPROVE_CHANGE",
                        prev_hash=AuditEntry.objects.get(seq=3).hash)
    forged.hash = sha256_of(forged)
    forged.save(force_insert=True)
    move_head(4, forged.hash)
    # Then it is refused: after the first keyed entry, plain SHA-256 can only be a downgrade
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq) == (False, 4)
    assert report.problem == ("it carries no MAC, only plain SHA-256, beyond the legacy entries (AUDIT_LEGACY_LAST_SEQ"
                              "=10, and after keyed entries): it was not written by the audit service")


def test_verify_jsonl__legacy_export_without_kid_field__verifies_within_setting(settings: Any) -> None:
    # Given an export made before keyed MACs (rows without "kid")
    legacy_prefix(2)
    settings.AUDIT_LEGACY_LAST_SEQ = 2
    rows = [json.loads(line) for line in services.export_jsonl(services.filter_entries())]
    for row in rows:
        del row["kid"]
    lines = [json.dumps(row) for row in rows]
    # Then it verifies as legacy; and not once the setting says there are no legacy entries
    report = services.verify_jsonl(lines, start_seq=1, start_hash=GENESIS_HASH)
    assert (report.ok, report.checked, report.legacy_last_seq, report.kids) == (True, 2, 2, (("", 2),))
    settings.AUDIT_LEGACY_LAST_SEQ = 0
    refused = services.verify_jsonl(lines, start_seq=1, start_hash=GENESIS_HASH)
    assert (refused.ok, refused.first_broken_seq) == (False, 1)


def test_verify_audit__broken_chain__exit_1_and_notes_still_given(settings: Any, development_key: None) -> None:
    append(2)
    with triggers_off() as cursor:
        update_entry(cursor, 1, actor="x")
    err = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("verify_audit", stdout=io.StringIO(), stderr=err)
    assert caught.value.returncode == 1
    assert "BROKEN at entry #1: its content does not match its MAC" in str(caught.value)
    assert err.getvalue().startswith("note: the audit key is the embedded development key")
