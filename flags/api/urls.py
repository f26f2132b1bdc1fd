"""``/api/v1/`` routes (namespace ``api``) and OFREP's ``/ofrep/v1/``."""

from __future__ import annotations

from django.urls import include, path

from audit.api import AuditLogView
from flags.api import hot, ofrep, views

app_name = "api"

urlpatterns = [
    path("flags/", views.FlagListView.as_view(), name="flag-list"),
    path("flags/<str:key>/", views.FlagDetailView.as_view(), name="flag-detail"),
    path("flags/<str:key>/rules/", views.RuleListView.as_view(), name="rule-list"),
    path("flags/<str:key>/rules/<int:rule_id>/", views.RuleDetailView.as_view(), name="rule-detail"),
    path("flags/<str:key>/kill-switch/", views.KillSwitchView.as_view(), name="kill-switch"),
    path("change-requests/", views.ChangeRequestListView.as_view(), name="change-request-list"),
    path("change-requests/<int:pk>/", views.ChangeRequestDetailView.as_view(), name="change-request-detail"),
    path("change-requests/<int:pk>/approve/", views.ChangeRequestApproveView.as_view(),
         name="change-request-approve"),
    path("change-requests/<int:pk>/reject/", views.ChangeRequestRejectView.as_view(), name="change-request-reject"),
    path("change-requests/<int:pk>/withdraw/", views.ChangeRequestWithdrawView.as_view(),
         name="change-request-withdraw"),
    path("evaluate/", hot.described(hot.evaluate, hot.EvaluateDoc), name="evaluate"),
    path("evaluate/batch/", hot.described(hot.evaluate_batch, hot.EvaluateBatchDoc), name="evaluate-batch"),
    path("vehicles/", views.VehicleListView.as_view(), name="vehicle-list"),
    path("vehicles/<str:vin>/", views.VehicleDetailView.as_view(), name="vehicle-detail"),
    path("vehicles/<str:vin>/sync/", hot.described(hot.vehicle_sync, hot.VehicleSyncDoc), name="vehicle-sync"),
    path("audit-logs/", AuditLogView.as_view(), name="audit-logs"),
    path("", include("accounts.urls")),  # api-keys/
]

ofrep_urlpatterns = [
    path("evaluate/flags/<str:key>", ofrep.OfrepFlagView.as_view(), name="ofrep-flag"),
    path("evaluate/flags", ofrep.OfrepBulkView.as_view(), name="ofrep-flags"),
]
