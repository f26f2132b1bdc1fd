"""Users, their roles and groups; API keys. Every change here is audited in its transaction.

The two-person rule for ASIL-D changes rests on who holds SAFETY (and ADMIN, superuser,
staff, active), so this module is the one writer of users' roles, groups and those flags: the
``create_user`` command and the auth admin (``accounts.admin``) call it. Each change writes an
``AccountAction`` entry with the user's state before and after.

API keys: making one follows ``may_create_key``; revoking or expiring one is a move toward the
safe state, so any ADMIN may always do it, and so may the key's owner (its bound user), its
creator, and the key itself (``may_end_key``). What a key may do is cached
(``accounts.keys``): every change to it, or to its user's roles or active flag, refreshes
the cached entry on commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import keys
from accounts.actions import AccountAction
from accounts.codes import KeyCode
from accounts.models import ApiKey
from audit import services as audit
from core.actors import ROLE_ADMIN, ROLES, Actor
from core.errors import Conflict, NotFound, PermissionDenied
from core.transactions import after_commit

User = get_user_model()

# Fields of a user that ``user_update`` changes (password: ``user_create_or_update`` and Django's own form).
DETAIL_FIELDS = ("username", "first_name", "last_name", "email")
FLAG_ACTIONS = {
    # field: (action when it becomes True, action when it becomes False)
    "is_active": (AccountAction.ACTIVATE_USER, AccountAction.DEACTIVATE_USER),
    "is_staff": (AccountAction.GRANT_STAFF, AccountAction.REVOKE_STAFF),
    "is_superuser": (AccountAction.GRANT_SUPERUSER, AccountAction.REVOKE_SUPERUSER),
}
USER_FIELDS = DETAIL_FIELDS + tuple(FLAG_ACTIONS)


# -- who may ----------------------------------------------------------------------------------


def may_manage_users(actor: Actor) -> bool:
    """ADMIN users and keys, and the server's command line (a system actor is ADMIN)."""
    return actor.has_role(ROLE_ADMIN)


def _may_grant_superuser(actor: Actor) -> bool:
    # A superuser bypasses every permission check: only a superuser (or the command line) makes one.
    if actor.user is not None:
        return bool(getattr(actor.user, "is_superuser", False))
    return actor.api_key is None and actor.has_role(ROLE_ADMIN)


def may_create_key(actor: Actor, user: Any) -> bool:
    """ADMIN makes unbound keys and their own; anyone makes keys bound to themselves.

    A key bound to a user acts with that user's roles (a SAFETY engineer approves through
    it), so nobody makes or holds such a key for someone else; from the server's command
    line (a system actor) the operator already has every power and may.
    """
    if actor.user is None:
        return actor.has_role(ROLE_ADMIN)
    if user is not None:
        return bool(actor.user.pk == user.pk)
    return actor.has_role(ROLE_ADMIN)


def may_end_key(actor: Actor, key: ApiKey) -> bool:
    """Who may revoke or expire ``key``: toward the safe state, so more people than may make it.

    Any ADMIN (user, superuser, ADMIN key, the command line); the user the key is bound to;
    the user who made it; and whoever holds the key itself (a leaked key can only be used
    less by revoking it).
    """
    if actor.has_role(ROLE_ADMIN):
        return True
    if actor.user_id is not None and actor.user_id in (key.user_id, key.created_by_id):
        return True
    return actor.api_key is not None and actor.api_key.pk == key.pk


def actor_check_current(*, actor: Actor) -> None:
    """Refuse an actor whose API key or user stopped being valid after the actor was made.

    An ``Actor`` built from a cached key (``accounts.keys``, up to 2 s old) could otherwise
    decide a change request after the key was revoked. Call it inside the deciding
    transaction: the rows stay locked until it ends, so a revocation or deactivation either
    committed before (refused here) or waits for the decision to commit.
    """
    if actor.api_key is not None:
        key = ApiKey.objects.select_for_update(no_key=True).filter(pk=actor.api_key.pk).first()
        if key is None:
            raise PermissionDenied(f"API key {actor.api_key.name!r} no longer exists")
        if key.state != "active":
            raise PermissionDenied(f"API key ffk_{key.key_prefix} is {key.state}")
    if actor.user_id is not None:
        active = (User.objects.select_for_update(no_key=True).filter(pk=actor.user_id)
                  .values_list("is_active", flat=True).first())
        if not active:
            raise PermissionDenied(f"user {actor.user.get_username()} is inactive")


