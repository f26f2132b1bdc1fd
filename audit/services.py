"""Writing, verifying, exporting and archiving the audit trail. Only services call ``record``.

- ``record`` appends one entry to the MAC chain, inside the caller's transaction.
- ``verify_chain`` re-computes every MAC and link from the archive anchor (or genesis) to
  the chain head; ``verify_entries`` checks a selection (the evidence report's).
- ``checkpoint_append`` / ``checkpoints_verify`` write and check signed checkpoints of the
  head, kept outside the database.
- ``filter_entries`` / ``export_jsonl`` / ``export_csv`` stream entries out.
- ``partitions_ensure`` / ``partitions_list`` / ``partition_archive`` run the 7-year
  retention on PostgreSQL (see ``docs/audit.md``).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import ipaddress
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from django.utils.ipv6 import clean_ipv6_address

from audit.models import (
    CHECKPOINT_LABEL,
    GENESIS_HASH,
    LEGACY_KID,
    RETENTION_YEARS,
    AuditAnchor,
    AuditEntry,
    ChainHead,
    canonical_json,
    current_kid,
    key_configured,
    keyed_mac,
    mac_matches,
)
from core.actors import Actor

logger = logging.getLogger(__name__)


def _plain_json(value: Any) -> Any:
    """What the database will hand back: the hash must cover exactly that."""
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _clean_ip(value: str | None) -> str | None:
    """The address as the database will hand it back (PostgreSQL ``inet`` normalises IPv6);
    anything that is not an address (a forged X-Forwarded-For) is dropped, never fatal."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if address.version == 6:
        return clean_ipv6_address(str(address))
    return str(address)


def _now() -> datetime:
    return timezone.now()


class ChainHeadMissing(RuntimeError):
    """The chain head row is gone: appending would silently start a second chain."""


def _warn_if_development_key() -> None:
    global _dev_key_warned
    if settings.AUDIT_HMAC_DEV_KEY_IN_USE and not _dev_key_warned:
        _dev_key_warned = True
        logger.warning("audit entries are MACed with the embedded development key, whose value is public: "
                       "set AUDIT_HMAC_KEY or AUDIT_HMAC_KEY_FILE (docs/audit.md)")


_dev_key_warned = False


