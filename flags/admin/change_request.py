"""The approval queue: change requests with their before/after diff, decided by buttons
that call the services (approve, reject, withdraw); no row is ever edited here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.db.models.functions import Now
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from core.actors import ROLE_ADMIN, ROLE_SAFETY, Actor
from core.admin import NoWritesAdminMixin
from core.errors import ServiceError
from flags import permissions, selectors, services
from flags.admin.common import ADMIN_CSS, DefaultingFilter, actor_of, pretty, safety_badge, stamp
from flags.diff import change_request_diff
from flags.models import ChangeRequest

if TYPE_CHECKING:
    _ChangeRequestAdminBase = admin.ModelAdmin[ChangeRequest]
else:
    _ChangeRequestAdminBase = admin.ModelAdmin


# -- change requests: the approval queue ---------------------------------------------------------


class RequestStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pending", "Pending (awaiting decision)"), ("expired", "Expired (pending past expiry)"),
                ("approved", "Approved"), ("rejected", "Rejected"), ("withdrawn", "Withdrawn")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "pending":
            return selectors.open_requests(queryset)
        if value == "expired":
            return selectors.expired_requests(queryset)
        if value:
            return queryset.filter(status=value)
        return queryset


class MineFilter(DefaultingFilter):
    title = "requested by"
    parameter_name = "mine"

    def default_for(self, request: HttpRequest) -> str:
        # Requesters follow their own requests; SAFETY engineers see the whole queue.
        return "all" if actor_of(request).has_role(ROLE_SAFETY, ROLE_ADMIN) else "me"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("me", "Me"), ("all", "Everyone")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "me":
            return queryset.filter(requested_by=request.user)
        return queryset


@admin.register(ChangeRequest)
class ChangeRequestAdmin(NoWritesAdminMixin, _ChangeRequestAdminBase):  # decided by buttons only
    change_form_template = "admin/flags/changerequest/change_form.html"
    list_display = ("label", "flag_link", "operation", "requested", "expires", "status_badge", "decided")
    list_display_links = ("label",)
    list_filter = (RequestStatusFilter, "operation", ("flag__safety_level", admin.ChoicesFieldListFilter),
                   MineFilter)
    search_fields = ("flag__key", "requested_by_label", "rationale")
    list_select_related = ("flag",)
    fields = ("label", "flag_link", "operation", "status_badge", "requested", "expires", "base_version", "decided",
              "decision_comment", "payload_pretty", "content_hash")
    readonly_fields = fields

    class Media:
        css = ADMIN_CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChangeRequest]:
        pending = ChangeRequest.Status.PENDING
        # Not super(): it orders before this annotation exists.
        queryset = ChangeRequest.objects.annotate(queue_rank=Case(
            When(status=pending, expires_at__gt=Now(), then=Value(0)),
            When(status=pending, then=Value(1)),
            default=Value(2),
            output_field=IntegerField(),
        ))
        return queryset.order_by(*self.get_ordering(request))

    def get_ordering(self, request: HttpRequest) -> Any:
        # Pending first (live before expired), then the newest.
        return ["queue_rank", "-requested_at"]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not actor_of(request).has_role(ROLE_SAFETY, ROLE_ADMIN) and "mine" not in request.GET:
            self.message_user(request, "Showing the change requests you made. Only SAFETY engineers decide them; "
                                       "choose \u201cEveryone\u201d to see the whole queue.", messages.INFO)
        return super().changelist_view(request, extra_context)


    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return permissions.can_view(actor_of(request))

    @admin.display(description="Request", ordering="pk")
    def label(self, obj: ChangeRequest) -> str:
        return f"CR-{obj.pk}"

    @admin.display(description="Flag", ordering="flag__key")
    def flag_link(self, obj: ChangeRequest) -> SafeString:
        url = reverse("admin:flags_flag_change", args=[obj.flag_id])
        return format_html('{} <a href="{}">{}</a>', safety_badge(obj.flag.safety_level), url, obj.flag.key)

    @admin.display(description="Requested", ordering="requested_at")
    def requested(self, obj: ChangeRequest) -> SafeString:
        return format_html("{}<br><span class=\"ff-meta\">{}</span>", obj.requested_by_label, stamp(obj.requested_at))

    @admin.display(description="Decided", ordering="decided_at")
    def decided(self, obj: ChangeRequest) -> SafeString:
        if obj.decided_at is None:
            return mark_safe("-")
        return format_html("{}<br><span class=\"ff-meta\">{}</span>", obj.decided_by_label or "-",
                           stamp(obj.decided_at))

    @admin.display(description="Expires", ordering="expires_at")
    def expires(self, obj: ChangeRequest) -> SafeString:
        when = stamp(obj.expires_at)
        if obj.status == ChangeRequest.Status.PENDING and obj.is_expired:
            return format_html('<span class="ff-expired">expired {}</span>', when)
        return format_html("{}", when)

    @admin.display(description="Status", ordering="queue_rank")
    def status_badge(self, obj: ChangeRequest) -> SafeString:
        status = obj.display_status
        return format_html('<span class="ff-status ff-status-{}">{}</span>', status, status)

    @admin.display(description="Payload (what approval applies)")
    def payload_pretty(self, obj: ChangeRequest) -> SafeString:
        return format_html('<pre class="ff-pre">{}</pre>', pretty(obj.payload))

    # -- the decision page ------------------------------------------------------------------------

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if obj is not None:
            context.update(self._decision_context(request, obj))
        return super().change_view(request, object_id, form_url, context)

    def _decision_context(self, request: HttpRequest, obj: ChangeRequest) -> dict[str, Any]:
        actor = actor_of(request)
        pending = obj.status == ChangeRequest.Status.PENDING
        requester = services.is_requester(actor, obj)
        safety = permissions.can_approve(actor)
        flag = obj.flag
        why_not = ""
        if pending and not safety:
            why_not = "Only SAFETY engineers approve or reject change requests to ASIL-D flags."
        elif pending and requester:
            why_not = "You made this request: a second person (SAFETY) must approve or reject it."
        return {
            "ff_cr": obj,
            "ff_flag": flag,
            "ff_badge": safety_badge(flag.safety_level),
            "ff_pending": pending,
            "ff_expired": obj.is_expired,
            "ff_stale": pending and flag.version != obj.base_version,
            "ff_tampered": obj.compute_content_hash() != obj.content_hash,
            "ff_can_decide": pending and safety and not requester,
            "ff_can_withdraw": pending and requester,
            "ff_why_not": why_not,
            "ff_diff": change_request_diff(obj.before, obj.after),
            "ff_approve_url": reverse("admin:flags_changerequest_approve", args=[obj.pk]),
            "ff_reject_url": reverse("admin:flags_changerequest_reject", args=[obj.pk]),
            "ff_withdraw_url": reverse("admin:flags_changerequest_withdraw", args=[obj.pk]),
            "ff_flag_url": reverse("admin:flags_flag_change", args=[flag.pk]),
        }

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        extra = [
            path("<path:object_id>/approve/", view(self.approve_view), name="flags_changerequest_approve"),
            path("<path:object_id>/reject/", view(self.reject_view), name="flags_changerequest_reject"),
            path("<path:object_id>/withdraw/", view(self.withdraw_view), name="flags_changerequest_withdraw"),
        ]
        return extra + super().get_urls()

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def approve(actor: Actor, cr: ChangeRequest) -> str:
            before = cr.flag.version
            outcome = services.change_request_approve(actor=actor, change_request=cr.pk,
                                                      comment=request.POST.get("comment", ""))
            return (f"Approved CR-{cr.pk}: {cr.get_operation_display().lower()} applied to {outcome.flag.key} "
                    f"(version {before} -> {outcome.flag.version}).")

        return self._decide(request, object_id, approve)

    def reject_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def reject(actor: Actor, cr: ChangeRequest) -> str:
            services.change_request_reject(actor=actor, change_request=cr.pk, reason=request.POST.get("reason", ""))
            return f"Rejected CR-{cr.pk}; {cr.flag.key} stays unchanged."

        return self._decide(request, object_id, reject)

    def withdraw_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def withdraw(actor: Actor, cr: ChangeRequest) -> str:
            services.change_request_withdraw(actor=actor, change_request=cr.pk)
            return f"Withdrew CR-{cr.pk}; {cr.flag.key} stays unchanged."

        return self._decide(request, object_id, withdraw)

    def _decide(self, request: HttpRequest, object_id: str, decide: Callable[[Actor, ChangeRequest], str]) -> (
            HttpResponse):
        cr = self.get_object(request, unquote(object_id))
        if cr is None:
            raise Http404("no such change request")
        if not self.has_view_permission(request, cr):
            raise PermissionDenied
        change_url = reverse("admin:flags_changerequest_change", args=[cr.pk])
        if request.method != "POST":
            return HttpResponseRedirect(change_url)
        try:
            done = decide(Actor.from_request(request), cr)
        except ValidationError as exc:
            self.message_user(request, "Refused, nothing changed: " + " ".join(exc.messages), messages.ERROR)
        except ServiceError as exc:
            self.message_user(request, f"Refused ({exc.code}), nothing changed: {exc.message}", messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(change_url)
