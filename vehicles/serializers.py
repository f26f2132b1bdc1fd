"""Registered vehicles as the API shows them."""

from __future__ import annotations

from rest_framework import serializers

from core.http.api import paginated


class VehicleSerializer(serializers.Serializer):
    """A registered vehicle as the API shows it: never its credential."""

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
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


PaginatedVehicleSerializer = paginated(VehicleSerializer, "PaginatedVehicleList")