def record(
    *,
    actor: Actor,
    action: str,
    flag: Any = None,
    object_type: str = "",
    object_id: Any = "",
    before: Any = None,
    after: Any = None,
    change_request_id: int | None = None,
) -> AuditEntry:
    """Append one entry; must run inside the transaction of the change it records.

    The ChainHead row lock serialises appends: it is what keeps ``seq`` unique and gapless
    (on PostgreSQL the partitioned table can only enforce unique (seq, created_at)).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit.record must run inside the transaction of the change it records")
    head = ChainHead.objects.select_for_update().filter(pk=1).first() or _recreate_head()
    _warn_if_development_key()
    if actor.api_key is not None:
        actor_type = AuditEntry.ActorType.API_KEY
    elif actor.user is not None:
        actor_type = AuditEntry.ActorType.USER
    elif actor.system.startswith("vehicle:"):
        actor_type = AuditEntry.ActorType.VEHICLE
    else:
        actor_type = AuditEntry.ActorType.SYSTEM
    kid = current_kid()
    entry = AuditEntry(
        seq=head.seq + 1,
        created_at=_now(),
        actor_type=actor_type,
        actor=actor.label[:255],
        user_id=actor.user_id,
        api_key_id=getattr(actor.api_key, "pk", None),
        action=action,
        flag_key=getattr(flag, "key", "") or "",
        flag_id=getattr(flag, "pk", None),
        object_type=object_type,
        object_id=str(object_id) if object_id not in (None, "") else "",
        change_request_id=change_request_id,
        before=_plain_json(before),
        after=_plain_json(after),
        ip=_clean_ip(actor.ip),
        user_agent=(actor.user_agent or "")[:512],
        request_id=(actor.request_id or "")[:128],
        prev_hash=head.hash,
        kid=kid,
    )
    entry.hash = _required(entry.compute_hash(), kid)
    entry.save(force_insert=True)
    moved = ChainHead(pk=1, seq=entry.seq, hash=entry.hash, kid=kid)
    ChainHead.objects.filter(pk=1).update(seq=moved.seq, hash=moved.hash, kid=kid,
                                          mac=_required(moved.compute_mac(), kid))
    return entry


def _chain_is_empty() -> bool:
    return not AuditEntry.objects.exists() and not AuditAnchor.objects.exists()


def _recreate_head() -> ChainHead:
    """The genesis head, for a chain that has nothing to continue (no entries, no anchors: a
    flushed test database, or a superuser who emptied everything, which they could as well
    do by resetting the head). With entries, a new head would silently start a second
    chain: refused."""
    if not _chain_is_empty():
        raise ChainHeadMissing("the audit chain head is missing: refusing to start a second chain (docs/audit.md)")
    head, _ = ChainHead.objects.select_for_update().get_or_create(pk=1)
    return head


def _required(mac: str | None, kid: str) -> str:
    if mac is None:  # settings name a current kid without its key: a configuration error
        raise ImproperlyConfigured(f"no audit key is configured for the current key id {kid!r}")
    return mac


# -- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str = ""
    first_seq: int | None = None
    last_seq: int | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    anchor_seq: int | None = None
    legacy_last_seq: int | None = None  # the last plain SHA-256 entry verified, if any
    kids: tuple[tuple[str, int], ...] = ()  # entries verified per key id, in chain order

    def summary(self) -> str:
        """One line for people and for logs."""
        if not self.ok:
            where = f" at entry #{self.first_broken_seq}" if self.first_broken_seq is not None else ""
            return f"audit chain BROKEN{where}: {self.problem} ({self.checked} entries verified before it)"
        start = f"archive anchor #{self.anchor_seq}" if self.anchor_seq is not None else "genesis"
        span = f"#{self.first_seq}..#{self.last_seq}" if self.checked else "no entries"
        keys = ", ".join(f"{kid or 'legacy SHA-256'} ({count})" for kid, count in self.kids)
        return (
            f"audit chain intact: {self.checked} entries ({span}) from {start}"
            + (f", keys {keys}" if keys else "")
            + f"; head #{self.head_seq} {self.head_hash[:16]}"
        )

    def notes(self) -> list[str]:
        """What an intact chain still does not prove, for the operator (one line each)."""
        found = []
        if settings.AUDIT_HMAC_DEV_KEY_IN_USE:
            found.append("the audit key is the embedded development key (its value is public): these MACs prove "
                         "nothing; set AUDIT_HMAC_KEY or AUDIT_HMAC_KEY_FILE (docs/audit.md)")
        if self.legacy_last_seq is not None:
            first = self.first_seq if self.first_seq is not None else 1
            found.append(f"entries {_range(first, self.legacy_last_seq)} predate keyed MACs (plain SHA-256): "
                         "before the first keyed entry anyone with the database's rights could have rewritten them")
        return found


def _broken(checked: int, seq: int | None, problem: str) -> ChainReport:
    return ChainReport(False, checked, seq, problem)


def _range(first: int, last: int) -> str:
    return f"#{first}" if first == last else f"#{first} to #{last}"


def legacy_last_seq() -> int:
    """The last entry allowed to carry plain SHA-256: fixed in settings, outside the database."""
    return int(settings.AUDIT_LEGACY_LAST_SEQ)


def entry_problem(entry: AuditEntry, *, keyed_before: bool = False) -> str | None:
    """Why ``entry``'s own MAC does not verify, or None. ``keyed_before``: a keyed entry came
    earlier in the chain (after one, a plain SHA-256 entry can only be a downgrade)."""
    if entry.kid == LEGACY_KID:
        if keyed_before or entry.seq > legacy_last_seq():
            return (f"it carries no MAC, only plain SHA-256, beyond the legacy entries (AUDIT_LEGACY_LAST_SEQ="
                    f"{legacy_last_seq()}{', and after keyed entries' if keyed_before else ''}): it was not "
                    "written by the audit service")
        if not mac_matches(entry.compute_hash(), entry.hash):
            return "its content does not match its hash (the entry was changed)"
        return None
    if not key_configured(entry.kid):
        return (f"its key id {entry.kid!r} is not configured (AUDIT_HMAC_KEY / AUDIT_HMAC_OLD_KEYS), so its MAC "
                "cannot be checked")
    if not mac_matches(entry.compute_hash(), entry.hash):
        return "its content does not match its MAC (the entry was changed, or made without the key)"
    return None


def head_problem(head: ChainHead) -> str | None:
    """Why the chain head's own MAC does not verify, or None (legacy: no MAC, legacy range only)."""
    if not head.mac and head.kid == LEGACY_KID:
        if head.seq <= legacy_last_seq():
            return None
        return f"the chain head #{head.seq} carries no MAC: it was moved without the audit key"
    if not key_configured(head.kid):
        return f"the chain head's key id {head.kid!r} is not configured, so its MAC cannot be checked"
    if not mac_matches(head.compute_mac(), head.mac):
        return f"the chain head's MAC does not match its #{head.seq} (it was moved or re-pointed without the key)"
    return None


