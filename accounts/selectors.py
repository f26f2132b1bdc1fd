"""Reads of API keys for the interfaces (the command, the admin, the API)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from accounts import keys
from accounts.models import ApiKey
from core.actors import ROLE_ADMIN, Actor
from core.errors import NotFound


def api_key_get(*, prefix: str) -> ApiKey:
    """The key named by its prefix (``abcd1234``, ``ffk_abcd1234`` or ``ffk_abcd1234_...``)."""
    parsed = keys.parse_prefix(prefix)
    found = (ApiKey.objects.select_related("user", "created_by").filter(key_prefix=parsed).first()
             if parsed else None)
    if found is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    return found


def api_keys_visible_to(*, actor: Actor) -> QuerySet[ApiKey]:
    """ADMIN sees every key; anyone else the keys they may revoke (``services.may_end_key``):
    bound to them, made by them, or the calling key itself."""
    found = ApiKey.objects.select_related("user", "created_by")
    if actor.has_role(ROLE_ADMIN):
        return found
    mine = Q(pk__in=[])
    if actor.user_id is not None:
        mine |= Q(user_id=actor.user_id) | Q(created_by_id=actor.user_id)
    if actor.api_key is not None:
        mine |= Q(pk=actor.api_key.pk)
    return found.filter(mine)
