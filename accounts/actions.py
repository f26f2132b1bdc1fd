"""The audit actions of the accounts app: API keys, users, roles and groups.

The two-person rule rests on who holds which role, so every change to a user's roles, groups,
superuser, staff or active flag is recorded (``accounts.services``), with the user's state
before and after, in the transaction of the change.
"""

from __future__ import annotations

from django.db import models


class AccountAction(models.TextChoices):
    CREATE_API_KEY = "CREATE_API_KEY", "API key created"
    REVOKE_API_KEY = "REVOKE_API_KEY", "API key revoked"
    EXPIRE_API_KEY = "EXPIRE_API_KEY", "API key expired"

    CREATE_USER = "CREATE_USER", "User created"
    UPDATE_USER = "UPDATE_USER", "User details changed"
    ACTIVATE_USER = "ACTIVATE_USER", "User activated"
    DEACTIVATE_USER = "DEACTIVATE_USER", "User deactivated"
    GRANT_STAFF = "GRANT_STAFF", "Admin site access granted"
    REVOKE_STAFF = "REVOKE_STAFF", "Admin site access removed"
    GRANT_SUPERUSER = "GRANT_SUPERUSER", "Superuser granted"
    REVOKE_SUPERUSER = "REVOKE_SUPERUSER", "Superuser removed"
    # Role groups (ADMIN, WRITE, READ, SAFETY) and the other groups (teams that own flags).
    ADD_ROLE = "ADD_ROLE", "Role granted"
    REMOVE_ROLE = "REMOVE_ROLE", "Role removed"
    ADD_TO_GROUP = "ADD_TO_GROUP", "Added to group"
    REMOVE_FROM_GROUP = "REMOVE_FROM_GROUP", "Removed from group"

    CREATE_GROUP = "CREATE_GROUP", "Group created"
    UPDATE_GROUP = "UPDATE_GROUP", "Group changed"
