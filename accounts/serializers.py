"""API keys as the REST API shows them: never the key, never its hash."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import ApiKey

KEY_STATES = ["active", "inactive", "expired", "revoked"]


class ApiKeyLinksSerializer(serializers.Serializer):
    self = serializers.CharField()
    revoke = serializers.CharField()
    expire = serializers.CharField()


class ApiKeySerializer(serializers.Serializer):
    prefix = serializers.CharField(source="key_prefix", help_text="The key's public part: it reads ffk_<prefix>_….")
    name = serializers.CharField()
    role = serializers.ChoiceField(choices=ApiKey.Role.values,
                                   help_text="What an unbound key may do; a bound key acts with its user's roles.")
    user = serializers.SerializerMethodField(help_text="The user the key is bound to (acts as), or null.")
    user_is_active = serializers.SerializerMethodField(
        help_text="Whether the bound user is active (a deactivated user's keys are refused), or null.")
    state = serializers.ChoiceField(choices=KEY_STATES)
    rate_limit_per_min = serializers.IntegerField()
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="To the minute.")
    expires_at = serializers.DateTimeField(allow_null=True)
    created_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    links = serializers.SerializerMethodField()

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_user(self, key: ApiKey) -> str | None:
        return key.user.get_username() if key.user is not None else None

    @extend_schema_field(serializers.BooleanField(allow_null=True))
    def get_user_is_active(self, key: ApiKey) -> bool | None:
        return bool(key.user.is_active) if key.user is not None else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_created_by(self, key: ApiKey) -> str | None:
        return key.created_by.get_username() if key.created_by is not None else None

    @extend_schema_field(ApiKeyLinksSerializer)
    def get_links(self, key: ApiKey) -> dict[str, Any]:
        prefix = key.key_prefix
        return {
            "self": reverse("api:api-key-detail", args=[prefix]),
            "revoke": reverse("api:api-key-revoke", args=[prefix]),
            "expire": reverse("api:api-key-expire", args=[prefix]),
        }


class PaginatedApiKeySerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ApiKeySerializer(many=True)
