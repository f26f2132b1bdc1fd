"""Flags' ``/api/v1/`` routes (included by ``fleetflag.urls`` in the ``api`` namespace) and OFREP's
``/ofrep/v1/``."""

from __future__ import annotations

from django.urls import path

from flags.api import hot, ofrep, signing, views

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
    path("vehicles/<str:vin>/sync/", hot.described(hot.vehicle_sync, hot.VehicleSyncDoc), name="vehicle-sync"),
    path("signing-keys/", signing.SigningKeysView.as_view(), name="signing-keys"),
]

ofrep_urlpatterns = [
    path("evaluate/flags/<str:key>", ofrep.OfrepFlagView.as_view(), name="ofrep-flag"),
    path("evaluate/flags", ofrep.OfrepBulkView.as_view(), name="ofrep-flags"),
]
