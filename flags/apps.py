from django.apps import AppConfig


class FlagsConfig(AppConfig):
    name = "flags"
    verbose_name = "Feature flags"

    def ready(self) -> None:
        # core is not an app: its signing-key checks are registered by importing it here,
        # from the app whose snapshots it signs.
        from core import signing  # noqa: F401
