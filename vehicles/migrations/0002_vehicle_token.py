"""The vehicle credential: ``token_hash`` unique (NULL while there is none), and when it was
issued and revoked. Rows written before this kept ``""`` for "no credential": made NULL
first, so the unique index admits any number of vehicles without one."""

from django.db import migrations, models


def blank_to_null(apps, schema_editor):
    Vehicle = apps.get_model("vehicles", "Vehicle")
    Vehicle.objects.filter(token_hash="").update(token_hash=None)


def null_to_blank(apps, schema_editor):
    Vehicle = apps.get_model("vehicles", "Vehicle")
    Vehicle.objects.filter(token_hash__isnull=True).update(token_hash="")


class Migration(migrations.Migration):

    dependencies = [
        ("vehicles", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="vehicle",
            name="token_hash",
            field=models.CharField(blank=True, editable=False, help_text="SHA-256 of the vehicle's token.",
                                   max_length=64, null=True),
        ),
        migrations.RunPython(blank_to_null, null_to_blank),
        migrations.AlterField(
            model_name="vehicle",
            name="token_hash",
            field=models.CharField(blank=True, editable=False, help_text="SHA-256 of the vehicle's token.",
                                   max_length=64, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="vehicle",
            name="token_issued_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="vehicle",
            name="token_revoked_at",
            field=models.DateTimeField(blank=True, editable=False, help_text="Set when the token was revoked; a rotation clears it.",
                                       null=True),
        ),
    ]
