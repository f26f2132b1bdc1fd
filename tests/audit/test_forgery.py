"""Forgeries by someone with the database's rights but without the audit key: none verifies.

Each test plays one attack through SQL or the ORM (the way an insider would, not through
``audit.record``), then asserts the exact entry and reason ``verify_chain`` reports.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit import services
from audit.models import ENTRY_LABEL, GENESIS_HASH, AuditAnchor, AuditEntry, ChainHead, canonical_json
from core.actors import Actor
from tests.audit.conftest import KEY_1, WRONG_KEY, move_head, sha256_of, triggers_off, update_entry

pytestmark = pytest.mark.django_db

CONTENT_COLUMNS = ("actor_type", "actor", "user_id", "api_key_id", "action", "flag_key", "flag_id", "object_type",
                   "object_id", "change_request_id", "before", "after", "ip", "user_agent", "request_id", "kid")


def mac_with(key: str, entry: AuditEntry) -> str:
    return hmac.new(key.encode(), ENTRY_LABEL + entry.canonical_payload(), hashlib.sha256).hexdigest()


def development_mac(entry: AuditEntry) -> str:
    from django.conf import settings

    return mac_with(settings.AUDIT_HMAC_DEV_KEY, entry)


def forged_entry(after: dict[str, Any], **fields: Any) -> AuditEntry:
    """Entry #6, shown as another user's action, linked to the real #5."""
    last = AuditEntry.objects.get(seq=5)
    defaults: dict[str, Any] = {"seq": 6, "created_at": last.created_at, "actor_type": "user", "actor": "sue",
                                "user_id": 7, "action": "APPROVE_CHANGE", "flag_key": "brake.blend",
                                "after": after, "prev_hash": last.hash, "kid": "k1"}
    return AuditEntry(**{**defaults, **fields})


