"""The role groups ADMIN, WRITE, READ and SAFETY with their model permissions."""

from typing import Any

from django.contrib.auth.management import create_permissions
from django.db import migrations

from accounts.roles import MANAGED_APPS, sync_role_groups


def create_roles(apps: Any, schema_editor: Any) -> None:
    # Permissions are normally made after migrate; the groups need them now.
    for app_config in apps.get_app_configs():
        if app_config.label in (*MANAGED_APPS, "auth"):
            app_config.models_module = True
            create_permissions(app_config, verbosity=0)
            app_config.models_module = None
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