def anchor_problem(anchor: AuditAnchor) -> str | None:
    """Why an archive anchor's MAC does not verify, or None (legacy: no MAC, legacy range only)."""
    if not anchor.mac and anchor.kid == LEGACY_KID:
        if anchor.seq <= legacy_last_seq():
            return None
        return f"archive anchor #{anchor.seq} carries no MAC: it was not written by the archive"
    if not key_configured(anchor.kid):
        return f"archive anchor #{anchor.seq}: its key id {anchor.kid!r} is not configured"
    if not mac_matches(anchor.compute_mac(), anchor.mac):
        return f"archive anchor #{anchor.seq}: its MAC does not match (the anchor was changed or forged)"
    return None


def _count_kid(kids: tuple[tuple[str, int], ...], kid: str) -> tuple[tuple[str, int], ...]:
    if kids and kids[-1][0] == kid:
        return (*kids[:-1], (kid, kids[-1][1] + 1))
    merged = dict(kids)
    merged[kid] = merged.get(kid, 0) + 1
    return tuple(merged.items())


def verify_chain(*, chunk_size: int = 2000) -> ChainReport:
    """Re-compute every MAC and link; report the first entry that does not fit.

    The chain starts at the latest archive anchor, or at #1 from the genesis hash: a chain
    whose first entries were removed never passes as one that simply "starts later". The
    head is read before the entries, so entries appended while verifying are not mistaken
    for forgeries, and entries the head counts but the table lacks are reported missing.
    The head's and the anchor's own MACs are checked too.
    """
    anchor = AuditAnchor.objects.order_by("-seq").first()
    start_seq = anchor.seq + 1 if anchor is not None else 1
    start_hash = anchor.hash if anchor is not None else GENESIS_HASH
    head = ChainHead.objects.filter(pk=1).first()
    if head is None:
        if not _chain_is_empty():
            return _broken(0, None, "the chain head is missing (deleted or truncated behind the triggers)")
        head = ChainHead(pk=1)  # an empty chain without its head row: what record() starts from
    head_seq, head_hash = head.seq, head.hash
    result = ChainReport(
        True, 0, head_seq=head_seq, head_hash=head_hash, anchor_seq=anchor.seq if anchor is not None else None
    )

    def broken(seq: int | None, problem: str) -> ChainReport:
        return replace(result, ok=False, first_broken_seq=seq, problem=problem)

    if anchor is not None and (problem := anchor_problem(anchor)) is not None:
        return broken(None, problem)
    expected_seq, expected_prev = start_seq, start_hash
    hash_at_head: str | None = None
    keyed_before = False
    entries = AuditEntry.objects.filter(seq__gte=start_seq).order_by("seq")
    for entry in entries.iterator(chunk_size=chunk_size):
        if entry.seq < expected_seq:
            return broken(entry.seq, f"entry #{entry.seq} appears twice")
        if entry.seq > expected_seq:
            problem = f"entry {_range(expected_seq, entry.seq - 1)} is missing"
            if result.checked == 0:
                where = f"right after archive anchor #{result.anchor_seq}" if anchor is not None else "from genesis"
                problem += f" (the chain must start at #{start_seq}, {where})"
            return broken(expected_seq, problem)
        if entry.prev_hash != expected_prev:
            if entry.seq == start_seq:
                where = f"archive anchor #{result.anchor_seq}" if anchor is not None else "the genesis hash"
                problem = f"it does not continue from {where}"
            else:
                problem = f"its link to entry #{entry.seq - 1} is broken (prev_hash differs from that entry's MAC)"
            return broken(entry.seq, problem)
        if (problem := entry_problem(entry, keyed_before=keyed_before)) is not None:
            return broken(entry.seq, problem)
        keyed_before = keyed_before or entry.kid != LEGACY_KID
        if entry.seq == head_seq:
            hash_at_head = entry.hash
        result = replace(
            result, checked=result.checked + 1, first_seq=result.first_seq or entry.seq, last_seq=entry.seq,
            legacy_last_seq=entry.seq if entry.kid == LEGACY_KID else result.legacy_last_seq,
            kids=_count_kid(result.kids, entry.kid),
        )
        expected_prev = entry.hash
        expected_seq += 1

    last_seq = expected_seq - 1
    if last_seq < head_seq:
        return broken(last_seq + 1, f"entry {_range(last_seq + 1, head_seq)} is missing (the chain head is at "
                                    f"#{head_seq})")
    if head_seq == start_seq - 1 and head_hash != start_hash:
        return broken(head_seq, "the chain head does not match the archive anchor")
    if head_seq >= start_seq and hash_at_head != head_hash:
        return broken(head_seq, f"the chain head's hash does not match entry #{head_seq} (the entry was changed "
                                "and re-hashed)")
    if (problem := head_problem(head)) is not None:
        return broken(head_seq, problem)
    if last_seq > head_seq:
        current = ChainHead.objects.filter(pk=1).first()
        current_seq = current.seq if current is not None else 0
        if current_seq < last_seq:
            return broken(current_seq + 1, f"entry #{current_seq + 1} lies beyond the chain head #{current_seq}: "
                                           "it was not appended through the audit service")
    return result


