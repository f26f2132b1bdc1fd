"""Users and their roles; API keys (made, revoked and expired here, audited)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import keys
from accounts.models import ApiKey
from audit import services as audit
from audit.context import ROLE_ADMIN, ROLES, Actor
from flags.errors import Conflict, NotFound, PermissionDenied

User = get_user_model()


def user_create_or_update(*, username: str, role: str, password: str | None = None, email: str = "") -> tuple[object, bool]:
    """Create the user (or give an existing one the role); staff so they can use the admin."""
    if role not in ROLES:
        raise ValidationError({"role": f"role must be one of {', '.join(ROLES)}"})
    if not username or len(username) > 150:
        raise ValidationError({"username": "a user name of 1-150 characters is required"})
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username, defaults={"email": email, "is_staff": True})
        if not user.is_staff:
            user.is_staff = True
        if password:
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        user.save()
        user.groups.add(Group.objects.get(name=role))
    return user, created


# -- API keys --------------------------------------------------------------------------------


def _may_manage_key(actor: Actor, user: Any) -> bool:
    """ADMIN manages unbound keys and their own; anyone manages keys bound to themselves.

    A key bound to a user acts with that user's roles (a SAFETY engineer approves through
    it), so nobody makes or holds such a key for someone else; from the server's command
    line (a system actor) the operator already has every power and may.
    """
    if actor.user is None:
        return actor.has_role(ROLE_ADMIN)
    if user is not None:
        return bool(actor.user.pk == user.pk)
    return actor.has_role(ROLE_ADMIN)


def api_key_create(
    *,
    actor: Actor,
    name: str,
    role: str = ApiKey.Role.READ,
    user: Any = None,
    rate_limit_per_min: int = 10000,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Make a key; returns it with the raw key, which is shown once and never stored."""
    errors: dict[str, str] = {}
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
        errors["name"] = "a name of 1-100 characters is required"
    if role not in ApiKey.Role.values:
        errors["role"] = f"role must be one of {', '.join(ApiKey.Role.values)}"
    if not isinstance(rate_limit_per_min, int) or not 1 <= rate_limit_per_min <= 1_000_000:
        errors["rate_limit_per_min"] = "between 1 and 1000000 requests per minute"
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = "the expiry must be in the future"
    if errors:
        raise ValidationError(errors)
    if not _may_manage_key(actor, user):
        raise PermissionDenied(f"{actor.label} may not create this API key")
    raw, prefix = keys.new_key()
    with transaction.atomic():
        key = ApiKey.objects.create(
            name=name.strip(),
            key_prefix=prefix,
            key_hash=keys.hash_key(raw),
            role=role,
            user=user,
            rate_limit_per_min=rate_limit_per_min,
            expires_at=expires_at,
            created_by=actor.user,
        )
        audit.record(actor=actor, action="CREATE_API_KEY", object_type="api_key", object_id=key.pk,
                     after=keys.describe(key))
    return key, raw


def _forget_on_commit(key_hash: str) -> None:
    """Drop the key's cached lookup once committed; a cache outage then is logged, never
    reported as a failed revocation (the entry expires within API_KEY_CACHE_SECONDS)."""

    # A named function, not functools.partial: Django logs a failed robust hook by its
    # __qualname__, which a partial lacks, so the failure escaped the commit as AttributeError.
    def forget_key() -> None:
        keys.forget(key_hash)

    transaction.on_commit(forget_key, robust=True)


def _lock_key(api_key: ApiKey | int) -> ApiKey:
    pk = api_key.pk if isinstance(api_key, ApiKey) else api_key
    found = ApiKey.objects.select_for_update().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"no API key {pk}")
    return found


def api_key_revoke(*, actor: Actor, api_key: ApiKey | int) -> ApiKey:
    """Revoke for good: the key stops working on every server at once (cache dropped on commit)."""
    with transaction.atomic():
        key = _lock_key(api_key)
        if not _may_manage_key(actor, key.user):
            raise PermissionDenied(f"{actor.label} may not revoke API key ffk_{key.key_prefix}")
        if key.revoked_at is not None:
            raise Conflict(f"API key ffk_{key.key_prefix} is revoked already", code="already_revoked")
        before = keys.describe(key)
        key.is_active = False
        key.revoked_at = timezone.now()
        key.save(update_fields=["is_active", "revoked_at"])
        audit.record(actor=actor, action="REVOKE_API_KEY", object_type="api_key", object_id=key.pk,
                     before=before, after=keys.describe(key))
        _forget_on_commit(key.key_hash)
    return key


def api_key_expire(*, actor: Actor, api_key: ApiKey | int) -> ApiKey:
    """End the key's validity now (it stays on record as expired, not revoked)."""
    with transaction.atomic():
        key = _lock_key(api_key)
        if not _may_manage_key(actor, key.user):
            raise PermissionDenied(f"{actor.label} may not expire API key ffk_{key.key_prefix}")
        if key.revoked_at is not None or key.is_expired:
            raise Conflict(f"API key ffk_{key.key_prefix} is {key.state} already", code=f"already_{key.state}")
        before = keys.describe(key)
        key.expires_at = timezone.now()
        key.save(update_fields=["expires_at"])
        audit.record(actor=actor, action="EXPIRE_API_KEY", object_type="api_key", object_id=key.pk,
                     before=before, after=keys.describe(key))
        _forget_on_commit(key.key_hash)
    return key
