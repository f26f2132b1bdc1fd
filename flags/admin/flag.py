"""The flags admin: an interface over ``flags.services``, never a writer of its own.

Saving a flag page runs every operation of the save (the flag's changed fields, then
each rule deleted, changed and added) through the service functions inside the one
transaction Django's ``changeform_view`` opens. If any service refuses, the whole
transaction rolls back — nothing applied, no change request kept — and the page is
rendered again from the same POST with the refusals on the fields they concern
(``_Refused`` carries them into the second pass, where the forms add them as errors).
For an ASIL-D flag each operation becomes its own change request; nothing changes
until a SAFETY engineer other than the requester approves it in the change-request
admin (the approval queue), whose buttons call the same services.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import Now
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from agent_client.evaluator import evaluate
from core import presence
from core.actors import ROLE_ADMIN, ROLE_SAFETY, ROLE_WRITE, Actor
from core.errors import ServiceError
from flags import permissions, selectors, services, snapshots
from flags.admin.common import (
    ADMIN_CSS,
    SAFETY_RANK,
    DefaultingFilter,
    actor_of,
    cr_link,
    error_dict,
    merge,
    safety_badge,
)
from flags.forms import NON_FIELD, EvaluateForm, FieldErrors, FlagForm, ReasonForm, RuleForm, RuleFormSet
from flags.models import ChangeRequest, Flag, Rule
from vehicles.models import Vehicle

if TYPE_CHECKING:
    _FlagAdminBase = admin.ModelAdmin[Flag]
    _ChangeRequestAdminBase = admin.ModelAdmin[ChangeRequest]
    _RuleInlineBase = admin.TabularInline[Rule, Flag]
else:
    _FlagAdminBase = _ChangeRequestAdminBase = admin.ModelAdmin
    _RuleInlineBase = admin.TabularInline

# -- the save path ------------------------------------------------------------------------------


class _Refused(Exception):
    """A service refused part of a save: the transaction rolls back and the form shows why."""

    def __init__(self, form_errors: FieldErrors, rule_errors: dict[str, FieldErrors] | None = None) -> None:
        super().__init__("save refused")
        self.form_errors = form_errors
        self.rule_errors = rule_errors or {}


@dataclass
class _SaveReport:
    """What one admin save did: operations applied now and change requests created."""

    flag: Flag | None = None
    version_before: int | None = None
    applied: list[str] = field(default_factory=list)
    change_requests: list[ChangeRequest] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.applied and not self.change_requests


def _refusal(request: HttpRequest) -> _Refused | None:
    return getattr(request, "_ff_refusal", None)


class _Operations:
    """Collects the steps of one save and runs them as ONE grouped change through the services,
    so that an ASIL-D save makes one change request, approved (or not) as a whole."""

    def __init__(self, actor: Actor, report: _SaveReport) -> None:
        self.actor = actor
        self.report = report
        self.form_errors: FieldErrors = {}
        self.rule_errors: dict[str, FieldErrors] = {}
        self.steps: list[services.Step] = []
        self.descriptions: list[str] = []
        self.prefixes: list[str | None] = []

    def add(self, description: str, build: Callable[..., services.Step], *, rule_prefix: str | None = None,
            **arguments: Any) -> None:
        try:
            step = build(**arguments)
        except ValidationError as exc:
            self._refuse(error_dict(exc), rule_prefix)
            return
        self.steps.append(step)
        self.descriptions.append(description)
        self.prefixes.append(rule_prefix)

    def run(self, *, flag: int, rationale: str, expected_version: int | None) -> None:
        if not self.steps or self.form_errors or self.rule_errors:
            return
        try:
            outcome = services.flag_change(actor=self.actor, flag=flag, steps=self.steps, rationale=rationale,
                                           expected_version=expected_version)
        except services.StepsRefused as refused:
            for index, error in refused.errors.items():
                self._refuse(_errors_of(error), self.prefixes[index])
        except (ValidationError, ServiceError) as exc:
            self._refuse(_errors_of(exc), None)
        else:
            if outcome.change_request is not None:
                self.report.change_requests.append(outcome.change_request)
            elif outcome.audit_actions:
                self.report.applied.extend(self.descriptions)

    def _refuse(self, errors: FieldErrors, rule_prefix: str | None) -> None:
        if rule_prefix is None:
            merge(self.form_errors, errors)
            return
        # The rationale is asked once, on the flag form; the rest belongs to the rule.
        if "rationale" in errors:
            merge(self.form_errors, {"rationale": errors.pop("rationale")})
        if errors:
            merge(self.rule_errors.setdefault(rule_prefix, {}), errors)

    def raise_if_refused(self) -> None:
        if self.form_errors or self.rule_errors:
            raise _Refused(self.form_errors, self.rule_errors)


def _errors_of(error: ValidationError | ServiceError) -> FieldErrors:
    if isinstance(error, ValidationError):
        return error_dict(error)
    return {NON_FIELD: [error.message]}


# -- filters ------------------------------------------------------------------------------------


class ArchivedFilter(DefaultingFilter):
    title = "archived"
    parameter_name = "archived"
    default = "active"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("archived", "Archived"), ("all", "All")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return queryset.filter(archived_at__isnull=True)
        if self.value() == "archived":
            return queryset.filter(archived_at__isnull=False)
        return queryset


# -- rules inline --------------------------------------------------------------------------------


class RuleInline(_RuleInlineBase):
    model = Rule
    form = RuleForm
    formset = RuleFormSet
    extra = 0
    ordering = ("-priority", "id")
    fields = ("type", "priority", "enabled", "conditions", "value", "variant")
    verbose_name_plural = "Rules (evaluated by priority, highest first; an enabled kill switch overrides all)"

    def _may_edit(self, request: HttpRequest, obj: Any) -> bool:
        return isinstance(obj, Flag) and obj.archived_at is None and permissions.can_change(actor_of(request), obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_edit(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_edit(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_edit(request, obj)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return permissions.can_view(actor_of(request))

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        refusal = _refusal(request)
        if refusal is not None:
            formset = type(formset.__name__, (formset,), {"service_errors": refusal.rule_errors})
        return formset


# -- flags ---------------------------------------------------------------------------------------


@admin.register(Flag)
class FlagAdmin(_FlagAdminBase):
    form = FlagForm
    inlines = [RuleInline]
    change_form_template = "admin/flags/flag/change_form.html"
    list_display = ("flag_label", "type", "environment", "enabled", "safety_badge", "version", "owner_team", "alerts",
                    "archived")
    list_display_links = ("flag_label",)
    list_filter = ("environment", "safety_level", "enabled", ArchivedFilter, "type",
                   ("owner_team", admin.RelatedOnlyFieldListFilter))
    search_fields = ("key", "name", "description")
    search_help_text = "Full text over key, name and description; part of a key matches too."
    list_select_related = ("owner_team",)
    list_per_page = 50
    actions = ["engage_kill_switch", "enable_flags", "disable_flags", "archive_flags"]
    save_as = False

    class Media:
        css = ADMIN_CSS

    # -- list -----------------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Flag]:
        return cast(QuerySet[Flag], (
            super()
            .get_queryset(request)
            .annotate(
                safety_rank=Case(*(When(safety_level=level, then=Value(rank)) for level, rank in SAFETY_RANK.items()),
                                 output_field=IntegerField()),
                is_killed=selectors.killed_subquery(),
                # Open requests only (pending, not expired): the link below lists exactly those.
                pending_count=Count("change_requests", filter=Q(change_requests__status=ChangeRequest.Status.PENDING,
                                                               change_requests__expires_at__gt=Now()), distinct=True),
            )
        ))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Flag], search_term: str) -> tuple[
            QuerySet[Flag], bool]:
        term = search_term.strip()
        if not term or not _is_postgres(queryset.db):
            return super().get_search_results(request, queryset, search_term)
        from django.contrib.postgres.search import SearchQuery, SearchVector

        vector = SearchVector("key", "name", "description", config="english")
        query = SearchQuery(term, search_type="websearch", config="english")
        found = queryset.annotate(search=vector).filter(Q(search=query) | Q(key__icontains=term))
        return found, False

    @admin.display(description="Flag (key / name)", ordering="key")
    def flag_label(self, obj: Flag) -> SafeString:
        return format_html('<span class="ff-key">{}</span><br><span class="ff-name">{}</span>', obj.key, obj.name)

    @admin.display(description="Safety level", ordering="safety_rank")
    def safety_badge(self, obj: Flag) -> SafeString:
        return safety_badge(obj.safety_level)

    @admin.display(description="Attention", ordering="-pending_count")
    def alerts(self, obj: Flag) -> SafeString:
        parts = []
        if getattr(obj, "is_killed", False):
            parts.append(mark_safe('<span class="ff-status ff-status-rejected">killed</span>'))
        count = getattr(obj, "pending_count", 0)
        if count:
            url = reverse("admin:flags_changerequest_changelist")
            parts.append(format_html('<a href="{}?flag__id__exact={}&amp;status=pending&amp;mine=all" '
                                     'class="ff-status ff-status-pending">{} pending</a>', url, obj.pk, count))
        return format_html_join(" ", "{}", ((part,) for part in parts)) if parts else mark_safe("-")

    @admin.display(description="Archived", ordering="archived_at")
    def archived(self, obj: Flag) -> str:
        return obj.archived_at.strftime("%Y-%m-%d") if obj.archived_at is not None else "-"

    # -- permissions (the services check again: they are the final gate) -----------------------

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return permissions.can_view(actor_of(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return permissions.can_create(actor_of(request))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        actor = actor_of(request)
        if obj is None:
            return permissions.can_create(actor)
        return obj.archived_at is None and permissions.can_change(actor, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # flags are archived, never deleted

    def has_archive_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("flags.archive_flag"))

    def has_kill_switch_permission(self, request: HttpRequest) -> bool:
        return actor_of(request).has_role(ROLE_ADMIN, ROLE_WRITE, ROLE_SAFETY)

    # -- the change form -----------------------------------------------------------------------

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        return ("key", "type", "version", "created_at", "created_by", "updated_at", "updated_by",
                "total_evaluations", "active_vehicles", "last_evaluation_at", "archived_at")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        identity = ("key", "name", "description", "type")
        serving = ("default_value", "enabled", "environment", "ttl_seconds")
        safety = ("safety_level", "owner_team")
        if obj is None:
            return [(None, {"fields": identity}), ("Serving", {"fields": serving}),
                    ("Safety and ownership", {"fields": safety})]
        fieldsets: list[tuple[str | None, dict[str, Any]]] = []
        editable = self.has_change_permission(request, obj)
        if editable and obj.is_asil_d:
            fieldsets.append(("ASIL-D change request", {"fields": ("rationale",), "classes": ("ff-rationale",)}))
        fieldsets += [
            (None, {"fields": (*identity, "base_version") if editable else identity}),
            ("Serving", {"fields": serving}),
            ("Safety and ownership", {"fields": safety}),
        ]
        if editable and not obj.is_asil_d:
            fieldsets.append(("Rationale", {
                "fields": ("rationale",), "classes": ("collapse",),
                "description": "Needed only when this save creates change requests, e.g. when it raises the "
                               "flag to ASIL-D and changes rules too.",
            }))
        fieldsets.append(("Version and statistics", {
            "fields": ("version", "created_at", "created_by", "updated_at", "updated_by", "total_evaluations",
                       "active_vehicles", "last_evaluation_at", "archived_at"),
            "classes": ("collapse",),
        }))
        return fieldsets

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # Rules are added once the flag exists: their values are checked against its type.
        return super().get_inline_instances(request, obj) if obj is not None else []

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        attrs: dict[str, Any] = {"actor": actor_of(request)}
        refusal = _refusal(request)
        if refusal is not None:
            errors = dict(refusal.form_errors)
            errors.setdefault(NON_FIELD, []).insert(0, "Nothing was saved: every part of a save is applied together "
                                                       "or not at all. Correct the errors below and save again.")
            attrs["service_errors"] = errors
        return type(form.__name__, (form,), attrs)

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method != "POST":
            return super().changeform_view(request, object_id, form_url, extra_context)
        if "_saveasnew" in request.POST:
            raise PermissionDenied("flags are not copied: keys are never reused")
        try:
            # Django runs validation and save_related inside one transaction.atomic().
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _Refused as refused:
            # The transaction has rolled back: render the same POST again with the refusals.
            request._ff_refusal = refused  # type: ignore[attr-defined]
            return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Flag, form: Any, change: bool) -> None:
        """Nothing here: every write happens in ``save_related`` through the services."""

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        raise RuntimeError("rules are saved through flags.services in save_related")

    def delete_model(self, request: HttpRequest, obj: Flag) -> None:
        raise PermissionDenied("flags are archived, never deleted")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Flag]) -> None:
        raise PermissionDenied("flags are archived, never deleted")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if _refusal(request) is not None:
            raise RuntimeError("a refused save is shown again, never saved")
        if not transaction.get_connection().in_atomic_block:
            raise RuntimeError("an admin save must run inside one transaction")
        actor = Actor.from_request(request)
        if change:
            report = self._save_changes(actor, form, formsets)
        else:
            report = self._save_new(actor, form)
        request._ff_report = report  # type: ignore[attr-defined]

    def _save_new(self, actor: Actor, form: FlagForm) -> _SaveReport:
        fields = {name: form.cleaned_data[name] for name in FlagForm.Meta.fields if name in form.cleaned_data}
        try:
            flag = services.flag_create(actor=actor, **fields)
        except ValidationError as exc:
            raise _Refused(error_dict(exc)) from exc
        except ServiceError as exc:
            raise _Refused({NON_FIELD: [exc.message]}) from exc
        form.instance.pk = flag.pk
        form.instance.version = flag.version
        return _SaveReport(flag=flag, applied=["created"])

    def _save_changes(self, actor: Actor, form: FlagForm, formsets: list[Any]) -> _SaveReport:
        # The form refused a stale page already; the service re-checks the version under its lock.
        flag = form.instance
        loaded_at = form.cleaned_data.get("base_version")
        report = _SaveReport(flag=flag, version_before=loaded_at if loaded_at is not None else flag.version)
        operations = _Operations(actor, report)
        rationale = form.cleaned_data.get("rationale") or ""
        changes = form.flag_changes()
        if changes:
            operations.add(f"changed {', '.join(changes)}", services.update_step, changes=changes)
        for formset in formsets:
            if not isinstance(formset, RuleFormSet):
                continue
            deleted, changed, added = formset.rule_operations()
            for rule_form in deleted:
                operations.add(f"deleted rule {rule_form.instance}", services.rule_delete_step,
                               rule_prefix=rule_form.prefix, rule_id=rule_form.instance.pk)
            for rule_form in changed:
                rule_changes = {n: rule_form.cleaned_data[n] for n in rule_form.changed_data if n in services.RULE_FIELDS}
                if rule_changes:
                    operations.add(f"changed rule {rule_form.instance.pk} ({', '.join(rule_changes)})",
                                   services.rule_update_step, rule_prefix=rule_form.prefix,
                                   rule_id=rule_form.instance.pk, **rule_changes)
            for rule_form in added:
                fields = {n: rule_form.cleaned_data[n] for n in services.RULE_FIELDS if n in rule_form.cleaned_data}
                operations.add(f"added a {fields.get('type')} rule", services.rule_create_step,
                               rule_prefix=rule_form.prefix, **fields)
        operations.run(flag=flag.pk, rationale=rationale, expected_version=loaded_at)
        operations.raise_if_refused()
        return report

    def construct_change_message(self, request: HttpRequest, form: Any, formsets: Any, add: bool = False) -> Any:
        report: _SaveReport | None = getattr(request, "_ff_report", None)
        if report is None or add:
            return super().construct_change_message(request, form, formsets, add)
        parts = []
        if report.applied:
            parts.append("Applied: " + "; ".join(report.applied))
        if report.change_requests:
            parts.append("Change requests (not applied): " + ", ".join(f"CR-{cr.pk}" for cr in report.change_requests))
        return ". ".join(parts) or "No changes"

    def response_add(self, request: HttpRequest, obj: Flag, post_url_continue: str | None = None) -> HttpResponse:
        if IS_POPUP_VAR in request.POST:
            return super().response_add(request, obj, post_url_continue)  # closes the "+" popup of a flag field
        url = reverse("admin:flags_flag_change", args=[obj.pk])
        self.message_user(request, format_html('Flag <a href="{}">{}</a> created at version 1 (disabled '
                                               'unless you enabled it). Add its rules on its page.', url, obj.key),
                          messages.SUCCESS)
        if "_addanother" in request.POST:
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(url)  # rules are added on the flag's page

    def response_change(self, request: HttpRequest, obj: Flag) -> HttpResponse:
        report: _SaveReport | None = getattr(request, "_ff_report", None)
        if report is not None:
            self._report_save(request, obj, report)
        if IS_POPUP_VAR in request.POST:
            return super().response_change(request, obj)
        if "_continue" in request.POST or (report is not None and report.change_requests):
            return HttpResponseRedirect(request.get_full_path())
        if "_addanother" in request.POST:
            return HttpResponseRedirect(reverse("admin:flags_flag_add"))
        return self.response_post_save_change(request, obj)

    def _report_save(self, request: HttpRequest, obj: Flag, report: _SaveReport) -> None:
        if report.empty:
            self.message_user(request, f"No changes to save on {obj.key}.", messages.INFO)
            return
        if report.applied:
            current = Flag.objects.filter(pk=obj.pk).values_list("version", flat=True).first()
            self.message_user(request, f"Saved {obj.key}: {'; '.join(report.applied)} "
                                       f"(version {report.version_before} -> {current}).", messages.SUCCESS)
        if report.change_requests:
            links = format_html_join(", ", "{}", ((cr_link(cr),) for cr in report.change_requests))
            self.message_user(request, format_html(
                "Nothing changed yet on {}: change request {} for SAFETY approval holds everything this save "
                "changed. The flag stays as it is until a second person approves.", obj.key, links),
                messages.WARNING)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if obj is not None:
            context.update(self._flag_page_context(request, obj))
        return super().change_view(request, object_id, form_url, context)

    def _flag_page_context(self, request: HttpRequest, obj: Flag) -> dict[str, Any]:
        actor = actor_of(request)
        pending = list(obj.change_requests.filter(status=ChangeRequest.Status.PENDING).order_by("-requested_at"))
        return {
            "ff_flag": obj,
            "ff_badge": safety_badge(obj.safety_level),
            "ff_asil_d": obj.is_asil_d,
            "ff_archived": obj.archived_at is not None,
            "ff_killed": selectors.engaged_kill_switches(obj).first(),
            "ff_delivery": selectors.kill_switch_delivery(selectors.last_kill_switch_event(obj), ack_limit=1,
                                                          environment=obj.environment),
            "ff_delivery_url": reverse("admin:flags_flag_delivery", args=[obj.pk]),
            "ff_pending": pending,
            "ff_evaluate_url": reverse("admin:flags_flag_evaluate", args=[obj.pk]),
            "ff_evidence_url": reverse("admin:flags_flag_evidence", args=[obj.pk]),
            "ff_kill_url": reverse("admin:flags_flag_kill_switch", args=[obj.pk]),
            "ff_can_kill": obj.archived_at is None and permissions.can_engage_kill_switch(actor, obj),
            "ff_audit_url": reverse("admin:audit_auditentry_changelist") + f"?flag_key__exact={obj.key}",
            "ff_requests_url": reverse("admin:flags_changerequest_changelist") + f"?flag__id__exact={obj.pk}&mine=all",
        }

    # -- extra pages ---------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        extra = [
            path("<path:object_id>/evaluate/", view(self.evaluate_view), name="flags_flag_evaluate"),
            path("<path:object_id>/evidence/", view(self.evidence_view), name="flags_flag_evidence"),
            path("<path:object_id>/kill-switch/", view(self.kill_switch_view), name="flags_flag_kill_switch"),
            path("<path:object_id>/kill-switch/delivery/", view(self.delivery_view), name="flags_flag_delivery"),
        ]
        return extra + super().get_urls()

    def _viewable(self, request: HttpRequest, object_id: str) -> Flag:
        flag = self.get_object(request, unquote(object_id))
        if flag is None:
            raise Http404("no such flag")
        if not self.has_view_permission(request, flag):
            raise PermissionDenied
        return flag

    def evaluate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Evaluate the flag as stored now for one VIN, with the shared evaluator."""
        flag = self._viewable(request, object_id)
        if request.method == "POST":
            form = EvaluateForm(request.POST)
        elif "vin" in request.GET:
            form = EvaluateForm(request.GET)
        else:
            form = EvaluateForm()
        result = None
        if form.is_bound and form.is_valid():
            result = evaluate_for_vin(flag, form.cleaned_data["vin"], form.cleaned_data["context"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Evaluate {flag.key} for a VIN",
            "original": flag,
            "ff_badge": safety_badge(flag.safety_level),
            "form": form,
            "result": result,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/flags/flag/evaluate.html", context)

    def evidence_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        flag = self._viewable(request, object_id)
        try:
            from flags import evidence  # written alongside; imported late so the admin loads without it
        except ModuleNotFoundError as exc:
            if exc.name != "flags.evidence":
                raise
            return HttpResponse("The evidence report is not available in this build (flags.evidence is missing).",
                                status=501, content_type="text/plain; charset=utf-8")
        report = evidence.build_report(flag)
        if request.GET.get("format") == "json":
            response = JsonResponse(report, encoder=DjangoJSONEncoder, json_dumps_params={"indent": 2})
            response["Content-Disposition"] = f'inline; filename="evidence-{flag.key}.json"'
            return response
        return HttpResponse(evidence.render_html(report), content_type="text/html; charset=utf-8")

    def delivery_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The last kill switch's delivery as JSON, which the flag page polls to count live."""
        flag = self._viewable(request, object_id)
        delivery = selectors.kill_switch_delivery(selectors.last_kill_switch_event(flag), ack_limit=1,
                                                  environment=flag.environment)
        delivery.pop("acks")
        return JsonResponse(delivery, encoder=DjangoJSONEncoder)

    def kill_switch_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The flag page's kill-switch button: a reason and an explicit confirmation, then the engage."""
        flag = self._viewable(request, object_id)
        change_url = reverse("admin:flags_flag_change", args=[flag.pk])
        if not permissions.can_engage_kill_switch(actor_of(request), flag):
            self.message_user(request, f"Kill switch NOT engaged on {flag.key}: refused - you may not engage it "
                                       "(roles SAFETY, ADMIN or a WRITE user who may change the flag).",
                              messages.ERROR)
            return HttpResponseRedirect(change_url)
        form = KillSwitchForm(request.POST if request.method == "POST" else None, flags=[flag])
        if request.method == "POST" and form.is_valid():
            _engage(self, request, flag, form.cleaned_data["text"])
            return HttpResponseRedirect(change_url)
        return self._kill_page(request, title=f"Engage the kill switch of {flag.key}", flags=[flag], form=form,
                               action=None, cancel_url=change_url)

    def _kill_page(self, request: HttpRequest, *, title: str, flags: list[Flag], form: KillSwitchForm,
                   action: str | None, cancel_url: str = "") -> TemplateResponse:
        targets = kill_switch_targets(flags)
        to_engage = [target for target in targets if not target.engaged and not target.archived]
        keys = ", ".join(target.flag.key for target in to_engage)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "targets": targets,
            "to_engage": to_engage,
            "form": form,
            "action": action,
            "explanation": _KILL_EXPLANATION,
            "submit": f"Engage kill switch on {keys} now" if len(to_engage) <= 3
            else f"Engage kill switch on {len(to_engage)} flags now",
            "cancel_url": cancel_url or reverse("admin:flags_flag_changelist"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/flags/flag/kill_switch_confirm.html", context)

    # -- actions: one service call per flag, reported per flag ----------------------------------

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _action_page(self, request: HttpRequest, *, title: str, flags: list[Flag], form: ReasonForm,
                     action: str | None, explanation: str, submit: str, danger: bool = False,
                     cancel_url: str = "") -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "flags": [(flag, safety_badge(flag.safety_level)) for flag in flags],
            "form": form,
            "action": action,
            "explanation": explanation,
            "submit": submit,
            "danger": danger,
            "cancel_url": cancel_url or reverse("admin:flags_flag_changelist"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/flags/flag/action_confirm.html", context)

    @admin.action(description="Engage kill switch on selected flags (applies at once)",
                  permissions=["kill_switch"])
    def engage_kill_switch(self, request: HttpRequest, queryset: QuerySet[Flag]) -> HttpResponse | None:
        flags = list(queryset.order_by("key"))
        form = KillSwitchForm(request.POST if "_confirm" in request.POST else None, flags=flags)
        if not form.is_valid():
            return self._kill_page(request, title=f"Engage the kill switch of {len(flags)} flag(s)", flags=flags,
                                   form=form, action="engage_kill_switch")
        for flag in flags:
            _engage(self, request, flag, form.cleaned_data["text"])
        return None

    @admin.action(description="Enable selected flags (ASIL-D: change requests)", permissions=["change"])
    def enable_flags(self, request: HttpRequest, queryset: QuerySet[Flag]) -> HttpResponse | None:
        return self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable selected flags (ASIL-D: change requests)", permissions=["change"])
    def disable_flags(self, request: HttpRequest, queryset: QuerySet[Flag]) -> HttpResponse | None:
        return self._set_enabled(request, queryset, enabled=False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Flag], *, enabled: bool) -> HttpResponse | None:
        verb = "enable" if enabled else "disable"
        flags = list(queryset.order_by("key"))
        asil_d = [flag for flag in flags if flag.is_asil_d and flag.enabled != enabled and flag.archived_at is None]
        rationale = ""
        if asil_d:
            form = ReasonForm(request.POST if "_confirm" in request.POST else None, **_rationale_args(asil_d))
            if not form.is_valid():
                return self._action_page(
                    request, title=f"{verb.capitalize()} flags", flags=flags, form=form,
                    action=f"{verb}_flags", submit=f"{verb.capitalize()} / request approval",
                    explanation=f"{len(asil_d)} of the selected flags are ASIL-D: for them this creates one change "
                                "request each, applied only when a SAFETY engineer other than you approves. The "
                                "other flags change at once.")
            rationale = form.cleaned_data["text"]
        actor = Actor.from_request(request)
        for flag in flags:
            if flag.archived_at is not None:
                self.message_user(request, f"{flag.key}: archived, not changed.", messages.WARNING)
                continue
            if flag.enabled == enabled:
                self.message_user(request, f"{flag.key}: already {verb}d, nothing to do.", messages.INFO)
                continue
            self._report_outcome(request, flag, f"{verb}d", functools.partial(
                services.flag_set_enabled, actor=actor, flag=flag.pk, enabled=enabled, rationale=rationale))
        return None

    @admin.action(description="Archive selected flags (ASIL-D: change requests)", permissions=["archive"])
    def archive_flags(self, request: HttpRequest, queryset: QuerySet[Flag]) -> HttpResponse | None:
        flags = list(queryset.order_by("key"))
        asil_d = [flag for flag in flags if flag.is_asil_d and flag.archived_at is None]
        args = _rationale_args(asil_d) if asil_d else {"label": "Note", "help_text": "Optional.", "required": False}
        form = ReasonForm(request.POST if "_confirm" in request.POST else None, **args)
        if not form.is_valid():
            explanation = ("Archived flags disappear from every vehicle's snapshot (vehicles then serve their code "
                           "default) and can never change again. Keys are never reused.")
            if asil_d:
                explanation += (f" {len(asil_d)} of the selected flags are ASIL-D: for them this creates one change "
                                "request each, applied only when a SAFETY engineer other than you approves.")
            return self._action_page(request, title="Archive flags", flags=flags, form=form, action="archive_flags",
                                     explanation=explanation, submit=f"Archive {len(flags)} flag(s)", danger=True)
        actor = Actor.from_request(request)
        rationale = form.cleaned_data["text"]
        for flag in flags:
            if flag.archived_at is not None:
                self.message_user(request, f"{flag.key}: archived already.", messages.INFO)
                continue
            self._report_outcome(request, flag, "archived", functools.partial(
                services.flag_archive, actor=actor, flag=flag.pk, rationale=rationale))
        return None

    def _report_outcome(self, request: HttpRequest, flag: Flag, done: str,
                        call: Callable[[], services.Outcome]) -> None:
        try:
            outcome = call()
        except ValidationError as exc:
            text = "; ".join(f"{k}: {' '.join(v)}" if k != NON_FIELD else " ".join(v)
                             for k, v in error_dict(exc).items())
            self.message_user(request, f"{flag.key}: refused, nothing changed - {text}", messages.ERROR)
        except ServiceError as exc:
            self.message_user(request, f"{flag.key}: refused, nothing changed - {exc.message}", messages.ERROR)
        else:
            if outcome.change_request is not None:
                self.message_user(request, format_html(
                    "{}: not changed yet - {} created; it waits for SAFETY approval.", flag.key,
                    cr_link(outcome.change_request)), messages.WARNING)
            else:
                self.message_user(request, f"{flag.key}: {done} (version {outcome.flag.version}).", messages.SUCCESS)


_KILL_REASON: dict[str, Any] = {
    "label": "Reason",
    "help_text": "What happened (incident, recall or ticket reference). Sent to the vehicles and audited.",
    "required": True,
}
_KILL_EXPLANATION = (
    "The kill switch applies at once, also on ASIL-D flags (it moves toward the safe state): vehicles serve the "
    "flag's default value (false for boolean flags) from the next push. Lifting it again needs approval on "
    "ASIL-D flags."
)


def _rationale_args(asil_d: list[Flag]) -> dict[str, Any]:
    return {
        "label": "Rationale",
        "help_text": "Hazard analysis or safety-case reference for the ASIL-D change requests: "
        + ", ".join(flag.key for flag in asil_d),
        "required": True,
    }


def _engage(model_admin: FlagAdmin, request: HttpRequest, flag: Flag, reason: str) -> None:
    actor = Actor.from_request(request)
    page = reverse("admin:flags_flag_change", args=[flag.pk])
    try:
        outcome = services.kill_switch_engage(actor=actor, flag=flag.pk, reason=reason)
    except ValidationError as exc:
        model_admin.message_user(request, format_html('Kill switch NOT engaged on <a href="{}">{}</a>: refused - {}',
                                                      page, flag.key, " ".join(exc.messages)), messages.ERROR)
    except ServiceError as exc:
        model_admin.message_user(request, format_html('Kill switch NOT engaged on <a href="{}">{}</a>: refused - {}',
                                                      page, flag.key, exc.message), messages.ERROR)
    else:
        if outcome.audit_actions:
            model_admin.message_user(request, format_html('{} <a href="{}">Delivery on the flag page</a>.',
                                                          engaged_message(flag.key, outcome), page),
                                     messages.SUCCESS)
        else:
            model_admin.message_user(request, format_html(
                'The kill switch of <a href="{}">{}</a> was engaged already: nothing changed.', page, flag.key),
                messages.INFO)


def engaged_message(key: str, outcome: services.Outcome) -> str:
    """What is true right after the engage: committed, and whether the push channel took the frame.
    What the server processes wrote to sockets and what vehicles acknowledged is counted later
    (in batches), so this says where to watch it, never a number it does not know yet.
    Starts with a capital: the admin capitalises each message's first letter, keys are lowercase."""
    event = outcome.kill_switch_event
    text = f"Kill switch engaged on {key} (flag version {outcome.flag.version})."
    if event is None:
        return text
    event.refresh_from_db(fields=["pushed", "sent"])
    registered = f"{event.targeted_all} registered in {event.environment}"
    if event.targeted_online is None:
        online = f"an unknown number of the {registered} (presence unavailable) were online"
    elif event.targeted_online == 1:
        online = f"1 of the {registered} was online"
    else:
        online = f"{event.targeted_online} of the {registered} were online"
    if event.pushed:
        text += (f" The KILL_SWITCH frame went to the server processes, which send it to the vehicles online: "
                 f"{online} at the engage. Vehicles offline get it when they reconnect.")
    else:
        text += (f" The push channel is unavailable, so nothing was sent yet: {online}; the servers' next sweep "
                 f"and the vehicles' next sync deliver it.")
    return text + " Frames sent and acknowledgements count up live on the flag page."


@dataclass(frozen=True)
class KillTarget:
    """One flag as the kill-switch confirmation shows it: what engaging it would reach."""

    flag: Flag
    badge: SafeString
    engaged: bool
    archived: bool
    registered: int
    online: int | None


def kill_switch_targets(flags: list[Flag]) -> list[KillTarget]:
    environments = {flag.environment for flag in flags}
    registered = dict(Vehicle.objects.filter(environment__in=environments).values("environment")
                      .annotate(n=Count("vin")).values_list("environment", "n"))
    online: dict[str, int | None] = {}
    for environment in environments:
        try:
            online[environment] = presence.online_count(environment)
        except Exception:  # noqa: BLE001 - Redis away: the page says "unknown", the engage still works
            online[environment] = None
    return [KillTarget(flag, safety_badge(flag.safety_level), selectors.engaged_kill_switches(flag).exists(),
                       flag.archived_at is not None, registered.get(flag.environment, 0), online[flag.environment])
            for flag in flags]


class KillSwitchForm(ReasonForm):
    """A typed reason and an explicit confirmation that names the flags."""

    confirm = forms.BooleanField(required=True, error_messages={
        "required": "Tick the box to confirm: nothing is engaged without it."})

    def __init__(self, *args: Any, flags: list[Flag], **kwargs: Any) -> None:
        super().__init__(*args, **_KILL_REASON, **kwargs)
        keys = ", ".join(flag.key for flag in flags if flag.archived_at is None)
        self.fields["text"].widget.attrs.update({"placeholder": "e.g. INC-4711: brake noise reported on ev6 fleet",
                                                 "autofocus": True})
        self.fields["confirm"].label = (f"I confirm: engage the kill switch on {keys} now. Vehicles serve the "
                                        "default value; lifting it again is a change of its own.")


def _is_postgres(alias: str) -> bool:
    from django.db import connections

    return connections[alias].vendor == "postgresql"


@dataclass(frozen=True)
class Evaluation:
    vin: str
    value: Any
    variant: str | None
    reason: str
    error_code: str | None
    version: int | None
    context: dict[str, Any]
    filled_from_vehicle: dict[str, Any]
    vehicle_registered: bool
    vehicle_environment: str
    flag_environment: str

    @property
    def other_environment(self) -> bool:
        """The vehicle receives another environment's snapshot: it never gets this flag."""
        return self.vehicle_registered and self.vehicle_environment != self.flag_environment

    @property
    def value_json(self) -> str:
        return json.dumps(self.value, ensure_ascii=False, indent=2)

    @property
    def context_json(self) -> str:
        return json.dumps(self.context, ensure_ascii=False, sort_keys=True)


def evaluate_for_vin(flag: Flag, vin: str, given: dict[str, Any]) -> Evaluation:
    """The flag as stored now, evaluated for ``vin`` with the input every evaluation path
    builds (``flags.selectors.resolve_input``) and the same evaluator."""
    target = selectors.resolve_input(vin, given, flag.environment)
    data = snapshots.flag_to_dict(flag, list(Rule.objects.filter(flag=flag).order_by("-priority", "id")))
    result = evaluate(data, vin, target.context)
    return Evaluation(vin, result.value, result.variant, result.reason, result.error_code, result.version,
                      target.context, target.filled, target.registered, target.environment, flag.environment)
