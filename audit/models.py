"""The audit trail: append-only entries, chained by a keyed MAC so that any change is detectable.

Each entry stores the MAC of the previous entry (``prev_hash``) and its own MAC (``hash``):
HMAC-SHA256 over a canonical serialisation of its fields, the link included
(``canonical_payload``), under the key named by its ``kid``. The keys come from settings,
never from the database, so the database's rights alone cannot make an entry that verifies.
Entries made before keyed MACs (``kid`` empty) carry plain SHA-256 and are accepted only up
to ``settings.AUDIT_LEGACY_LAST_SEQ``. Entries refuse update and delete in Python (model and
queryset); on the database a trigger refuses UPDATE, DELETE and TRUNCATE (see migrations).
``audit.services.verify_chain`` re-computes the chain.

On PostgreSQL the table is partitioned by month of ``created_at`` (migration 0003) so
that entries older than the retention period can be archived and detached a month at a
time; the chain then starts at an ``AuditAnchor``. See ``docs/audit.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import models
from django.utils import timezone

GENESIS_HASH = "0" * 64
RETENTION_YEARS = 7
LEGACY_KID = ""  # entries made before keyed MACs: plain SHA-256

# One key MACs entries, the chain head, archive anchors and checkpoints: a label in front of
# each payload keeps a MAC made for one of them from passing as another's.
ENTRY_LABEL = b"fleetflag.audit.entry.v1\x00"
HEAD_LABEL = b"fleetflag.audit.head.v1\x00"
ANCHOR_LABEL = b"fleetflag.audit.anchor.v1\x00"
CHECKPOINT_LABEL = b"fleetflag.audit.checkpoint.v1\x00"


def current_kid() -> str:
    """The id of the key new entries, heads, anchors and checkpoints are MACed with."""
    return str(settings.AUDIT_HMAC_KID)


def key_configured(kid: str) -> bool:
    return kid in settings.AUDIT_HMAC_KEYS


def keyed_mac(kid: str, label: bytes, payload: bytes) -> str | None:
    """HMAC-SHA256 of ``label + payload`` under the key ``kid``; None if no such key is configured."""
    key = settings.AUDIT_HMAC_KEYS.get(kid)
    if key is None:
        return None
    return hmac.new(key.encode(), label + payload, hashlib.sha256).hexdigest()


def mac_matches(expected: str | None, stored: str) -> bool:
    return expected is not None and hmac.compare_digest(expected, stored)


def canonical_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@checks.register(checks.Tags.security, deploy=True)
def check_audit_key(**kwargs: Any) -> list[checks.CheckMessage]:
    """``manage.py check --deploy``: the embedded development key protects nothing."""
    if not settings.AUDIT_HMAC_DEV_KEY_IN_USE:
        return []
    return [
        checks.Warning(
            "audit entries are MACed with the embedded development key, whose value is public",
            hint="set AUDIT_HMAC_KEY (or AUDIT_HMAC_KEY_FILE) and AUDIT_HMAC_KID; see docs/audit.md",
            id="audit.W001",
        )
    ]


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
    # The names stay "prev_hash" and "hash" (API, exports, archives): for an entry with a kid
    # they hold HMAC-SHA256 values, for a legacy entry SHA-256. Their definitions are left as
    # 0001 made them: on PostgreSQL the partitioned table's constraints are hand-made (0003).
    prev_hash = models.CharField(max_length=64)
    kid = models.CharField(max_length=32, blank=True, default=LEGACY_KID,
                           help_text="Id of the key that MACed this entry; empty: a legacy SHA-256 entry.")
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
        """The bytes the MAC covers: every field but the MAC itself, the link and the kid
        included, in a fixed form (a legacy entry's form has no kid: byte for byte as before)."""
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
        if self.kid != LEGACY_KID:
            data["kid"] = self.kid
        return canonical_json(data)

    def compute_hash(self) -> str | None:
        """The entry's MAC under its kid (legacy: its SHA-256); None when that key is not configured."""
        if self.kid == LEGACY_KID:
            return hashlib.sha256(self.canonical_payload()).hexdigest()
        return keyed_mac(self.kid, ENTRY_LABEL, self.canonical_payload())


class ChainHead(models.Model):
    """The last entry of the chain, locked while an entry is appended (one row).

    The database lets it move forward only, one entry at a time (no delete, no truncate, no
    lower or equal ``seq``). Its own MAC ties ``seq`` to that entry's MAC, so moving it
    takes the key too (until the first keyed entry, a head at genesis or in the legacy
    range has none)."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)
    kid = models.CharField(max_length=32, blank=True, default=LEGACY_KID)
    mac = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        verbose_name = "audit chain head"

    def __str__(self) -> str:
        return f"chain head #{self.seq}"

    def compute_mac(self) -> str | None:
        return keyed_mac(self.kid, HEAD_LABEL, canonical_json({"seq": self.seq, "hash": self.hash, "kid": self.kid}))


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
    # An anchor decides where verification starts: without a MAC anyone who can INSERT
    # could make it start after entries they then hide.
    kid = models.CharField(max_length=32, blank=True, default=LEGACY_KID)
    mac = models.CharField(max_length=64, blank=True, default="")

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

    def compute_mac(self) -> str | None:
        return keyed_mac(self.kid, ANCHOR_LABEL, canonical_json({
            "seq": self.seq,
            "hash": self.hash,
            "first_seq": self.first_seq,
            "entries": self.entries,
            "period_start": self.period_start.astimezone(UTC).isoformat(timespec="microseconds"),
            "period_end": self.period_end.astimezone(UTC).isoformat(timespec="microseconds"),
            "archive_sha256": self.archive_sha256,
            "kid": self.kid,
        }))