def verify_entries(entries: Iterable[AuditEntry]) -> list[dict[str, Any]]:
    """Check a selection of entries: each one's own MAC, and its link to its predecessor.

    For the evidence report of one flag: proves that every listed entry is intact and
    sits in the chain where it claims to (its predecessor's MAC is its prev_hash). A plain
    SHA-256 entry counts as intact only within the legacy range (``AUDIT_LEGACY_LAST_SEQ``).
    """
    entries = list(entries)
    predecessors = {
        seq: entry_hash
        for seq, entry_hash in AuditEntry.objects.filter(seq__in=[entry.seq - 1 for entry in entries]).values_list(
            "seq", "hash"
        )
    }
    anchors = dict(AuditAnchor.objects.values_list("seq", "hash"))
    results = []
    for entry in entries:
        hash_ok = entry_problem(entry) is None
        before = entry.seq - 1
        if before == 0:
            expected: str | None = GENESIS_HASH
        else:
            expected = predecessors.get(before, anchors.get(before))
        if expected is None:
            link = "predecessor not found"
        elif expected == entry.prev_hash:
            link = "ok"
        else:
            link = "broken"
        results.append({"seq": entry.seq, "hash": entry.hash, "hash_ok": hash_ok, "link": link})
    return results


# -- checkpoints --------------------------------------------------------------------------
#
# A checkpoint is one JSON line, MACed with the audit key, saying "at time T the chain ended
# at #seq with this MAC". Appended to a file the operator keeps outside the database (and
# out of reach of whoever holds the database), it proves that nothing up to #seq was
# rewritten, removed or re-chained since T. Each line carries the MAC of the line before it,
# so lines cannot be dropped or reordered either (except the last ones).

CHECKPOINT_VERSION = 1
CHECKPOINT_FIELDS = ("v", "seq", "hash", "entry_kid", "at", "kid", "prev")


