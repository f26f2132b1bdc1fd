"""The role groups ADMIN, WRITE, READ and SAFETY with their model permissions."""

from typing import Any

from django.db import migrations

from accounts.roles import MANAGED_APPS, create_app_permissions, sync_role_groups


def create_roles(apps: Any, schema_editor: Any) -> None:
    create_app_permissions(apps, *MANAGED_APPS, "auth")
    sync_role_groups(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("flags", "0001_initial"),
        ("vehicles", "0001_initial"),
        ("audit", "0002_append_only"),
    ]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
