"""Users and their roles."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from audit.context import ROLES

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
