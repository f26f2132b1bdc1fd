"""The audit trail as the API shows it."""

from __future__ import annotations

from rest_framework import serializers

from core.http.api import AnyJSONField, paginated


class AuditEntrySerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor_type = serializers.CharField()
    actor = serializers.CharField()
    user_id = serializers.IntegerField(allow_null=True)
    api_key_id = serializers.IntegerField(allow_null=True)
    action = serializers.CharField()
    flag_key = serializers.CharField()
    flag_id = serializers.IntegerField(allow_null=True)
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    change_request_id = serializers.IntegerField(allow_null=True)
    before = AnyJSONField(allow_null=True)
    after = AnyJSONField(allow_null=True)
    ip = serializers.CharField(allow_null=True)
    user_agent = serializers.CharField()
    request_id = serializers.CharField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


PaginatedAuditEntrySerializer = paginated(AuditEntrySerializer, "PaginatedAuditEntryList")
