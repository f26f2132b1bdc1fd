"""API keys in the admin: create (the key is shown once), list by prefix, revoke or expire.

Every change goes through ``accounts.services`` so it is audited; keys are never deleted.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts import services
from accounts.models import ApiKey
from core.actors import Actor
from core.errors import ServiceError


class ApiKeyCreateForm(forms.ModelForm):
    request: HttpRequest | None = None

    class Meta:
        model = ApiKey
        fields = ("name", "role", "user", "rate_limit_per_min", "expires_at")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.request is not None:
            actor = Actor.from_request(self.request)
            if not services._may_manage_key(actor, data.get("user")):
                raise ValidationError(
                    "ADMIN users make unbound keys and keys bound to themselves; a key bound to someone else "
                    "would let you act as them, so only they (or the server's command line) can make it."
                )
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "role", "user", "state", "rate_limit_per_min", "last_used_at", "expires_at",
                    "created_at")
    list_filter = ("role", "is_active")
    search_fields = ("name", "key_prefix", "user__username")
    actions = ["revoke_keys", "expire_keys"]
    readonly_fields = ("name", "prefix", "role", "user", "state", "rate_limit_per_min", "last_used_at",
                       "expires_at", "created_by", "created_at", "revoked_at")

    @admin.display(description="key")
    def prefix(self, obj: ApiKey) -> str:
        return f"ffk_{obj.key_prefix}_…"

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return ApiKeyCreateForm.Meta.fields
        return self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        return () if obj is None else self.readonly_fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request = request  # type: ignore[attr-defined]
        return form

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are revoked, never deleted: the audit refers to them

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return  # nothing about a key changes in place
        key, raw = services.api_key_create(
            actor=Actor.from_request(request),
            name=obj.name,
            role=obj.role,
            user=obj.user,
            rate_limit_per_min=obj.rate_limit_per_min,
            expires_at=obj.expires_at,
        )
        obj.pk = key.pk
        obj.key_prefix = key.key_prefix
        messages.warning(request, f"API key {key.name!r} created. Copy it now — it is shown only this once: {raw}")

    def _each(self, request: HttpRequest, queryset: QuerySet[ApiKey], verb: str, call: Any) -> None:
        actor = Actor.from_request(request)
        done = 0
        for key in queryset:
            try:
                call(actor=actor, api_key=key)
                done += 1
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} API key(s).", messages.SUCCESS)

    @admin.action(description="Revoke selected API keys (for good)", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._each(request, queryset, "Revoked", services.api_key_revoke)

    @admin.action(description="Expire selected API keys now", permissions=["change"])
    def expire_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._each(request, queryset, "Expired", services.api_key_expire)