# -- users, roles, groups -----------------------------------------------------------------------


def describe_user(user: Any) -> dict[str, Any]:
    """A user as the audit shows it: never the password or its hash."""
    return {
        "username": user.get_username(),
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": sorted(user.groups.values_list("name", flat=True)),
    }


def _describe_group(group: Group) -> dict[str, Any]:
    return {
        "name": group.name,
        "role": group.name in ROLES,
        "permissions": sorted(f"{app}.{codename}" for app, codename in
                              group.permissions.values_list("content_type__app_label", "codename")),
    }


def _require_user_manager(actor: Actor) -> None:
    if not may_manage_users(actor):
        raise PermissionDenied(f"{actor.label} may not change users, roles or groups")


def _lock_user(user: Any) -> Any:
    # NO KEY UPDATE: rows that refer to the user (group memberships, keys) can still be added
    # meanwhile, so the Group page (group, then users) and the User page cannot deadlock.
    pk = user.pk if isinstance(user, User) else user
    found = User.objects.select_for_update(no_key=True).filter(pk=pk).first()
    if found is None:
        raise NotFound(f"no user {pk}")
    return found


def _record_user(actor: Actor, action: AccountAction, user: Any, before: dict[str, Any] | None) -> dict[str, Any]:
    after = describe_user(user)
    audit.record(actor=actor, action=action, object_type="user", object_id=user.pk, before=before, after=after)
    return after


def _keys_follow(user_id: int) -> None:
    """The user's keys act with the user's roles and active flag: re-cache them on commit."""
    after_commit(keys.refresh_for_user, user_id)


def _validate_username(username: Any) -> str:
    if not isinstance(username, str) or not username or len(username) > 150:
        raise ValidationError({"username": "a user name of 1-150 characters is required"})
    return username


def user_create(
    *, actor: Actor, username: str, password: str | None = None, email: str = "", is_staff: bool = True
) -> Any:
    """Make a user (no roles yet; ``user_set_groups`` gives them). ``password=None``: unusable."""
    _require_user_manager(actor)
    _validate_username(username)
    with transaction.atomic():
        if User.objects.filter(username=username).exists():
            raise Conflict(f"user {username} exists already")
        user = User(username=username, email=email, is_staff=is_staff)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save()
        _record_user(actor, AccountAction.CREATE_USER, user, None)
    return user


def user_update(*, actor: Actor, user: Any, changes: dict[str, Any]) -> Any:
    """Change details and the active, staff and superuser flags; one audit entry per kind of change."""
    unknown = set(changes) - set(USER_FIELDS)
    if unknown:
        raise ValidationError({name: "not a field user_update changes" for name in sorted(unknown)})
    _require_user_manager(actor)
    if "username" in changes:
        _validate_username(changes["username"])
    with transaction.atomic():
        locked = _lock_user(user)
        details = {name: value for name, value in changes.items()
                   if name in DETAIL_FIELDS and getattr(locked, name) != value}
        flags = {name: bool(changes[name]) for name in FLAG_ACTIONS
                 if name in changes and bool(changes[name]) != getattr(locked, name)}
        if "is_superuser" in flags and not _may_grant_superuser(actor):
            raise PermissionDenied(f"{actor.label} is not a superuser: only a superuser grants or removes it")
        state = describe_user(locked)
        if details:
            for name, value in details.items():
                setattr(locked, name, value)
            locked.save(update_fields=list(details))
            state = _record_user(actor, AccountAction.UPDATE_USER, locked, state)
        for name, value in flags.items():
            setattr(locked, name, value)
            locked.save(update_fields=[name])
            on, off = FLAG_ACTIONS[name]
            state = _record_user(actor, on if value else off, locked, state)
        if flags:
            _keys_follow(locked.pk)
    return locked


