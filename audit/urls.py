"""The audit trail's ``/api/v1/`` routes (included by ``fleetflag.urls`` in the ``api`` namespace)."""

from __future__ import annotations

from django.urls import path

from audit.api import AuditLogView

urlpatterns = [
    path("audit-logs/", AuditLogView.as_view(), name="audit-logs"),
]
