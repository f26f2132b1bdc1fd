"""API keys (SPEC §2); ADMIN gets their model permissions."""

from typing import Any


import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from accounts.roles import create_app_permissions, sync_role_groups


def resync_roles(apps: Any, schema_editor: Any) -> None:
    # The ApiKey permissions exist only after this migration's CreateModel: make them now
    # so that the ADMIN group carries them.
    create_app_permissions(apps, "accounts")
    sync_role_groups(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_roles'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ApiKey',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(help_text='Who uses the key, e.g. the supplier and script.', max_length=100)),
                ('key_prefix', models.CharField(help_text="The key's public part, shown in lists.", max_length=16, unique=True)),
                ('key_hash', models.CharField(help_text='SHA-256 of the whole key.', max_length=64, unique=True)),
                ('role', models.CharField(choices=[('READ', 'Read'), ('WRITE', 'Write'), ('ADMIN', 'Admin')], default='READ', help_text="What an unbound key may do. A key bound to a user acts with that user's roles instead.", max_length=8)),
                ('rate_limit_per_min', models.PositiveIntegerField(default=10000)),
                ('is_active', models.BooleanField(default=True)),
                ('last_used_at', models.DateTimeField(blank=True, help_text='Kept to the minute.', null=True)),
                ('expires_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('user', models.ForeignKey(blank=True, help_text="Optional: the key acts as this user (with the user's roles), e.g. a SAFETY engineer's script.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name='api_keys', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'API key',
                'verbose_name_plural': 'API keys',
                'ordering': ('-created_at',),
                'constraints': [models.CheckConstraint(condition=models.Q(('role__in', ['READ', 'WRITE', 'ADMIN'])), name='apikey_role_valid')],
            },
        ),
        migrations.RunPython(resync_roles, migrations.RunPython.noop),
    ]
