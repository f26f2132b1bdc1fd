"""Registered vehicles, read-only: registration and credentials go through the API and commands.

The credential hash is never shown or edited here; only whether one is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from core.admin import NoWritesAdminMixin
from vehicles.models import Vehicle

if TYPE_CHECKING:
    _VehicleAdminBase = admin.ModelAdmin[Vehicle]
else:
    _VehicleAdminBase = admin.ModelAdmin


@admin.register(Vehicle)
class VehicleAdmin(NoWritesAdminMixin, _VehicleAdminBase):
    list_display = ("vin", "model", "sw_version", "region", "environment", "status", "last_seen_at", "agent_version",
                    "has_credential")
    list_filter = ("environment", "status", "model", "region")
    search_fields = ("^vin", "model", "sw_version")
    search_help_text = "A VIN (or its beginning), a model or a software version."
    date_hierarchy = "last_seen_at"
    list_per_page = 100
    fields = ("vin", "model", "sw_version", "region", "environment", "status", "last_seen_at", "agent_version",
              "agent_memory_mb", "agent_cpu_percent", "cache_size_mb", "has_credential", "created_at", "updated_at")
    readonly_fields = fields

    @admin.display(description="Credential", boolean=True)
    def has_credential(self, obj: Vehicle) -> bool:
        return bool(obj.token_hash)

