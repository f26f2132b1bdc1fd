"""Writing, verifying and exporting the audit trail. Only services call ``record``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from audit.context import Actor
from audit.models import GENESIS_HASH, AuditEntry, ChainHead


def _plain_json(value: Any) -> Any:
    """What the database will hand back: the hash must cover exactly that."""
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


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
    """Append one entry; must run inside the transaction of the change it records."""
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
        created_at=timezone.now(),
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
        ip=actor.ip,
        user_agent=actor.user_agent[:512],
        request_id=actor.request_id[:128],
        prev_hash=head.hash,
    )
    entry.hash = entry.compute_hash()
    entry.save(force_insert=True)
    ChainHead.objects.filter(pk=1).update(seq=entry.seq, hash=entry.hash)
    return entry


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str = ""


def verify_chain(*, chunk_size: int = 2000) -> ChainReport:
    """Re-compute every hash and link; report the first entry that does not fit."""
    expected_prev: str | None = None
    expected_seq: int | None = None
    checked = 0
    for entry in AuditEntry.objects.order_by("seq").iterator(chunk_size=chunk_size):
        if expected_seq is None:
            # The chain may start after genesis once entries older than the retention
            # period have been dropped; it then starts at its first kept entry.
            if entry.seq == 1 and entry.prev_hash != GENESIS_HASH:
                return ChainReport(False, checked, entry.seq, "the first entry does not start from genesis")
        elif entry.seq != expected_seq:
            return ChainReport(False, checked, expected_seq, f"entry #{expected_seq} is missing")
        if expected_prev is not None and entry.prev_hash != expected_prev:
            return ChainReport(False, checked, entry.seq, "its link to the previous entry is broken")
        if entry.compute_hash() != entry.hash:
            return ChainReport(False, checked, entry.seq, "its content does not match its hash")
        checked += 1
        expected_prev = entry.hash
        expected_seq = entry.seq + 1
    head = ChainHead.objects.filter(pk=1).first()
    if head is not None and head.seq and (expected_seq or 1) - 1 != head.seq:
        return ChainReport(False, checked, (expected_seq or 1), f"entries after #{(expected_seq or 1) - 1} are missing")
    if head is not None and head.seq and head.hash != expected_prev:
        return ChainReport(False, checked, head.seq, "the chain head does not match the last entry")
    return ChainReport(True, checked)


EXPORT_FIELDS = (
    "seq", "created_at", "actor_type", "actor", "user_id", "api_key_id", "action", "flag_key", "flag_id",
    "object_type", "object_id", "change_request_id", "before", "after", "ip", "user_agent", "request_id",
    "prev_hash", "hash",
)


def filter_entries(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    flag_key: str | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> Any:
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


def _row(entry: AuditEntry) -> dict[str, Any]:
    row = {name: getattr(entry, name) for name in EXPORT_FIELDS}
    row["created_at"] = entry.created_at.isoformat()
    return row


def export_jsonl(entries: Any) -> Iterator[str]:
    for entry in entries.iterator(chunk_size=2000):
        yield json.dumps(_row(entry), sort_keys=True, ensure_ascii=False) + "\n"


def export_csv(entries: Any) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    for entry in entries.iterator(chunk_size=2000):
        row = _row(entry)
        writer.writerow(
            [json.dumps(row[n], sort_keys=True) if n in ("before", "after") else row[n] for n in EXPORT_FIELDS]
        )
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
