"""Writing, verifying, exporting and archiving the audit trail. Only services call ``record``.

- ``record`` appends one entry to the hash chain, inside the caller's transaction.
- ``verify_chain`` re-computes every hash and link from the archive anchor (or genesis) to
  the chain head; ``verify_entries`` checks a selection (the evidence report's).
- ``filter_entries`` / ``export_jsonl`` / ``export_csv`` stream entries out.
- ``partitions_ensure`` / ``partitions_list`` / ``partition_archive`` run the 7-year
  retention on PostgreSQL (see ``docs/audit.md``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from django.utils.ipv6 import clean_ipv6_address

from audit.models import GENESIS_HASH, RETENTION_YEARS, AuditAnchor, AuditEntry, ChainHead
from core.actors import Actor


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
    head, _ = ChainHead.objects.select_for_update().get_or_create(pk=1)
    if actor.api_key is not None:
        actor_type = AuditEntry.ActorType.API_KEY
    elif actor.user is not None:
        actor_type = AuditEntry.ActorType.USER
    elif actor.system.startswith("vehicle:"):
        actor_type = AuditEntry.ActorType.VEHICLE
    else:
        actor_type = AuditEntry.ActorType.SYSTEM
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
    )
    entry.hash = entry.compute_hash()
    entry.save(force_insert=True)
    ChainHead.objects.filter(pk=1).update(seq=entry.seq, hash=entry.hash)
    return entry


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

    def summary(self) -> str:
        """One line for people and for logs."""
        if not self.ok:
            return (
                f"audit chain BROKEN at entry #{self.first_broken_seq}: {self.problem} "
                f"({self.checked} entries verified before it)"
            )
        start = f"archive anchor #{self.anchor_seq}" if self.anchor_seq is not None else "genesis"
        span = f"#{self.first_seq}..#{self.last_seq}" if self.checked else "no entries"
        return (
            f"audit chain intact: {self.checked} entries ({span}) from {start}; "
            f"head #{self.head_seq} {self.head_hash[:16]}"
        )


def _broken(checked: int, seq: int, problem: str) -> ChainReport:
    return ChainReport(False, checked, seq, problem)


def _range(first: int, last: int) -> str:
    return f"#{first}" if first == last else f"#{first} to #{last}"


def verify_chain(*, chunk_size: int = 2000) -> ChainReport:
    """Re-compute every hash and link; report the first entry that does not fit.

    The chain starts at the latest archive anchor, or at #1 from the genesis hash: a chain
    whose first entries were removed never passes as one that simply "starts later". The
    head is read before the entries, so entries appended while verifying are not mistaken
    for forgeries, and entries the head counts but the table lacks are reported missing.
    """
    anchor = AuditAnchor.objects.order_by("-seq").first()
    start_seq = anchor.seq + 1 if anchor is not None else 1
    start_hash = anchor.hash if anchor is not None else GENESIS_HASH
    head = ChainHead.objects.filter(pk=1).first()
    head_seq = head.seq if head is not None else 0
    head_hash = head.hash if head is not None else GENESIS_HASH
    result = ChainReport(
        True, 0, head_seq=head_seq, head_hash=head_hash, anchor_seq=anchor.seq if anchor is not None else None
    )

    def broken(seq: int, problem: str) -> ChainReport:
        return replace(result, ok=False, first_broken_seq=seq, problem=problem)

    expected_seq, expected_prev = start_seq, start_hash
    hash_at_head: str | None = None
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
                problem = f"its link to entry #{entry.seq - 1} is broken (prev_hash differs from that entry's hash)"
            return broken(entry.seq, problem)
        if entry.compute_hash() != entry.hash:
            return broken(entry.seq, "its content does not match its hash (the entry was changed)")
        if entry.seq == head_seq:
            hash_at_head = entry.hash
        result = replace(result, checked=result.checked + 1, first_seq=result.first_seq or entry.seq,
                         last_seq=entry.seq)
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
    if last_seq > head_seq:
        current = ChainHead.objects.filter(pk=1).first()
        current_seq = current.seq if current is not None else 0
        if current_seq < last_seq:
            return broken(current_seq + 1, f"entry #{current_seq + 1} lies beyond the chain head #{current_seq}: "
                                           "it was not appended through the audit service")
    return result


def verify_entries(entries: Iterable[AuditEntry]) -> list[dict[str, Any]]:
    """Check a selection of entries: each one's own hash, and its link to its predecessor.

    For the evidence report of one flag: proves that every listed entry is intact and
    sits in the chain where it claims to (its predecessor's hash is its prev_hash).
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
        hash_ok = entry.compute_hash() == entry.hash
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


# -- export -------------------------------------------------------------------------------

EXPORT_FIELDS = (
    "seq", "created_at", "actor_type", "actor", "user_id", "api_key_id", "action", "flag_key", "flag_id",
    "object_type", "object_id", "change_request_id", "before", "after", "ip", "user_agent", "request_id",
    "prev_hash", "hash",
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
    """One entry as exported: every field the hash covers, plus the hash."""
    row = {name: getattr(entry, name) for name in EXPORT_FIELDS}
    row["created_at"] = entry.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    return row


def entry_from_row(row: dict[str, Any]) -> AuditEntry:
    """An unsaved entry rebuilt from an exported row, to re-compute its hash."""
    fields = {name: row.get(name) for name in EXPORT_FIELDS}
    fields["created_at"] = datetime.fromisoformat(str(row["created_at"]))
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
    """Verify an exported or archived JSON-lines file on its own: hashes and links.

    Without ``start_seq``/``start_hash`` the file's first entry is taken as given (its own
    hash is still checked); an archive is checked against its anchor by the caller.
    """
    checked = 0
    expected_seq, expected_prev = start_seq, start_hash
    first_seq: int | None = None
    last_hash = GENESIS_HASH
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = entry_from_row(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            return _broken(checked, expected_seq or 0, f"line {number} is not an exported audit entry ({exc})")
        if expected_seq is not None and entry.seq != expected_seq:
            problem = f"entry #{expected_seq} is missing" if entry.seq > expected_seq else f"#{entry.seq} repeats"
            return _broken(checked, expected_seq, problem)
        if expected_prev is not None and entry.prev_hash != expected_prev:
            return _broken(checked, entry.seq, "its link to the previous entry is broken")
        if entry.compute_hash() != entry.hash:
            return _broken(checked, entry.seq, "its content does not match its hash")
        first_seq = entry.seq if first_seq is None else first_seq
        checked += 1
        expected_seq, expected_prev, last_hash = entry.seq + 1, entry.hash, entry.hash
    last_seq = expected_seq - 1 if expected_seq is not None and checked else None
    return ChainReport(True, checked, first_seq=first_seq, last_seq=last_seq, head_seq=last_seq or 0,
                       head_hash=last_hash)


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
        ChainHead.objects.select_for_update().get_or_create(pk=1)
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
            archived: AuditAnchor | None = AuditAnchor.objects.create(
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
            )
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