class CheckpointError(Exception):
    """A checkpoint file that does not verify, or a chain that contradicts one."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    entry_kid: str
    at: str
    kid: str
    prev: str
    mac: str

    def fields(self) -> dict[str, Any]:
        return {"v": CHECKPOINT_VERSION, "seq": self.seq, "hash": self.hash, "entry_kid": self.entry_kid,
                "at": self.at, "kid": self.kid, "prev": self.prev}

    def compute_mac(self) -> str | None:
        return keyed_mac(self.kid, CHECKPOINT_LABEL, canonical_json(self.fields()))

    def line(self) -> str:
        return json.dumps({**self.fields(), "mac": self.mac}, sort_keys=True, separators=(",", ":")) + "\n"


@dataclass(frozen=True)
class CheckpointReport:
    checked: int
    last: Checkpoint | None
    chain_end: int  # the chain's last seq when verified
    archived: int  # checkpoints at or before the archive anchor: their entries left the database

    def summary(self, name: str) -> str:
        if self.last is None:
            return f"{name}: no checkpoints yet"
        tail = self.chain_end - self.last.seq
        after = (f"{'entry' if tail == 1 else 'entries'} {_range(self.last.seq + 1, self.chain_end)} "
                 f"{'is' if tail == 1 else 'are'} covered by no checkpoint yet" if tail > 0 else "no entries after it")
        archived = f" ({self.archived} before the archive anchor)" if self.archived else ""
        count = f"{self.checked} checkpoint{'s' if self.checked != 1 else ''}"
        return (f"{name}: {count} intact{archived}; the latest, #{self.last.seq} of {self.last.at}, is still in the "
                f"chain; {after}")


def checkpoints_read(lines: Iterable[str]) -> list[Checkpoint]:
    """Parse and verify a checkpoint file on its own: each line's MAC and its link to the line before."""
    found: list[Checkpoint] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            checkpoint = Checkpoint(
                seq=int(row["seq"]), hash=str(row["hash"]), entry_kid=str(row["entry_kid"]), at=str(row["at"]),
                kid=str(row["kid"]), prev=str(row["prev"]), mac=str(row["mac"]),
            )
            if row["v"] != CHECKPOINT_VERSION or set(row) != {*CHECKPOINT_FIELDS, "mac"}:
                raise ValueError("unknown version or fields")
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"line {number} is not an audit checkpoint ({exc})") from exc
        if not key_configured(checkpoint.kid):
            raise CheckpointError(f"line {number}: its key id {checkpoint.kid!r} is not configured, so it cannot be "
                                  "checked (keep old keys while their checkpoints are kept)")
        if not mac_matches(checkpoint.compute_mac(), checkpoint.mac):
            raise CheckpointError(f"line {number}: its MAC does not match (the line was altered or forged)")
        expected_prev = found[-1].mac if found else ""
        if checkpoint.prev != expected_prev:
            raise CheckpointError(f"line {number}: it does not follow the line before it (a line was removed, "
                                  "reordered or inserted)")
        found.append(checkpoint)
    return found


def checkpoints_verify(lines: Iterable[str]) -> CheckpointReport:
    """Verify a checkpoint file, then the database against every checkpoint in it.

    For each checkpoint at #seq: the entry at #seq still carries the checkpointed MAC (its
    MAC covers its link, so nothing before it was rewritten without that changing), and the
    chain head has not gone back below #seq (the chain was not shortened). Checkpoints at or
    before the archive anchor are checked against the anchor where it names that entry; the
    archive file itself is verified with ``verify_audit --archive``. The chain's own MACs and
    links are ``verify_chain``'s part: run both (``verify_audit --checkpoint`` does).
    """
    checkpoints = checkpoints_read(lines)
    head = ChainHead.objects.filter(pk=1).first()
    if head is None:
        if not _chain_is_empty():
            raise CheckpointError("the chain head is missing (deleted or truncated behind the triggers)")
        head = ChainHead(pk=1)
    anchor = AuditAnchor.objects.order_by("-seq").first()
    anchor_seq = anchor.seq if anchor is not None else 0
    stored = dict(AuditEntry.objects.filter(seq__in={c.seq for c in checkpoints}).values_list("seq", "hash"))
    anchors = dict(AuditAnchor.objects.values_list("seq", "hash"))
    chain_end = max(head.seq, max(stored, default=0))
    archived = 0
    for number, checkpoint in enumerate(checkpoints, start=1):
        when = f"checkpoint {number} (#{checkpoint.seq} at {checkpoint.at})"
        if head.seq < checkpoint.seq:
            raise CheckpointError(f"the chain head is at #{head.seq} but {when} saw the chain reach #{checkpoint.seq}: "
                                  "the chain was shortened")
        if checkpoint.seq == 0:
            continue
        if checkpoint.seq <= anchor_seq:
            archived += 1
            if checkpoint.seq in anchors and anchors[checkpoint.seq] != checkpoint.hash:
                raise CheckpointError(f"archive anchor #{checkpoint.seq} does not carry the MAC of {when}")
            continue
        if checkpoint.seq not in stored:
            raise CheckpointError(f"entry #{checkpoint.seq} of {when} is missing: the chain was cut below it")
        if stored[checkpoint.seq] != checkpoint.hash:
            raise CheckpointError(f"entry #{checkpoint.seq} is not the one of {when}: it or history before it was "
                                  "rewritten")
    return CheckpointReport(len(checkpoints), checkpoints[-1] if checkpoints else None, chain_end, archived)


