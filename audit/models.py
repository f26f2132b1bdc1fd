"""The audit trail: append-only entries, chained by hash so that any change is detectable.

Each entry stores the hash of the previous entry and its own hash over a canonical
serialisation of its fields (``canonical_payload``). Entries refuse update and delete in
Python (model and queryset); on the database a trigger refuses UPDATE, DELETE and
TRUNCATE (see migrations). ``audit.services.verify_chain`` re-computes the chain.

On PostgreSQL the table is partitioned by month of ``created_at`` (migration 0003) so
that entries older than the retention period can be archived and detached a month at a
time; the chain then starts at an ``AuditAnchor``. See ``docs/audit.md``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

from django.db import models
from django.utils import timezone

GENESIS_HASH = "0" * 64
RETENTION_YEARS = 7


class AppendOnlyError(Exception):
    """Audit entries are never changed or removed."""


class AuditEntryQuerySet(models.QuerySet["AuditEntry"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("audit entries are append-only: update refused")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit entries are append-only: delete refused")

    _raw_delete = delete  # type: ignore[assignment]


class AuditEntry(models.Model):
    class ActorType(models.TextChoices):
        USER = "user"
        API_KEY = "api_key"
        SYSTEM = "system"
        VEHICLE = "vehicle"

    # On PostgreSQL the database enforces unique (seq, created_at) and (hash, created_at) only:
    # a partitioned table's unique keys must contain the partition key. Global uniqueness
    # of seq comes from the ChainHead row lock in ``audit.services.record``, and
    # ``verify_chain`` reports a duplicate. SQLite keeps the plain unique columns.
    seq = models.BigIntegerField(unique=True, help_text="Position in the hash chain (1, 2, 3, ...).")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor = models.CharField(max_length=255, help_text="Who acted, as shown to people (kept if the user goes).")
    user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    # No single-column indexes on action and flag_key: (action, created_at) and
    # (flag_key, created_at) serve those lookups, and each index is kept for 7 years.
    action = models.CharField(max_length=32)
    flag_key = models.CharField(max_length=100, blank=True)
    flag_id = models.BigIntegerField(null=True, blank=True)
    object_type = models.CharField(max_length=32, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    change_request_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ("-seq",)
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["flag_key", "-created_at"], name="audit_flag_time"),
            models.Index(fields=["action", "-created_at"], name="audit_action_time"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.flag_key} by {self.actor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit entries are append-only: update refused")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit entries are append-only: delete refused")

    def canonical_payload(self) -> bytes:
        """The bytes the hash covers: every field but the hash itself, in a fixed form."""
        created = self.created_at.astimezone(UTC).isoformat(timespec="microseconds")
        data = {
            "seq": self.seq,
            "created_at": created,
            "actor_type": self.actor_type,
            "actor": self.actor,
            "user_id": self.user_id,
            "api_key_id": self.api_key_id,
            "action": self.action,
            "flag_key": self.flag_key,
            "flag_id": self.flag_id,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "change_request_id": self.change_request_id,
            "before": self.before,
            "after": self.after,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "prev_hash": self.prev_hash,
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def compute_hash(self) -> str:
        return hashlib.sha256(self.canonical_payload()).hexdigest()


class ChainHead(models.Model):
    """The last entry of the chain, locked while an entry is appended (one row).

    The database lets it move forward only (no delete, no lower ``seq``)."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        verbose_name = "audit chain head"

    def __str__(self) -> str:
        return f"chain head #{self.seq}"


class AuditAnchorQuerySet(models.QuerySet["AuditAnchor"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("audit anchors are append-only: update refused")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit anchors are append-only: delete refused")

    _raw_delete = delete  # type: ignore[assignment]


class AuditAnchor(models.Model):
    """Where the kept chain starts once older entries were archived and detached.

    ``seq`` and ``hash`` are those of the last archived entry: the first kept entry must
    be ``seq + 1`` with ``prev_hash == hash``. Without an anchor the chain must start at
    #1 from the genesis hash, so verification never trusts an arbitrary first entry.
    """

    seq = models.BigIntegerField(unique=True, help_text="The last archived entry's position in the chain.")
    hash = models.CharField(max_length=64, help_text="The last archived entry's hash.")
    first_seq = models.BigIntegerField(help_text="The first entry of the archive.")
    entries = models.BigIntegerField(help_text="How many entries the archive holds.")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    partition = models.CharField(max_length=63, blank=True, help_text="The detached PostgreSQL partition.")
    archive_name = models.CharField(max_length=255, help_text="The JSON-lines archive file.")
    archive_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the archive file.")
    created_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=255)

    objects = AuditAnchorQuerySet.as_manager()

    class Meta:
        ordering = ("-seq",)
        verbose_name = "audit archive anchor"

    def __str__(self) -> str:
        return f"anchor #{self.seq} ({self.archive_name})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit anchors are append-only: update refused")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit anchors are append-only: delete refused")
