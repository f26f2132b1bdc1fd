"""Admin forms for flags and rules: input and display only, no writes.

The admin saves through ``flags.services``; a refusal from a service is carried back
onto these forms (``service_errors``) so that the user sees it on the field it concerns.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from agent_client.rules import VIN_RE
from core.actors import ROLES, Actor
from core.http.body import parse_json
from core.http.errors import ApiError
from flags.models import Flag, Rule

if TYPE_CHECKING:
    _FlagFormBase = forms.ModelForm[Flag]
    _RuleFormBase = forms.ModelForm[Rule]
    _RuleFormSetBase = BaseInlineFormSet[Rule, Flag, forms.ModelForm[Rule]]
else:
    _FlagFormBase = _RuleFormBase = forms.ModelForm
    _RuleFormSetBase = BaseInlineFormSet

# Errors from a refused save: {field name or "__all__": [message, ...]}
FieldErrors = dict[str, list[str]]
NON_FIELD = "__all__"


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, so that conditions and values are readable and diffable; read by
    the API's one parser (``core.http.body``: depth, NUL and lone surrogates refused)."""

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            parse_json(value)
        except ApiError as exc:
            raise ValidationError(exc.message, code="invalid") from exc
        return super().to_python(value)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        if value is None and not self.required:
            return ""  # absent, rather than a literal null
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


def _json_widget(rows: int, size: str = "wide") -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "cols": 40, "class": f"ff-json ff-json-{size}", "spellcheck": "false"})


def add_errors(form: forms.BaseForm, errors: FieldErrors) -> None:
    """Put ``errors`` on the form's fields; what has no field goes to the form itself."""
    for name, messages in errors.items():
        if name in form.fields and name != NON_FIELD:
            form.add_error(name, list(messages))
        elif name == NON_FIELD:
            form.add_error(None, list(messages))
        else:
            form.add_error(None, [f"{name}: {message}" for message in messages])


def team_choices(actor: Actor, current: Group | None) -> Any:
    """Teams a flag can belong to: groups that are not roles; non-ADMIN users only their own."""
    teams = Group.objects.exclude(name__in=ROLES)
    if not actor.has_role("ADMIN"):
        teams = teams.filter(user=actor.user) if actor.user is not None else teams.none()
    if current is not None:
        # Always offer the current owner, or an untouched form would silently clear it.
        teams = teams | Group.objects.filter(pk=current.pk)
    return teams.distinct().order_by("name")


