"""Registered vehicles as the API shows them, and what registering takes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.environments import Environment
from core.http.api import paginated

TOKEN_STATES = ["active", "revoked", "none"]


class VehicleSerializer(serializers.Serializer):
    """A registered vehicle as the API shows it: whether it has a live token, never the token or its hash."""

    vin = serializers.CharField()
    model = serializers.CharField()
    sw_version = serializers.CharField()
    region = serializers.CharField()
    environment = serializers.CharField()
    status = serializers.CharField()
    last_seen_at = serializers.DateTimeField(allow_null=True)
    agent_version = serializers.CharField(allow_blank=True)
    agent_memory_mb = serializers.FloatField(allow_null=True)
    agent_cpu_percent = serializers.FloatField(allow_null=True)
    cache_size_mb = serializers.FloatField(allow_null=True)
    token_state = serializers.ChoiceField(choices=TOKEN_STATES,
                                          help_text="active, revoked, or none (registered without a token)")
    token_issued_at = serializers.DateTimeField(allow_null=True)
    token_revoked_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class VehicleCredentialSerializer(VehicleSerializer):
    """The vehicle with its token: answered once, by registration and by rotation."""

    token = serializers.CharField(help_text="The vehicle's token (ffv_…). Shown only in this answer: store it now.")


class TextField(serializers.CharField):
    """Text only: DRF's CharField would take the number 2.9 as the version "2.9"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class VehicleRegisterSerializer(serializers.Serializer):
    vin = TextField(max_length=64, help_text="17 characters of A-H, J-N, P, R-Z and 0-9 (upper-cased)")
    model = TextField(max_length=100)
    sw_version = TextField(max_length=64, help_text="A semantic version, like 2.5.0 or 3.0.0-rc.1")
    region = TextField(max_length=64)
    environment = serializers.ChoiceField(choices=Environment.choices, default=Environment.PRODUCTION,
                                          help_text="Which flags the vehicle receives.")


PaginatedVehicleSerializer = paginated(VehicleSerializer, "PaginatedVehicleList")
