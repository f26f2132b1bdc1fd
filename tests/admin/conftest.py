"""Fixtures for the admin tests: logged-in clients per role, and the change form as POST data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django import forms
from django.contrib.messages import get_messages
from django.test import Client

from tests.factories import UserFactory

ADMIN_IP = "198.51.100.23"


class AdminClient(Client):
    """A test client for one user that sends a fixed client IP and a request id per request."""

    def __init__(self, user: Any, **kwargs: Any) -> None:
        super().__init__(REMOTE_ADDR=ADMIN_IP, HTTP_USER_AGENT="pytest-admin", **kwargs)
        self.user = user
        self.force_login(user)


@pytest.fixture
def login(db: Any) -> Callable[..., AdminClient]:
    """``login("WRITE")`` -> a client logged in as a fresh user with that role (comma-separated for several)."""

    def make(role: str = "", username: str | None = None, enforce_csrf: bool = False, **user_fields: Any) -> AdminClient:
        name = username or (role.lower().replace(",", "-") or "nobody") + "-admin"
        user = UserFactory(username=name, role=role, **user_fields)
        return AdminClient(user, enforce_csrf_checks=enforce_csrf)

    return make


def _form_fields(data: dict[str, Any], form: forms.BaseForm) -> None:
    for name, field in form.fields.items():
        bound = form[name]
        value = bound.value()
        if isinstance(field, forms.BooleanField):
            if value:
                data[bound.html_name] = "on"
            continue
        data[bound.html_name] = "" if value is None else value


def change_form_data(response: Any) -> dict[str, Any]:
    """The POST a browser would send for an admin change page as rendered (no edits)."""
    data: dict[str, Any] = {}
    _form_fields(data, response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        _form_fields(data, formset.management_form)
        for form in formset.forms:
            _form_fields(data, form)
    return data


def rule_prefix(data: dict[str, Any], rule_id: int) -> str:
    """The form prefix (``rules-N``) of an existing rule in the change form data."""
    for key, value in data.items():
        if key.startswith("rules-") and key.endswith("-id") and str(value) == str(rule_id):
            return key[: -len("-id")]
    raise KeyError(rule_id)


def add_rule(data: dict[str, Any], **fields: Any) -> str:
    """Append a new rule form to the change form data; returns its prefix."""
    index = int(data["rules-TOTAL_FORMS"])
    prefix = f"rules-{index}"
    data["rules-TOTAL_FORMS"] = str(index + 1)
    data[f"{prefix}-id"] = ""
    data[f"{prefix}-flag"] = data.get("rules-0-flag", "")
    for name, value in fields.items():
        if name == "enabled":
            if value:
                data[f"{prefix}-enabled"] = "on"
        else:
            data[f"{prefix}-{name}"] = value
    return prefix


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]