# Each way an insider without the key could compute the "hash" of a forged entry.
FORGERIES = {
    "sha256 as documented, kid k1": (lambda e: sha256_of(e), {},
                                     "its content does not match its MAC (the entry was changed, or made without "
                                     "the key)"),
    "sha256, no kid (a legacy entry)": (lambda e: sha256_of(e), {"kid": ""},
                                        "it carries no MAC, only plain SHA-256, beyond the legacy entries "
                                        "(AUDIT_LEGACY_LAST_SEQ=0, and after keyed entries): it was not written by "
                                        "the audit service"),
    "HMAC with a wrong key, kid k1": (lambda e: mac_with(WRONG_KEY, e), {},
                                      "its content does not match its MAC (the entry was changed, or made without "
                                      "the key)"),
    "HMAC with the public development key, kid dev": (development_mac, {"kid": "dev"},
                                                      "its key id 'dev' is not configured (AUDIT_HMAC_KEY / "
                                                      "AUDIT_HMAC_OLD_KEYS), so its MAC cannot be checked"),
    "HMAC with a made-up key id": (lambda e: mac_with(WRONG_KEY, e), {"kid": "k9"},
                                   "its key id 'k9' is not configured (AUDIT_HMAC_KEY / AUDIT_HMAC_OLD_KEYS), so its "
                                   "MAC cannot be checked"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_verify_audit__entry_inserted_and_head_moved_without_key__fails_at_forged_seq(
    chain: list[AuditEntry], forgery: str
) -> None:
    # Given an approval inserted as "sue", hashed without the key, and the head moved onto it
    # (both are what the application's database role may do: INSERT, and move the head by one)
    compute, fields, problem = FORGERIES[forgery]
    forged = forged_entry({"approved": True}, **fields)
    forged.hash = compute(forged)
    forged.save(force_insert=True)
    move_head(6, forged.hash)
    # When verified
    report = services.verify_chain()
    # Then the forged entry is named, with why it cannot be the service's
    assert (report.ok, report.first_broken_seq, report.problem, report.checked) == (False, 6, problem, 5)
    with pytest.raises(CommandError) as caught:
        call_command("verify_audit", stdout=io.StringIO())
    assert caught.value.returncode == 1
    assert f"audit chain BROKEN at entry #6: {problem}" in str(caught.value)


def test_verify_chain__head_moved_onto_genuine_looking_entry__head_mac_refused(chain: list[AuditEntry]) -> None:
    # Given the head moved forward onto a new entry that (hypothetically) verifies: here one
    # MACed by the service's own key, inserted directly, to isolate the head's MAC
    forged = forged_entry({"approved": True})
    forged.hash = forged.compute_hash() or ""
    forged.save(force_insert=True)
    move_head(6, forged.hash)
    # When verified
    report = services.verify_chain()
    # Then the head's own MAC (which the database cannot compute) gives it away
    assert (report.ok, report.first_broken_seq) == (False, 6)
    assert report.problem == "the chain head's MAC does not match its #6 (it was moved or re-pointed without the key)"


def test_verify_chain__entry_rehashed_with_wrong_key__fails(chain: list[AuditEntry]) -> None:
    # Given entry #3's content rewritten and re-MACed with a key that is not the audit key
    entry = AuditEntry.objects.get(seq=3)
    entry.after = {"n": "rewritten"}
    with triggers_off() as cursor:
        update_entry(cursor, 3, after=entry.after, hash=mac_with(WRONG_KEY, entry))
    # When verified
    report = services.verify_chain()
    # Then #3 is refused
    assert (report.ok, report.first_broken_seq, report.checked) == (False, 3, 2)
    assert report.problem.startswith("its content does not match its MAC")


def _content(entry: AuditEntry) -> dict[str, Any]:
    """What an entry says (everything but its place: seq, time, link, MAC)."""
    return {name: getattr(entry, name) for name in CONTENT_COLUMNS}


def test_verify_chain__two_entries_content_swapped_links_fixed__fails(chain: list[AuditEntry]) -> None:
    # Given the content of #2 and #3 exchanged (approval before request) with their MACs, and
    # each prev_hash re-pointed so that every link fits again
    second, third = AuditEntry.objects.get(seq=2), AuditEntry.objects.get(seq=3)
    with triggers_off() as cursor:
        update_entry(cursor, 3, hash="t" * 64)  # hashes are unique: out of the way first
        update_entry(cursor, 2, **_content(third), prev_hash=chain[0].hash, hash=third.hash)
        update_entry(cursor, 3, **_content(second), prev_hash=third.hash, hash=second.hash)
        update_entry(cursor, 4, prev_hash=second.hash)
    assert [e.after for e in AuditEntry.objects.filter(seq__in=[2, 3]).order_by("seq")] == [{"n": 2}, {"n": 1}]
    # When verified
    report = services.verify_chain()
    # Then #2 no longer matches its MAC: the MAC binds the entry to its seq and its link
    assert (report.ok, report.first_broken_seq, report.checked) == (False, 2, 1)
    assert report.problem.startswith("its content does not match its MAC")


def test_verify_chain__prev_hash_repointed_past_an_entry__link_broken(chain: list[AuditEntry]) -> None:
    # Given #4 re-pointed to #2, as if #3 never existed
    with triggers_off() as cursor:
        update_entry(cursor, 4, prev_hash=chain[1].hash)
    # When verified
    report = services.verify_chain()
    # Then the link of #4 is broken
    assert (report.ok, report.first_broken_seq) == (False, 4)
    assert report.problem == "its link to entry #3 is broken (prev_hash differs from that entry's MAC)"


def test_verify_chain__entry_from_another_chain_spliced_in_links_repointed__fails(chain: list[AuditEntry]) -> None:
    # Given an entry #3 the service MACed with the same key in another chain (a restored
    # backup, a staging database sharing the key): its own MAC is genuine
    fork = AuditEntry(**{**_content(chain[2]), "after": {"n": "from the fork"}}, seq=3,
                      created_at=chain[2].created_at, prev_hash="f" * 64)
    fork.hash = fork.compute_hash() or ""
    # When it replaces the real #3, and its prev_hash and #4's are re-pointed so that every link fits
    with triggers_off() as cursor:
        update_entry(cursor, 3, after=fork.after, prev_hash=chain[1].hash, hash=fork.hash)
        update_entry(cursor, 4, prev_hash=fork.hash)
    # Then the re-pointed links break the MACs: each MAC covers its prev_hash
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq, report.checked) == (False, 3, 2)
    assert report.problem.startswith("its content does not match its MAC")


def test_verify_chain__entries_reordered_and_remaced_without_their_links__fails(chain: list[AuditEntry]) -> None:
    # Given #2 and #3 reordered and each MACed with the real key over its content *without*
    # prev_hash, every link re-pointed to fit: what verification would accept if the MAC did
    # not cover the link
    def mac_without_link(entry: AuditEntry) -> str:
        data = json.loads(entry.canonical_payload())
        del data["prev_hash"]
        return hmac.new(KEY_1.encode(), ENTRY_LABEL + canonical_json(data), hashlib.sha256).hexdigest()

    second, third = AuditEntry.objects.get(seq=2), AuditEntry.objects.get(seq=3)
    new_second = AuditEntry(**_content(third), seq=2, created_at=second.created_at, prev_hash=chain[0].hash)
    new_second.hash = mac_without_link(new_second)
    new_third = AuditEntry(**_content(second), seq=3, created_at=third.created_at, prev_hash=new_second.hash)
    new_third.hash = mac_without_link(new_third)
    with triggers_off() as cursor:
        for entry in (new_second, new_third):
            update_entry(cursor, entry.seq, **_content(entry), prev_hash=entry.prev_hash, hash=entry.hash)
        update_entry(cursor, 4, prev_hash=new_third.hash)
    assert [e.after for e in AuditEntry.objects.filter(seq__in=[2, 3]).order_by("seq")] == [{"n": 2}, {"n": 1}]
    # When verified
    report = services.verify_chain()
    # Then #2 is refused: a MAC that leaves out the link is not the chain's MAC
    assert (report.ok, report.first_broken_seq, report.checked) == (False, 2, 1)
    assert report.problem.startswith("its content does not match its MAC")


def test_verify_chain__forged_anchor_to_skip_entries__refused(chain: list[AuditEntry]) -> None:
    # Given an anchor inserted (the application role may INSERT anchors) to make verification
    # start after #3, without a MAC and with a MAC made with a wrong key
    moment = chain[0].created_at
    fields = {"seq": 3, "hash": chain[2].hash, "first_seq": 1, "entries": 3, "period_start": moment,
              "period_end": moment, "archive_name": "x.jsonl", "archive_sha256": "b" * 64, "actor": "mallory"}
    AuditAnchor.objects.create(**fields)
    # When verified
    unsigned = services.verify_chain()
    # Then the anchor is refused, not used
    assert (unsigned.ok, unsigned.first_broken_seq, unsigned.problem) == (
        False, None, "archive anchor #3 carries no MAC: it was not written by the archive")
    assert unsigned.summary() == ("audit chain BROKEN: archive anchor #3 carries no MAC: it was not written by the "
                                  "archive (0 entries verified before it)")
    wrong = AuditAnchor(**{**fields, "seq": 4, "hash": chain[3].hash, "kid": "k1"})
    wrong.mac = hmac.new(WRONG_KEY.encode(), b"anything", hashlib.sha256).hexdigest()
    wrong.save(force_insert=True)
    report = services.verify_chain()
    assert report.problem == "archive anchor #4: its MAC does not match (the anchor was changed or forged)"


def test_verify_chain__head_missing__reported_and_record_refuses(chain: list[AuditEntry]) -> None:
    # Given the chain head removed behind the triggers (a superuser)
    with triggers_off() as cursor:
        cursor.execute("DELETE FROM audit_chainhead")
    # When verified, and when the service next appends
    report = services.verify_chain()
    with pytest.raises(services.ChainHeadMissing) as caught:
        services.record(actor=Actor.for_system("tests"), action="TEST")
    # Then both refuse: no second chain is started
    assert (report.ok, report.problem) == (False, "the chain head is missing (deleted or truncated behind the triggers)")
    assert "refusing to start a second chain" in str(caught.value)
    assert AuditEntry.objects.count() == 5
    assert not ChainHead.objects.exists()


def test_verify_chain__genesis_replaced_by_forged_chain__fails_at_1(db: None) -> None:
    # Given a whole new chain inserted into an empty database, hashed the documented way
    entry = AuditEntry(seq=1, actor_type="user", actor="sue", action="APPROVE_CHANGE", prev_hash=GENESIS_HASH, kid="k1")
    entry.hash = sha256_of(entry)
    entry.save(force_insert=True)
    move_head(1, entry.hash)
    # Then it is refused from its first entry
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq, report.checked) == (False, 1, 0)
    assert report.problem.startswith("its content does not match its MAC")