def checkpoint_append(*, path: Path) -> Checkpoint:
    """Verify the chain and the checkpoint file, then append a checkpoint of the head to the file.

    Refuses (CheckpointError) when the chain is broken or the file does not verify: a
    checkpoint must never vouch for a chain that already fails, nor continue a tampered
    file. The file is locked while it is read and extended (two runs at once would both
    chain to the same line), and the line is fsynced before returning.
    """
    report = verify_chain()
    if not report.ok:
        raise CheckpointError(f"no checkpoint written: {report.summary()}")
    entry_kid = ""
    if report.head_seq:
        entry_kid = AuditEntry.objects.filter(seq=report.head_seq).values_list("kid", flat=True).first() or ""
    kid = current_kid()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8", newline="\n") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        previous = checkpoints_verify(file.read().splitlines()).last
        unsigned = Checkpoint(seq=report.head_seq, hash=report.head_hash, entry_kid=entry_kid,
                              at=_now().astimezone(UTC).isoformat(timespec="microseconds"), kid=kid,
                              prev=previous.mac if previous is not None else "", mac="")
        checkpoint = replace(unsigned, mac=_required(unsigned.compute_mac(), kid))
        file.write(checkpoint.line())
        file.flush()
        os.fsync(file.fileno())
    return checkpoint


# -- export -------------------------------------------------------------------------------

EXPORT_FIELDS = (
    "seq", "created_at", "actor_type", "actor", "user_id", "api_key_id", "action", "flag_key", "flag_id",
    "object_type", "object_id", "change_request_id", "before", "after", "ip", "user_agent", "request_id",
    "prev_hash", "kid", "hash",
)
EXPORT_CHUNK = 2000


