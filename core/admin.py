"""What several admins share."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


class NoWritesAdminMixin:
    """An admin that never adds, changes or deletes rows itself (superusers included):
    changes happen through services, behind buttons and actions that call them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