def test_entry_and_head_mac__known_answer__format_pinned() -> None:
    # The MAC's exact input is a contract: entries and archives must verify for 7 years, so a
    # change to the canonical form, the label or the algorithm must fail here first. The
    # expected values were computed independently: HMAC-SHA256(key, label + the JSON below).
    entry = AuditEntry(
        seq=1, created_at=datetime(2026, 11, 23, 18, 7, 59, 532363, tzinfo=UTC), actor_type="user", actor="sue",
        user_id=7, api_key_id=None, action="APPROVE_CHANGE", flag_key="brake.blend", flag_id=3, object_type="flag",
        object_id="3", change_request_id=12, before={"enabled": False}, after={"enabled": True}, ip="192.0.2.10",
        user_agent="ua", request_id="r-1", prev_hash=GENESIS_HASH, kid="k1",
    )
    assert entry.canonical_payload().decode() == (
        '{"action":"APPROVE_CHANGE","actor":"sue","actor_type":"user","after":{"enabled":true},"api_key_id":null,'
        '"before":{"enabled":false},"change_request_id":12,"created_at":"2026-11-23T18:07:59.532363+00:00",'
        '"flag_id":3,"flag_key":"brake.blend","ip":"192.0.2.10","kid":"k1","object_id":"3","object_type":"flag",'
        f'"prev_hash":"{GENESIS_HASH}","request_id":"r-1","seq":1,"user_agent":"ua","user_id":7}}'
    )
    assert entry.compute_hash() == "69e5453c2c1a0f59de0be9136e5936892399a9bc2d107b3ed27ace64161ad023"
    head = ChainHead(seq=1, hash="a" * 64, kid="k1")
    assert head.compute_mac() == "32152246daaa03f68b21af9429fde15a46137ae9cd6e2982ae6b5b9f729abc11"


def test_record__head_missing_on_empty_chain__restarts_from_genesis(db: None) -> None:
    # Given no entries, no anchors, and the head row gone (a flushed test database)
    with triggers_off() as cursor:
        cursor.execute("DELETE FROM audit_chainhead")
    # When verified, then appended to
    empty = services.verify_chain()
    entry = services.record(actor=Actor.for_system("tests"), action="TEST")
    # Then there was nothing to continue: the chain starts at #1 from genesis, with a head
    assert (empty.ok, empty.checked, empty.head_seq) == (True, 0, 0)
    assert (entry.seq, entry.prev_hash) == (1, GENESIS_HASH)
    head = ChainHead.objects.get(pk=1)
    assert (head.seq, head.hash, head.mac) == (1, entry.hash, head.compute_mac())
    assert services.verify_chain().ok
