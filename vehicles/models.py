from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from agent_client.rules import VIN_RE


class VehicleStatus(models.TextChoices):
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    MAINTENANCE = "maintenance", "Maintenance"


class Vehicle(models.Model):
    vin = models.CharField(
        max_length=17,
        primary_key=True,
        validators=[RegexValidator(VIN_RE.pattern, "17 characters of A-H, J-N, P, R-Z and 0-9")],
    )
    model = models.CharField(max_length=100)
    sw_version = models.CharField(max_length=64)
    region = models.CharField(max_length=64)
    environment = models.CharField(max_length=16, default="production")
    status = models.CharField(max_length=16, choices=VehicleStatus.choices, default=VehicleStatus.OFFLINE)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=32, blank=True)
    agent_memory_mb = models.FloatField(null=True, blank=True)
    agent_cpu_percent = models.FloatField(null=True, blank=True)
    cache_size_mb = models.FloatField(null=True, blank=True)
    # The credential (SPEC §2): only the SHA-256 of the token is kept; the token is shown once.
    # Unique, so the websocket's check is one indexed lookup; NULL while the vehicle has none.
    token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False,
                                  help_text="SHA-256 of the vehicle's token.")
    token_issued_at = models.DateTimeField(null=True, blank=True, editable=False)
    token_revoked_at = models.DateTimeField(null=True, blank=True, editable=False,
                                            help_text="Set when the token was revoked; a rotation clears it.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("vin",)
        indexes = [models.Index(fields=["environment", "model", "region"], name="vehicle_targeting")]

    def __str__(self) -> str:
        return self.vin

    @property
    def token_state(self) -> str:
        """``active``, ``revoked`` or ``none`` (never had one, e.g. registered by ``vehicle_upsert``)."""
        if not self.token_hash:
            return "none"
        return "revoked" if self.token_revoked_at is not None else "active"

    def context(self) -> dict[str, str]:
        """The evaluation context attributes the server fills in from the registry."""
        return {"model": self.model, "sw_version": self.sw_version, "region": self.region}
