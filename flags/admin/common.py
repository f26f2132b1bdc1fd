"""What the flag and change-request admins share: the actor of a request, badges, stamps,
filters with a per-user default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.actors import Actor
from flags.forms import NON_FIELD, FieldErrors
from flags.models import ChangeRequest, SafetyLevel

ADMIN_CSS = {"all": ("admin_ext/fleetflag.css",)}
SAFETY_RANK = {level: rank for rank, level in enumerate(SafetyLevel.values)}


# -- small shared pieces -------------------------------------------------------------------


def actor_of(request: HttpRequest) -> Actor:
    """The user's roles for permission checks (cached per request; no request metadata)."""
    cached = getattr(request, "_ff_actor", None)
    if cached is None or cached.user != request.user:
        cached = Actor.for_user(request.user)
        request._ff_actor = cached  # type: ignore[attr-defined]
    return cached


def safety_badge(level: str) -> SafeString:
    label = SafetyLevel(level).label if level in SafetyLevel.values else level
    css = {"ASIL_D": "ff-asil-d", "ASIL_B": "ff-asil-b", "SAFETY_RELEVANT": "ff-safety-relevant"}.get(level, "ff-nc")
    if level == SafetyLevel.ASIL_D:
        return format_html('<span class="ff-badge {}" title="{}">&#9888; {}</span>', css,
                           "ASIL-D: every change needs approval by a second person (SAFETY)", label)
    return format_html('<span class="ff-badge {}">{}</span>', css, label)


def error_dict(exc: ValidationError) -> FieldErrors:
    if hasattr(exc, "error_dict"):
        return {name: list(messages_) for name, messages_ in exc.message_dict.items()}
    return {NON_FIELD: list(exc.messages)}


def merge(into: FieldErrors, errors: FieldErrors) -> None:
    for name, messages_ in errors.items():
        into.setdefault(name, []).extend(messages_)


def cr_link(request_: ChangeRequest) -> SafeString:
    url = reverse("admin:flags_changerequest_change", args=[request_.pk])
    return format_html('<a href="{}">CR-{}</a> ({})', url, request_.pk, request_.get_operation_display())


def stamp(moment: Any) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, cls=DjangoJSONEncoder)



class DefaultingFilter(admin.SimpleListFilter):
    """A filter with a default choice instead of Django's "All" (which is offered explicitly)."""

    default: str = ""

    def default_for(self, request: HttpRequest) -> str:
        return self.default

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        name = str(self.parameter_name)
        if name not in self.used_parameters:
            self.used_parameters[name] = self.default_for(request)

    def choices(self, changelist: Any) -> Iterator[Any]:
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == str(lookup),
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


