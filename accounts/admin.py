"""API keys, users and groups in the admin; every change goes through ``accounts.services``.

API keys: create (the key is shown once), list by prefix, revoke or expire. ADMIN users see
and end every key; anyone else sees the keys bound to them or made by them, and may revoke or
expire those (toward the safe state). Keys are never deleted: the audit refers to them.

Users and groups replace Django's auth admin so that every change of roles, groups, staff,
superuser and active is audited: ``save_model`` and ``save_related`` call the services
instead of saving the form (``form.save_m2m`` is never called). Membership is edited from
either side — the user's groups or the group's members — and both end in the same service
and the same audit entries. Paths the service cannot audit are closed: direct user
permissions are not edited (roles are groups), users and groups are not deleted (deactivate a
user instead), the role groups' names and permissions are read-only (``accounts.roles``), and
only superusers see the superuser box.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from accounts import selectors, services
from accounts.models import ApiKey
from core.actors import ROLES, Actor
from core.errors import ServiceError

User = get_user_model()


class ApiKeyCreateForm(forms.ModelForm):
    request: HttpRequest | None = None

    class Meta:
        model = ApiKey
        fields = ("name", "role", "user", "rate_limit_per_min", "expires_at")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.request is not None:
            actor = Actor.from_request(self.request)
            if not services.may_create_key(actor, data.get("user")):
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

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return selectors.api_keys_visible_to(actor=Actor.for_user(request.user))

    # Anyone on the admin site sees the keys they may end (get_queryset narrows the list);
    # adding and changing keep the model permissions (ADMIN).
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        if not self.has_module_permission(request):
            return False
        return obj is None or services.may_end_key(Actor.for_user(request.user), obj)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)  # which keys: decided per key by the service

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

    @admin.action(description="Revoke selected API keys (for good)", permissions=["revoke"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._each(request, queryset, "Revoked", services.api_key_revoke)

    @admin.action(description="Expire selected API keys now", permissions=["revoke"])
    def expire_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._each(request, queryset, "Expired", services.api_key_expire)


# -- users and groups ----------------------------------------------------------------------------


def _manages_users(request: HttpRequest) -> bool:
    return services.may_manage_users(Actor.for_user(request.user))


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        (_("Personal info"), {"fields": ("first_name", "last_name", "email")}),
        (_("Roles and access"), {
            "fields": ("is_active", "is_staff", "is_superuser", "groups"),
            "description": "Roles are the groups ADMIN, WRITE, READ and SAFETY; other groups are teams. "
                           "Every change here is audited.",
        }),
        (_("Important dates"), {"fields": ("last_login", "date_joined")}),
    )
    filter_horizontal = ("groups",)
    readonly_fields = ("last_login", "date_joined")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and not request.user.is_superuser:
            fields += ("is_superuser",)  # the service would refuse it
        return fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and _manages_users(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and _manages_users(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deactivate instead: the audit and the API keys refer to users

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        actor = Actor.from_request(request)
        if not change:
            usable = form.cleaned_data.get("set_usable_password", True)
            created = services.user_create(actor=actor, username=obj.get_username(),
                                           password=form.cleaned_data.get("password1") if usable else None,
                                           email=obj.email, is_staff=obj.is_staff)
            obj.pk, obj.password = created.pk, created.password
            obj._state.adding, obj._state.db = False, created._state.db
            return
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in services.USER_FIELDS}
        if changes:
            services.user_update(actor=actor, user=obj.pk, changes=changes)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if "groups" in form.cleaned_data:
            services.user_set_groups(actor=Actor.from_request(request), user=form.instance,
                                     groups=form.cleaned_data["groups"])
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)


class GroupAdminForm(forms.ModelForm):
    members = forms.ModelMultipleChoiceField(
        queryset=User.objects.order_by("username"), required=False,
        widget=FilteredSelectMultiple("users", is_stacked=False),
        help_text="Every membership added or removed here is audited, as from the user's page.",
    )

    class Meta:
        model = Group
        fields = ("name", "permissions")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["members"].initial = list(self.instance.user_set.values_list("pk", flat=True))


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    form = GroupAdminForm
    fields = ("name", "members", "permissions")
    list_display = ("name", "is_role", "member_count")

    @admin.display(description="role", boolean=True)
    def is_role(self, obj: Group) -> bool:
        return obj.name in ROLES

    @admin.display(description="members")
    def member_count(self, obj: Group) -> int:
        return obj.user_set.count()

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.name in ROLES:
            return ("name", "permissions")  # defined in accounts.roles, applied by migrations
        return ()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and _manages_users(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and _manages_users(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting a group would drop its memberships without an audit entry per user

    def save_model(self, request: HttpRequest, obj: Group, form: Any, change: bool) -> None:
        group = services.group_save(
            actor=Actor.from_request(request),
            group=obj if change else None,
            name=form.cleaned_data.get("name", obj.name),
            permissions=form.cleaned_data.get("permissions"),
        )
        obj.pk = group.pk
        obj._state.adding, obj._state.db = False, group._state.db

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if "members" in form.cleaned_data:
            services.group_set_members(actor=Actor.from_request(request), group=form.instance,
                                       users=form.cleaned_data["members"])
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)
