"""The audit trail in the admin: read-only for everyone, superusers included.

Exports stream ``audit.services.export_csv`` / ``export_jsonl`` over
``audit.services.filter_entries`` with the filters of the list (time range, flag,
actor, action); "Verify chain" re-computes the hash chain with ``verify_chain``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from audit import services
from audit.models import AuditEntry
from core.admin import NoWritesAdminMixin

if TYPE_CHECKING:
    _AuditAdminBase = admin.ModelAdmin[AuditEntry]
else:
    _AuditAdminBase = admin.ModelAdmin


def _moment(text: str, *, end: bool) -> datetime | None:
    """An ISO date or date-time; a bare date as ``until`` means up to the end of that day."""
    text = text.strip()
    if not text:
        return None
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or date-time (ISO 8601)")
        moment = datetime(day.year, day.month, day.day) + (timedelta(days=1) if end else timedelta())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def _hierarchy_range(params: QueryDict) -> tuple[datetime | None, datetime | None]:
    """The period the list's date hierarchy shows (created_at__year/month/day), as since/until."""
    try:
        year = int(params.get("created_at__year", ""))
    except ValueError:
        return None, None
    month = params.get("created_at__month")
    day = params.get("created_at__day")
    if month and day:
        start = datetime(year, int(month), int(day))
        end = start + timedelta(days=1)
    elif month:
        start = datetime(year, int(month), 1)
        end = datetime(year + (int(month) == 12), int(month) % 12 + 1, 1)
    else:
        start, end = datetime(year, 1, 1), datetime(year + 1, 1, 1)
    return timezone.make_aware(start), timezone.make_aware(end)


def export_filters(params: QueryDict) -> dict[str, Any]:
    """filter_entries() arguments from export parameters, or from the list's own filters."""
    since = _moment(params.get("since", ""), end=False)
    until = _moment(params.get("until", ""), end=True)
    if since is None and until is None:
        since, until = _hierarchy_range(params)
    return {
        "since": since,
        "until": until,
        "flag_key": params.get("flag") or params.get("flag_key__exact") or None,
        "actor": params.get("actor") or params.get("actor__exact") or None,
        "action": params.get("action") or params.get("action__exact") or None,
    }


def _take(chunks: Iterator[str], count: int) -> list[str]:
    batch = []
    for part in chunks:
        batch.append(part)
        if len(batch) >= count:
            break
    return batch


async def _async_chunks(chunks: Iterator[str]) -> AsyncIterator[str]:
    # Under ASGI a synchronous iterator would be read into memory whole before sending;
    # seven years of audit do not fit, so read it in batches on the request's thread.
    take = sync_to_async(_take, thread_sensitive=True)
    while batch := await take(chunks, 500):
        for part in batch:
            yield part