class FlagForm(_FlagFormBase):
    """Flag fields, plus the rationale for ASIL-D change requests and the version the form was loaded at."""

    rationale = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Hazard analysis or safety-case reference (e.g. HARA-2026-017, SC-BRK-004 rev 3). "
        "Stored with every change request this save creates.",
    )
    base_version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    # Set by the admin on the class it builds for a request.
    actor: Actor | None = None
    service_errors: FieldErrors | None = None

    class Meta:
        model = Flag
        fields = ("key", "name", "description", "type", "default_value", "enabled", "safety_level", "environment",
                  "ttl_seconds", "owner_team")
        field_classes = {"default_value": PrettyJSONField}
        widgets = {"default_value": _json_widget(4), "description": forms.Textarea(attrs={"rows": 3, "cols": 80})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        if instance.pk is not None:
            self.fields["base_version"].initial = instance.version
            if instance.is_asil_d:
                self.fields["rationale"].required = True
                self.fields["rationale"].label = "Rationale (required: ASIL-D)"
        if "owner_team" in self.fields and self.actor is not None:
            field = self.fields["owner_team"]
            assert isinstance(field, forms.ModelChoiceField)
            field.queryset = team_choices(self.actor, instance.owner_team if instance.pk else None)
        if "enabled" in self.fields and instance.pk is None:
            self.fields["enabled"].help_text = "ASIL-D flags are created disabled; enabling one needs SAFETY approval."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        instance = self.instance
        loaded_at = cleaned.get("base_version")
        if instance.pk is not None and loaded_at is not None and loaded_at != instance.version:
            # Without this a save would silently overwrite what someone else changed meanwhile.
            self.add_error(None, f"This flag changed while you edited it (version {loaded_at} -> {instance.version}). "
                                 "Nothing was saved: reload the page and make your change again.")
        if self.service_errors:
            add_errors(self, self.service_errors)
        return cleaned

    def flag_changes(self) -> dict[str, Any]:
        """The changed flag fields, as ``flag_update`` takes them."""
        from flags.services import EDITABLE_FIELDS

        return {name: self.cleaned_data[name] for name in self.changed_data if name in EDITABLE_FIELDS}


class RuleForm(_RuleFormBase):
    class Meta:
        model = Rule
        fields = ("type", "priority", "enabled", "conditions", "value", "variant")
        field_classes = {"conditions": PrettyJSONField, "value": PrettyJSONField}
        widgets = {"conditions": _json_widget(6), "value": _json_widget(2, "narrow"),
                   "variant": forms.TextInput(attrs={"size": 12})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            # Compare with the stored rule, not with a hidden copy of the form's initial value.
            field.show_hidden_initial = False
        if self.instance.pk is not None and "conditions" in self.fields:
            # Show the whole condition without scrolling, up to a point.
            lines = json.dumps(self.instance.conditions, indent=2).count("\n") + 1
            self.fields["conditions"].widget.attrs["rows"] = min(18, max(4, lines))


class RuleFormSet(_RuleFormSetBase):
    """The flag's rules; a service refusal per rule (by form prefix) is shown on that rule."""

    service_errors: dict[str, FieldErrors] | None = None

    def clean(self) -> None:
        super().clean()
        if not self.service_errors:
            return
        loose: list[str] = []
        for form in self.forms:
            errors = self.service_errors.get(form.prefix or "")
            if not errors:
                continue
            if self.marked_for_deletion(form):
                # A form marked for deletion does not show its errors: say it on the formset.
                loose.extend(f"Deleting rule {form.instance}: {m}" for ms in errors.values() for m in ms)
            else:
                add_errors(form, errors)
        if loose:
            raise ValidationError(loose)

    def marked_for_deletion(self, form: forms.BaseForm) -> bool:
        return bool(self.can_delete and getattr(form, "cleaned_data", {}).get("DELETE", False))

    def rule_operations(self) -> tuple[list[Any], list[Any], list[Any]]:
        """(deleted, changed, added) forms of a valid formset."""
        deleted: list[Any] = []
        changed: list[Any] = []
        added: list[Any] = []
        for form in self.forms:
            if self.marked_for_deletion(form):
                if form.instance.pk is not None:
                    deleted.append(form)
            elif form.instance.pk is None:
                if form.has_changed():
                    added.append(form)
            elif form.has_changed():
                changed.append(form)
        return deleted, changed, added


class ReasonForm(forms.Form):
    """The text an admin action asks for on its intermediate page."""

    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))

    def __init__(self, *args: Any, label: str, help_text: str, required: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["text"].label = label
        self.fields["text"].help_text = help_text
        self.fields["text"].required = required


class EvaluateForm(forms.Form):
    """A VIN and an optional context, for the evaluation preview on the flag page."""

    vin = forms.CharField(label="VIN", max_length=17, min_length=17, strip=True,
                          widget=forms.TextInput(attrs={"size": 20, "placeholder": "KMHXX00XXXX000001"}))
    context = PrettyJSONField(
        required=False,
        widget=_json_widget(3),
        help_text='Optional JSON object, e.g. {"trim": "gt"}. model, sw_version and region come from the '
        "registered vehicle unless given here (null counts as not given, as in the API).",
    )

    def clean_vin(self) -> str:
        vin = str(self.cleaned_data["vin"]).upper()
        if not VIN_RE.fullmatch(vin):
            raise ValidationError("17 characters of A-H, J-N, P, R-Z and 0-9")
        return vin

    def clean_context(self) -> dict[str, Any]:
        context = self.cleaned_data.get("context")
        if context in (None, ""):
            return {}
        if not isinstance(context, dict):
            raise ValidationError("the context must be a JSON object")
        return context
