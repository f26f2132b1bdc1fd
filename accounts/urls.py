"""``/api/v1/api-keys/`` routes, included into the ``api`` namespace by ``flags.api.urls``."""

from __future__ import annotations

from django.urls import path

from accounts import api

urlpatterns = [
    path("api-keys/", api.ApiKeyListView.as_view(), name="api-key-list"),
    path("api-keys/<str:prefix>/", api.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("api-keys/<str:prefix>/revoke/", api.ApiKeyRevokeView.as_view(), name="api-key-revoke"),
    path("api-keys/<str:prefix>/expire/", api.ApiKeyExpireView.as_view(), name="api-key-expire"),
]