def user_set_active(*, actor: Actor, user: Any, active: bool) -> Any:
    """Deactivate (or reactivate) a user; their API keys stop (or resume) working on commit."""
    return user_update(actor=actor, user=user, changes={"is_active": active})


def _change_groups(actor: Actor, locked: Any, add: Iterable[Group], remove: Iterable[Group]) -> None:
    state = describe_user(locked)
    for group in sorted(add, key=lambda g: g.name):
        locked.groups.add(group)
        action = AccountAction.ADD_ROLE if group.name in ROLES else AccountAction.ADD_TO_GROUP
        state = _record_user(actor, action, locked, state)
    for group in sorted(remove, key=lambda g: g.name):
        locked.groups.remove(group)
        action = AccountAction.REMOVE_ROLE if group.name in ROLES else AccountAction.REMOVE_FROM_GROUP
        state = _record_user(actor, action, locked, state)
    _keys_follow(locked.pk)


def user_set_groups(*, actor: Actor, user: Any, groups: Iterable[Group]) -> Any:
    """Make ``groups`` the user's groups (roles and teams): one entry per group added or removed."""
    _require_user_manager(actor)
    wanted = {group.pk: group for group in groups}
    with transaction.atomic():
        locked = _lock_user(user)
        current = {group.pk: group for group in locked.groups.all()}
        _change_groups(actor, locked, [g for pk, g in wanted.items() if pk not in current],
                       [g for pk, g in current.items() if pk not in wanted])
    return locked


def user_add_role(*, actor: Actor, user: Any, role: str) -> Any:
    if role not in ROLES:
        raise ValidationError({"role": f"role must be one of {', '.join(ROLES)}"})
    _require_user_manager(actor)
    with transaction.atomic():
        locked = _lock_user(user)
        group = Group.objects.get(name=role)
        if not locked.groups.filter(pk=group.pk).exists():
            _change_groups(actor, locked, [group], [])
    return locked


def group_set_members(*, actor: Actor, group: Group, users: Iterable[Any]) -> Group:
    """Make ``users`` the group's members (from the Group page): audited per user, as from the User page."""
    _require_user_manager(actor)
    wanted = {user.pk for user in users}
    with transaction.atomic():
        group = Group.objects.select_for_update(no_key=True).get(pk=group.pk)
        current = set(group.user_set.values_list("pk", flat=True))
        # Users are locked in pk order, so two pages saved at once cannot deadlock.
        for pk in sorted(wanted ^ current):
            locked = _lock_user(pk)
            if pk in wanted:
                _change_groups(actor, locked, [group], [])
            else:
                _change_groups(actor, locked, [], [group])
    return group


def group_save(*, actor: Actor, group: Group | None, name: str, permissions: Iterable[Permission] | None = None) -> Group:
    """Create a group (``group=None``) or rename it / set its permissions. The role groups are
    defined in code (``accounts.roles``, applied by migrations): they are not renamed or
    re-permissioned here."""
    _require_user_manager(actor)
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 150:
        raise ValidationError({"name": "a name of 1-150 characters is required"})
    name = name.strip()
    with transaction.atomic():
        if group is None or group.pk is None:
            if name in ROLES or Group.objects.filter(name=name).exists():
                raise Conflict(f"group {name} exists already")
            created = Group.objects.create(name=name)
            if permissions is not None:
                created.permissions.set(list(permissions))
            audit.record(actor=actor, action=AccountAction.CREATE_GROUP, object_type="group", object_id=created.pk,
                         after=_describe_group(created))
            return created
        locked = Group.objects.select_for_update(no_key=True).get(pk=group.pk)
        before = _describe_group(locked)
        wanted_perms = None if permissions is None else {p.pk for p in permissions}
        perms_change = wanted_perms is not None and wanted_perms != set(locked.permissions.values_list("pk", flat=True))
        if locked.name in ROLES and (name != locked.name or perms_change):
            raise PermissionDenied(f"{locked.name} is a role: its name and permissions are set by accounts.roles")
        if name == locked.name and not perms_change:
            return locked
        if name != locked.name:
            locked.name = name
            locked.save(update_fields=["name"])
        if perms_change and wanted_perms is not None:
            locked.permissions.set(list(wanted_perms))
        audit.record(actor=actor, action=AccountAction.UPDATE_GROUP, object_type="group", object_id=locked.pk,
                     before=before, after=_describe_group(locked))
    return locked


