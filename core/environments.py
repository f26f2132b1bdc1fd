"""The environments flags live in and vehicles receive: one vocabulary for every app."""

from __future__ import annotations

from django.db import models


class Environment(models.TextChoices):
    DEVELOPMENT = "development", "Development"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"