def streamed(request: HttpRequest, chunks: Iterator[str], *, content_type: str, filename: str) -> StreamingHttpResponse:
    content: Any = _async_chunks(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


@admin.register(AuditEntry)
class AuditEntryAdmin(NoWritesAdminMixin, _AuditAdminBase):  # append-only
    change_list_template = "admin/audit/auditentry/change_list.html"
    list_display = ("seq", "when", "actor", "action", "flag_link", "object_label", "request_id")
    list_display_links = ("seq",)
    list_filter = ("action", "actor_type")
    date_hierarchy = "created_at"
    search_fields = ("^flag_key", "^actor", "=request_id")
    search_help_text = "A flag key or actor (beginning), or an exact request id."
    list_per_page = 100
    show_full_result_count = False
    fields = ("seq", "created_at", "actor_type", "actor", "user_id", "api_key_id", "action", "flag_key", "flag_id",
              "object_type", "object_id", "change_request_link", "before_pretty", "after_pretty", "ip", "user_agent",
              "request_id", "prev_hash", "hash", "hash_check")
    readonly_fields = fields

    class Media:
        css = {"all": ("admin_ext/fleetflag.css",)}


    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        raise PermissionDenied("audit entries are append-only")

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        raise PermissionDenied("audit entries are append-only")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AuditEntry]) -> None:
        raise PermissionDenied("audit entries are append-only")

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="Time (UTC)", ordering="created_at")
    def when(self, obj: AuditEntry) -> str:
        return timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="Flag", ordering="flag_key")
    def flag_link(self, obj: AuditEntry) -> Any:
        if not obj.flag_key:
            return "-"
        # Filters the trail to this flag (and so prefills the export with it).
        return format_html('<a href="?flag_key__exact={}">{}</a>', obj.flag_key, obj.flag_key)

    @admin.display(description="Object")
    def object_label(self, obj: AuditEntry) -> str:
        return f"{obj.object_type} {obj.object_id}".strip() or "-"

    @admin.display(description="Change request")
    def change_request_link(self, obj: AuditEntry) -> Any:
        if obj.change_request_id is None:
            return "-"
        try:
            url = reverse("admin:flags_changerequest_change", args=[obj.change_request_id])
        except NoReverseMatch:
            return f"CR-{obj.change_request_id}"
        return format_html('<a href="{}">CR-{}</a>', url, obj.change_request_id)

    @admin.display(description="Before")
    def before_pretty(self, obj: AuditEntry) -> SafeString:
        return _pre(obj.before)

    @admin.display(description="After")
    def after_pretty(self, obj: AuditEntry) -> SafeString:
        return _pre(obj.after)

    @admin.display(description="Entry check")
    def hash_check(self, obj: AuditEntry) -> SafeString:
        # The same check verify_audit makes of one entry (its MAC under its key id; a legacy
        # SHA-256 entry only within the configured legacy range), not a bare re-hash.
        problem = services.entry_problem(obj)
        if problem is None:
            return mark_safe('<span class="ff-ok">MAC matches the content</span>')
        return format_html('<span class="ff-bad">DOES NOT CHECK: {}</span>', problem)

    # -- export and verification ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("export.csv", view(self.export_csv_view), name="audit_auditentry_export_csv"),
            path("export.jsonl", view(self.export_jsonl_view), name="audit_auditentry_export_jsonl"),
            path("verify/", view(self.verify_view), name="audit_auditentry_verify"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            current = export_filters(request.GET)
        except ValueError:
            current = {}
        initial = {
            "since": current["since"].date().isoformat() if current.get("since") else "",
            # until is exclusive; a date in the form means "to the end of that day".
            "until": (current["until"] - timedelta(days=1)).date().isoformat() if current.get("until") else "",
            "flag": current.get("flag_key") or "",
            "actor": current.get("actor") or "",
            "action": current.get("action") or "",
        }
        context = {
            **(extra_context or {}),
            "ff_export": initial,
            "ff_export_csv_url": reverse("admin:audit_auditentry_export_csv"),
            "ff_export_jsonl_url": reverse("admin:audit_auditentry_export_jsonl"),
            "ff_verify_url": reverse("admin:audit_auditentry_verify"),
        }
        return super().changelist_view(request, context)

    def _export(self, request: HttpRequest, kind: str) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            filters = export_filters(request.GET)
        except ValueError as exc:
            return HttpResponseBadRequest(f"Cannot export: {exc}", content_type="text/plain; charset=utf-8")
        entries = services.filter_entries(**filters)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        if kind == "csv":
            return streamed(request, services.export_csv(entries), content_type="text/csv; charset=utf-8",
                            filename=f"fleetflag-audit-{stamp}.csv")
        return streamed(request, services.export_jsonl(entries), content_type="application/x-ndjson; charset=utf-8",
                        filename=f"fleetflag-audit-{stamp}.jsonl")

    def export_csv_view(self, request: HttpRequest) -> HttpResponseBase:
        return self._export(request, "csv")

    def export_jsonl_view(self, request: HttpRequest) -> HttpResponseBase:
        return self._export(request, "jsonl")

    def verify_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        report = services.verify_chain()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Audit chain verification",
            "report": report,
            "checked_at": timezone.now(),
            "media": self.media,
        }
        return TemplateResponse(request, "admin/audit/auditentry/verify.html", context)


def _pre(value: Any) -> SafeString:
    if value is None:
        return mark_safe('<span class="ff-meta">-</span>')
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, cls=DjangoJSONEncoder)
    return format_html('<pre class="ff-pre">{}</pre>', text)