def user_create_or_update(
    *, username: str, role: str, password: str | None = None, email: str = "", actor: Actor | None = None
) -> tuple[Any, bool]:
    """Create the user (or give an existing one the role); staff so they can use the admin.

    Without an actor the change is audited as the system (``create_user`` names itself)."""
    actor = actor or Actor.for_system("accounts.user_create_or_update")
    if role not in ROLES:
        raise ValidationError({"role": f"role must be one of {', '.join(ROLES)}"})
    _validate_username(username)
    with transaction.atomic():
        user = User.objects.select_for_update(no_key=True).filter(username=username).first()
        created = user is None
        if user is None:
            user = user_create(actor=actor, username=username, password=password, email=email, is_staff=True)
        else:
            if not user.is_staff:
                user = user_update(actor=actor, user=user, changes={"is_staff": True})
            if password:
                user.set_password(password)
                user.save(update_fields=["password"])
        user = user_add_role(actor=actor, user=user, role=role)
    return user, created


# -- API keys --------------------------------------------------------------------------------


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
    if not may_create_key(actor, user):
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
        audit.record(actor=actor, action=AccountAction.CREATE_API_KEY, object_type="api_key", object_id=key.pk,
                     after=keys.describe(key))
    return key, raw


def _lock_key(api_key: ApiKey | int) -> ApiKey:
    pk = api_key.pk if isinstance(api_key, ApiKey) else api_key
    found = ApiKey.objects.select_for_update().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"no API key {pk}")
    return found


def api_key_revoke(*, actor: Actor, api_key: ApiKey | int) -> ApiKey:
    """Revoke for good: refused everywhere within API_KEY_LOCAL_CACHE_SECONDS of the commit."""
    with transaction.atomic():
        key = _lock_key(api_key)
        if not may_end_key(actor, key):
            raise PermissionDenied(f"{actor.label} may not revoke API key ffk_{key.key_prefix}")
        if key.revoked_at is not None:
            raise Conflict(f"API key ffk_{key.key_prefix} is revoked already", code=KeyCode.ALREADY_REVOKED)
        before = keys.describe(key)
        key.is_active = False
        key.revoked_at = timezone.now()
        key.save(update_fields=["is_active", "revoked_at"])
        audit.record(actor=actor, action=AccountAction.REVOKE_API_KEY, object_type="api_key", object_id=key.pk,
                     before=before, after=keys.describe(key))
        after_commit(keys.refresh, key.key_hash)
    return key


def api_key_expire(*, actor: Actor, api_key: ApiKey | int) -> ApiKey:
    """End the key's validity now (it stays on record as expired, not revoked)."""
    with transaction.atomic():
        key = _lock_key(api_key)
        if not may_end_key(actor, key):
            raise PermissionDenied(f"{actor.label} may not expire API key ffk_{key.key_prefix}")
        if key.revoked_at is not None:
            raise Conflict(f"API key ffk_{key.key_prefix} is revoked already", code=KeyCode.ALREADY_REVOKED)
        if key.is_expired:
            raise Conflict(f"API key ffk_{key.key_prefix} is expired already", code=KeyCode.ALREADY_EXPIRED)
        before = keys.describe(key)
        key.expires_at = timezone.now()
        key.save(update_fields=["expires_at"])
        audit.record(actor=actor, action=AccountAction.EXPIRE_API_KEY, object_type="api_key", object_id=key.pk,
                     before=before, after=keys.describe(key))
        after_commit(keys.refresh, key.key_hash)
    return key