def filter_entries(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    flag_key: str | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> Any:
    """Entries in chain order; ``since`` inclusive, ``until`` exclusive."""
    entries = AuditEntry.objects.all()
    if since is not None:
        entries = entries.filter(created_at__gte=since)
    if until is not None:
        entries = entries.filter(created_at__lt=until)
    if flag_key:
        entries = entries.filter(flag_key=flag_key)
    if actor:
        entries = entries.filter(actor=actor)
    if action:
        entries = entries.filter(action=action)
    return entries.order_by("seq")


def export_row(entry: AuditEntry) -> dict[str, Any]:
    """One entry as exported: every field the MAC covers (the kid included), plus the MAC."""
    row = {name: getattr(entry, name) for name in EXPORT_FIELDS}
    row["created_at"] = entry.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    return row


def entry_from_row(row: dict[str, Any]) -> AuditEntry:
    """An unsaved entry rebuilt from an exported row, to re-compute its MAC."""
    fields = {name: row.get(name) for name in EXPORT_FIELDS}
    fields["created_at"] = datetime.fromisoformat(str(row["created_at"]))
    fields["kid"] = row.get("kid") or LEGACY_KID  # exports made before keyed MACs have no kid
    return AuditEntry(**fields)


def export_jsonl(entries: Any) -> Iterator[str]:
    for entry in entries.iterator(chunk_size=EXPORT_CHUNK):
        yield json.dumps(export_row(entry), sort_keys=True, ensure_ascii=False) + "\n"


def export_csv(entries: Any) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    for entry in entries.iterator(chunk_size=EXPORT_CHUNK):
        row = export_row(entry)
        writer.writerow(
            [json.dumps(row[n], sort_keys=True) if n in ("before", "after") else row[n] for n in EXPORT_FIELDS]
        )
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def verify_jsonl(lines: Iterable[str], *, start_seq: int | None = None, start_hash: str | None = None) -> ChainReport:
    """Verify an exported or archived JSON-lines file on its own: MACs and links.

    Without ``start_seq``/``start_hash`` the file's first entry is taken as given (its own
    MAC is still checked); an archive is checked against its anchor by the caller.
    """
    checked = 0
    expected_seq, expected_prev = start_seq, start_hash
    first_seq: int | None = None
    last_hash = GENESIS_HASH
    keyed_before = False
    legacy_last: int | None = None
    kids: tuple[tuple[str, int], ...] = ()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = entry_from_row(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            return _broken(checked, expected_seq or 0, f"line {number} is not an exported audit entry ({exc})")
        if expected_seq is not None and entry.seq != expected_seq:
            gap = f"entry #{expected_seq} is missing" if entry.seq > expected_seq else f"#{entry.seq} repeats"
            return _broken(checked, expected_seq, gap)
        if expected_prev is not None and entry.prev_hash != expected_prev:
            return _broken(checked, entry.seq, "its link to the previous entry is broken")
        if (problem := entry_problem(entry, keyed_before=keyed_before)) is not None:
            return _broken(checked, entry.seq, problem)
        keyed_before = keyed_before or entry.kid != LEGACY_KID
        legacy_last = entry.seq if entry.kid == LEGACY_KID else legacy_last
        kids = _count_kid(kids, entry.kid)
        first_seq = entry.seq if first_seq is None else first_seq
        checked += 1
        expected_seq, expected_prev, last_hash = entry.seq + 1, entry.hash, entry.hash
    last_seq = expected_seq - 1 if expected_seq is not None and checked else None
    return ChainReport(True, checked, first_seq=first_seq, last_seq=last_seq, head_seq=last_seq or 0,
                       head_hash=last_hash, legacy_last_seq=legacy_last, kids=kids)


# -- retention (PostgreSQL partitions) -------------------------------------------------------

PARENT_TABLE = "audit_auditentry"
DEFAULT_PARTITION = "audit_auditentry_default"
_PARTITION_NAME = re.compile(r"^audit_auditentry_y(\d{4})m(\d{2})$")


class RetentionError(Exception):
    """An archive that would break the retention rule or the chain is refused."""


@dataclass(frozen=True)
class Partition:
    name: str
    month: date | None  # None: the DEFAULT partition
    entries: int


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [PARENT_TABLE])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def _require_partitions() -> None:
    if not is_partitioned():
        raise RetentionError(
            "the audit table is partitioned on PostgreSQL only; on SQLite it is one plain table, kept whole"
        )


def partition_name(month: date) -> str:
    return f"audit_auditentry_y{month.year:04d}m{month.month:02d}"


def month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def retention_cutoff(now: datetime | None = None) -> datetime:
    """Entries created before this instant are past the retention period."""
    now = (now or timezone.now()).astimezone(UTC)
    try:
        return now.replace(year=now.year - RETENTION_YEARS)
    except ValueError:  # 29 February
        return now.replace(year=now.year - RETENTION_YEARS, day=28)


def partitions_ensure(*, months_ahead: int = 3) -> list[str]:
    """Create the DEFAULT partition and this month plus ``months_ahead`` (idempotent)."""
    _require_partitions()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT audit_ensure_partitions(%s)", [months_ahead])
        return [row[0] for row in cursor.fetchall()]


def partition_create(month: date) -> str | None:
    """Create one month's partition (moving its rows out of DEFAULT); None if it exists."""
    _require_partitions()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT audit_create_partition(%s)", [month])
        row = cursor.fetchone()
    return row[0] if row else None


def partitions_list() -> list[Partition]:
    """The attached partitions, oldest first, with exact entry counts (DEFAULT last)."""
    _require_partitions()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
            [PARENT_TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
        found = []
        for name in names:
            cursor.execute(f'SELECT count(*) FROM "{name}"')  # names come from pg_class
            (count,) = cursor.fetchone()
            match = _PARTITION_NAME.match(name)
            month = date(int(match.group(1)), int(match.group(2)), 1) if match else None
            found.append(Partition(name, month, count))
    return sorted(found, key=lambda p: (p.month is None, p.month or date.min))


def _attached(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_inherits WHERE inhparent = to_regclass(%s) AND inhrelid = to_regclass(%s)",
            [PARENT_TABLE, name],
        )
        return cursor.fetchone() is not None


def partition_archive(*, month: date, output: Path, actor: str, now: datetime | None = None) -> AuditAnchor | None:
    """Archive one month older than the retention period: export, verify, anchor, detach.

    In one transaction: the month's entries are written to ``output`` as JSON lines with
    their hashes, the file is read back and verified (every hash, every link, starting
    exactly where the chain's anchor or genesis says), an ``AuditAnchor`` records the last
    archived entry (so ``verify_chain`` starts from it) with the file's SHA-256, and only
    then the partition is detached and renamed ``audit_archived_y…``. Dropping that table
    is left to the DBA once the file is in long-term storage. Returns None for a month
    without entries (detached, nothing to anchor).
    """
    _require_partitions()
    month = date(month.year, month.month, 1)
    start, end = month_bounds(month)
    cutoff = retention_cutoff(now)
    if end > cutoff:
        raise RetentionError(
            f"{month:%Y-%m} is within the {RETENTION_YEARS}-year retention period: its entries may be archived "
            f"from {end.replace(year=end.year + RETENTION_YEARS):%Y-%m-%d} on"
        )
    name = partition_name(month)
    with transaction.atomic():
        # Serialise with appends and with other archivers.
        if ChainHead.objects.select_for_update().filter(pk=1).first() is None:
            raise ChainHeadMissing("the audit chain head is missing: nothing is archived (docs/audit.md)")
        if not _attached(name):
            raise RetentionError(f"there is no attached partition {name}")
        anchor = AuditAnchor.objects.order_by("-seq").first()
        start_seq = anchor.seq + 1 if anchor is not None else 1
        start_hash = anchor.hash if anchor is not None else GENESIS_HASH
        if AuditEntry.objects.filter(created_at__lt=start, seq__gte=start_seq).exists():
            raise RetentionError(f"entries older than {month:%Y-%m} are not archived yet: archive the oldest month first")
        entries = AuditEntry.objects.filter(created_at__gte=start, created_at__lt=end).order_by("seq")
        digest = hashlib.sha256()
        count, first_seq, last_seq, last_hash = 0, start_seq, start_seq - 1, start_hash
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8", newline="\n") as archive:
            for line in export_jsonl(entries):
                archive.write(line)
                digest.update(line.encode())
                row = json.loads(line)
                first_seq = row["seq"] if count == 0 else first_seq
                last_seq, last_hash = row["seq"], row["hash"]
                count += 1
        if count:
            if AuditEntry.objects.filter(seq__gte=start_seq, seq__lte=last_seq).count() != count:
                raise RetentionError(
                    f"entries #{start_seq}..#{last_seq} are not all in {month:%Y-%m}: archive refused (clock skew?)"
                )
            with output.open(encoding="utf-8") as archive:
                report = verify_jsonl(archive, start_seq=start_seq, start_hash=start_hash)
            if not report.ok or report.checked != count:
                raise RetentionError(f"the archive of {month:%Y-%m} does not verify: {report.summary()}")
            following = AuditEntry.objects.filter(seq=last_seq + 1).first()
            if following is not None and following.prev_hash != last_hash:
                raise RetentionError(f"entry #{last_seq + 1} does not continue from the archived #{last_seq}")
            anchored = AuditAnchor(
                seq=last_seq,
                hash=last_hash,
                first_seq=first_seq,
                entries=count,
                period_start=start,
                period_end=end,
                partition=name,
                archive_name=output.name,
                archive_sha256=digest.hexdigest(),
                actor=actor[:255],
                kid=current_kid(),
            )
            anchored.mac = _required(anchored.compute_mac(), anchored.kid)
            anchored.save(force_insert=True)
            archived: AuditAnchor | None = anchored
        else:
            archived = None
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER TABLE "{PARENT_TABLE}" DETACH PARTITION "{name}"')
            cursor.execute(f'ALTER TABLE "{name}" RENAME TO "audit_archived_y{month.year:04d}m{month.month:02d}"')
    return archived


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
