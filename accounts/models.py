"""Users are Django's; roles are groups (ADMIN, WRITE, READ, SAFETY), see ``accounts.roles``.

API keys (SPEC §2) let scripts and Tier-1 suppliers use the REST API. Only the SHA-256 of a
key is stored; the key itself is shown once, when it is made (``accounts.services``).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    class Role(models.TextChoices):
        READ = "READ", "Read"
        WRITE = "WRITE", "Write"
        ADMIN = "ADMIN", "Admin"

    name = models.CharField(max_length=100, help_text="Who uses the key, e.g. the supplier and script.")
    key_prefix = models.CharField(max_length=16, unique=True, help_text="The key's public part, shown in lists.")
    key_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the whole key.")
    role = models.CharField(
        max_length=8,
        choices=Role.choices,
        default=Role.READ,
        help_text="What an unbound key may do. A key bound to a user acts with that user's roles instead.",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
        help_text="Optional: the key acts as this user (with the user's roles), e.g. a SAFETY engineer's script.",
    )
    rate_limit_per_min = models.PositiveIntegerField(default=10000)
    is_active = models.BooleanField(default=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Kept to the minute.")
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=["READ", "WRITE", "ADMIN"]), name="apikey_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (ffk_{self.key_prefix}_…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if not self.is_active:
            return "inactive"
        if self.is_expired:
            return "expired"
        return "active"
