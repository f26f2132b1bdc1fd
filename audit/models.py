"""The audit trail: append-only entries, chained by hash so that any change is detectable.

Each entry stores the hash of the previous entry and its own hash over a canonical
serialisation of its fields (``canonical_payload``). Entries refuse update and delete in
Python (model and queryset); on the database a trigger refuses UPDATE, DELETE and
TRUNCATE (see migrations). ``audit.services.verify_chain`` re-computes the chain.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

from django.db import models
from django.utils import timezone

GENESIS_HASH = "0" * 64


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

    seq = models.BigIntegerField(unique=True, help_text="Position in the hash chain (1, 2, 3, ...).")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor = models.CharField(max_length=255, help_text="Who acted, as shown to people (kept if the user goes).")
    user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=32, db_index=True)
    flag_key = models.CharField(max_length=100, blank=True, db_index=True)
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
    """The last entry of the chain, locked while an entry is appended (one row)."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        verbose_name = "audit chain head"

    def __str__(self) -> str:
        return f"chain head #{self.seq}"
