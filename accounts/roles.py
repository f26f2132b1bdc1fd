"""The four roles as groups, with the model permissions each one carries."""

from __future__ import annotations

from typing import Any

from core.actors import ROLE_ADMIN, ROLE_READ, ROLE_SAFETY, ROLE_WRITE, ROLES

MANAGED_APPS = ("flags", "vehicles", "experiments", "audit", "accounts")

# (app_label, codename) per role; ADMIN gets every permission of the managed apps and auth.
ROLE_PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    ROLE_WRITE: [
        ("flags", "add_flag"), ("flags", "change_flag"), ("flags", "view_flag"), ("flags", "archive_flag"),
        ("flags", "add_rule"), ("flags", "change_rule"), ("flags", "delete_rule"), ("flags", "view_rule"),
        ("flags", "view_changerequest"), ("vehicles", "view_vehicle"), ("audit", "view_auditentry"),
    ],
    ROLE_READ: [
        ("flags", "view_flag"), ("flags", "view_rule"), ("flags", "view_changerequest"),
        ("vehicles", "view_vehicle"), ("audit", "view_auditentry"),
    ],
    ROLE_SAFETY: [
        ("flags", "view_flag"), ("flags", "view_rule"), ("flags", "view_changerequest"),
        ("flags", "approve_changerequest"), ("vehicles", "view_vehicle"), ("audit", "view_auditentry"),
    ],
}


def create_app_permissions(apps: Any, *labels: str) -> None:
    """Make the permissions of these apps now, inside a migration (Django makes them only
    after migrate ends), so that role groups can be given them in the same migration."""
    from django.contrib.auth.management import create_permissions

    # Apps without models (experiments, for now) have no config in a migration's state.
    for config in apps.get_app_configs():
        if config.label not in labels:
            continue
        config.models_module = True
        create_permissions(config, verbosity=0)
        config.models_module = None


def sync_role_groups(group_model: Any, permission_model: Any) -> None:
    """Create the role groups and give them their permissions (idempotent)."""
    for role in ROLES:
        group, _ = group_model.objects.get_or_create(name=role)
        if role == ROLE_ADMIN:
            perms = permission_model.objects.filter(content_type__app_label__in=(*MANAGED_APPS, "auth")).exclude(
                content_type__app_label="audit", codename__in=("add_auditentry", "change_auditentry",
                                                               "delete_auditentry")
            )
        else:
            wanted = ROLE_PERMISSIONS[role]
            perms = permission_model.objects.none()
            for app_label, codename in wanted:
                perms = perms | permission_model.objects.filter(content_type__app_label=app_label, codename=codename)
        group.permissions.set(list(perms))
