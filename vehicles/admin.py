"""Registered vehicles: status, last seen and agent telemetry; registration and tokens for ADMIN.

Every write goes through ``vehicles.services``: *Add* registers (``vehicle_register``) and
shows the token once, on the page that answers the form (never in a message, which would be
stored in the session or a cookie until read); *Rotate token* and *Revoke token* (buttons on
a vehicle's page, revoke also as an action on the list) ask for confirmation first. Nothing
else about a vehicle is edited here, and the token's hash is never shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from core.actors import Actor
from core.environments import Environment
from core.errors import ServiceError
from vehicles import services
from vehicles.models import Vehicle

if TYPE_CHECKING:
    _VehicleAdminBase = admin.ModelAdmin[Vehicle]
else:
    _VehicleAdminBase = admin.ModelAdmin

REGISTER_FIELDS = ("vin", "model", "sw_version", "region", "environment")
TOKEN_TEMPLATE = "admin/vehicles/vehicle/token.html"
CONFIRM_TEMPLATE = "admin/vehicles/vehicle/confirm.html"


def _actor_of(request: HttpRequest) -> Actor:
    cached = getattr(request, "_ff_actor", None)
    if cached is None or cached.user != request.user:
        cached = Actor.for_user(request.user)
        request._ff_actor = cached  # type: ignore[attr-defined]
    return cached


def _text(exc: ValidationError | ServiceError) -> str:
    if isinstance(exc, ServiceError):
        return exc.message
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


class VehicleRegisterForm(forms.ModelForm):
    environment = forms.ChoiceField(choices=Environment.choices, initial=Environment.PRODUCTION,
                                    help_text="Which flags the vehicle receives.")

    class Meta:
        model = Vehicle
        fields = REGISTER_FIELDS
        help_texts = {"vin": "17 characters of A-H, J-N, P, R-Z and 0-9 (no I, O or Q); upper-cased.",
                      "sw_version": "A semantic version, like 2.5.0 or 3.0.0-rc.1."}

    def clean_vin(self) -> str:
        vin = self.cleaned_data.get("vin", "")
        return services.normal_vin(vin) or vin

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if any(name in self.errors for name in REGISTER_FIELDS):
            return data
        # The service's own validation, so the form shows exactly what registration refuses.
        data.update(services.clean_attributes(**{name: data.get(name) for name in REGISTER_FIELDS}))
        if Vehicle.objects.filter(vin=data["vin"]).exists():
            raise ValidationError({"vin": f"{data['vin']} is registered already; to give it a new token, "
                                          "open it and use Rotate token."})
        return data


class TokenStateFilter(admin.SimpleListFilter):
    title = "token"
    parameter_name = "token"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked"), ("none", "None")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "active":
            return queryset.filter(token_hash__isnull=False, token_revoked_at__isnull=True)
        if value == "revoked":
            return queryset.filter(token_hash__isnull=False, token_revoked_at__isnull=False)
        if value == "none":
            return queryset.filter(token_hash__isnull=True)
        return queryset


@admin.register(Vehicle)
class VehicleAdmin(_VehicleAdminBase):
    change_form_template = "admin/vehicles/vehicle/change_form.html"
    list_display = ("vin", "model", "sw_version", "region", "environment", "status", "last_seen_at", "agent_version",
                    "agent_memory_mb", "agent_cpu_percent", "cache_size_mb", "token")
    list_filter = ("model", "region", "sw_version", "status", "environment", TokenStateFilter)
    search_fields = ("^vin", "model", "sw_version")
    search_help_text = "A VIN (or its beginning), a model or a software version."
    date_hierarchy = "last_seen_at"
    list_per_page = 100
    actions = ["revoke_tokens"]
    fields = ("vin", "model", "sw_version", "region", "environment", "status", "last_seen_at", "agent_version",
              "agent_memory_mb", "agent_cpu_percent", "cache_size_mb", "token", "token_issued_at", "token_revoked_at",
              "created_at", "updated_at")
    readonly_fields = fields

    @admin.display(description="Token")
    def token(self, obj: Vehicle) -> str:
        return obj.token_state

    # -- permissions: ADMIN registers and handles tokens (the services check again) -------------

    def _manages(self, request: HttpRequest) -> bool:
        return services.may_manage_vehicles(_actor_of(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._manages(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # nothing is edited in place: registration and tokens go through their pages

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit refers to vehicles; a vehicle that leaves the fleet: revoke its token

    def has_manage_tokens_permission(self, request: HttpRequest) -> bool:
        return self._manages(request)

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    # -- registration ------------------------------------------------------------------------------

    def get_fields(self, request: HttpRequest, obj: Vehicle | None = None) -> Any:
        return REGISTER_FIELDS if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Vehicle | None = None) -> Any:
        return () if obj is None else self.readonly_fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = VehicleRegisterForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request: HttpRequest, obj: Vehicle, form: Any, change: bool) -> None:
        if change:
            return
        data = form.cleaned_data
        try:
            vehicle, token = services.vehicle_register(actor=Actor.from_request(request),
                                                       **{name: data[name] for name in REGISTER_FIELDS})
        except (ValidationError, ServiceError) as exc:  # a registration that raced this one
            request._ff_refused = _text(exc)  # type: ignore[attr-defined]
            return
        obj.__dict__.update({f.attname: getattr(vehicle, f.attname) for f in Vehicle._meta.concrete_fields})
        obj._state.adding, obj._state.db = False, vehicle._state.db
        request._ff_token = token  # type: ignore[attr-defined]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        return  # a vehicle has no related rows to save here

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if getattr(request, "_ff_refused", None) is not None:
            return None  # nothing was added
        return super().log_addition(request, obj, message)

    def response_add(self, request: HttpRequest, obj: Vehicle, post_url_continue: str | None = None) -> HttpResponse:
        refused = getattr(request, "_ff_refused", None)
        if refused is not None:
            self.message_user(request, f"Not registered: {refused}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:vehicles_vehicle_add"))
        return self._token_page(request, obj, request._ff_token,  # type: ignore[attr-defined]
                                title=f"Vehicle {obj.vin} registered")

    def _token_page(self, request: HttpRequest, vehicle: Vehicle, token: str, *, title: str) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "vehicle": vehicle,
            "token": token,
            "vehicle_url": reverse("admin:vehicles_vehicle_change", args=[vehicle.pk]),
            "add_url": reverse("admin:vehicles_vehicle_add"),
        }
        response = TemplateResponse(request, TOKEN_TEMPLATE, context)
        response["Cache-Control"] = "no-store"
        return response

    # -- the vehicle's page: rotate and revoke -----------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        extra = [
            path("<path:object_id>/token/rotate/", view(self.rotate_view), name="vehicles_vehicle_rotate"),
            path("<path:object_id>/token/revoke/", view(self.revoke_view), name="vehicles_vehicle_revoke"),
        ]
        return extra + super().get_urls()

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = dict(extra_context or {})
        extra["ff_manages"] = self._manages(request)
        extra["ff_rotate_url"] = reverse("admin:vehicles_vehicle_rotate", args=[object_id])
        extra["ff_revoke_url"] = reverse("admin:vehicles_vehicle_revoke", args=[object_id])
        return super().change_view(request, object_id, form_url, extra)

    def _managed(self, request: HttpRequest, object_id: str) -> Vehicle:
        if not self._manages(request):
            raise PermissionDenied
        vehicle = self.get_object(request, unquote(object_id))
        if vehicle is None:
            raise Http404("no such vehicle")
        return vehicle

    def _confirm_page(self, request: HttpRequest, *, title: str, vehicles: list[Vehicle], explanation: str,
                      submit: str, action: str | None = None, cancel_url: str = "") -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "vehicles": vehicles,
            "explanation": explanation,
            "submit": submit,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "cancel_url": cancel_url or reverse("admin:vehicles_vehicle_changelist"),
        }
        return TemplateResponse(request, CONFIRM_TEMPLATE, context)

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        vehicle = self._managed(request, object_id)
        change_url = reverse("admin:vehicles_vehicle_change", args=[vehicle.pk])
        if request.method != "POST":
            replaced = ("Its current token stops opening connections at once; install the new one on the vehicle."
                        if vehicle.token_state == "active" else "It has no live token now.")
            return self._confirm_page(
                request, title=f"Rotate the token of {vehicle.vin}", vehicles=[vehicle], cancel_url=change_url,
                explanation=f"A new token is issued and shown once on the next page. {replaced}",
                submit="Issue a new token")
        try:
            token = services.vehicle_token_rotate(actor=Actor.from_request(request), vin=vehicle.vin)
        except ServiceError as exc:
            self.message_user(request, f"{vehicle.vin}: refused, nothing changed - {exc.message}", messages.ERROR)
            return HttpResponseRedirect(change_url)
        vehicle.refresh_from_db()
        return self._token_page(request, vehicle, token, title=f"New token for {vehicle.vin}")

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        vehicle = self._managed(request, object_id)
        change_url = reverse("admin:vehicles_vehicle_change", args=[vehicle.pk])
        if request.method != "POST":
            return self._confirm_page(
                request, title=f"Revoke the token of {vehicle.vin}", vehicles=[vehicle], cancel_url=change_url,
                explanation="The vehicle's token stops opening connections at once, on every server. The vehicle "
                            "is kept; Rotate token issues a new one.",
                submit="Revoke the token")
        self._revoke(request, vehicle)
        return HttpResponseRedirect(change_url)

    def _revoke(self, request: HttpRequest, vehicle: Vehicle) -> None:
        try:
            services.vehicle_token_revoke(actor=Actor.from_request(request), vin=vehicle.vin)
        except ServiceError as exc:
            self.message_user(request, f"{vehicle.vin}: refused, nothing changed - {exc.message}", messages.ERROR)
        else:
            self.message_user(request, format_html("{}: token revoked.", vehicle.vin), messages.SUCCESS)

    @admin.action(description="Revoke the tokens of selected vehicles", permissions=["manage_tokens"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Vehicle]) -> HttpResponse | None:
        vehicles = list(queryset.order_by("vin"))
        if "_confirm" not in request.POST:
            return self._confirm_page(
                request, title="Revoke vehicle tokens", vehicles=vehicles, action="revoke_tokens",
                explanation="These vehicles' tokens stop opening connections at once, on every server. The vehicles "
                            "are kept; Rotate token on a vehicle's page issues a new one.",
                submit=f"Revoke {len(vehicles)} token(s)")
        for vehicle in vehicles:
            self._revoke(request, vehicle)
        return None
