"""OpenFeature Remote Evaluation Protocol (OFREP) v1: any OpenFeature SDK with the OFREP
provider evaluates FleetFlag flags remotely.

- ``POST /ofrep/v1/evaluate/flags/{key}`` ``{"context": {"targetingKey": VIN, ...}}`` ->
  ``{"key", "value", "reason", "variant", "metadata"}``; 404 ``FLAG_NOT_FOUND``;
  400 ``TARGETING_KEY_MISSING`` / ``INVALID_CONTEXT``.
- ``POST /ofrep/v1/evaluate/flags`` -> ``{"flags": [...]}`` with an ETag over the
  snapshot and the context; ``If-None-Match`` -> 304.

The targeting key is the VIN. The environment is the registered vehicle's, else the
context's ``environment`` attribute, else production. OpenFeature has no kill-switch reason:
a killed flag answers reason ``DISABLED``, variant ``killed`` and metadata
``{"fleetflagReason": "KILL_SWITCH"}``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ALL_ROLES
from agent_client.evaluator import ERROR, FLAG_NOT_FOUND, KILL_SWITCH, Resolution
from agent_client.rules import VIN_RE
from core import metrics
from core.errors import Code
from core.http.api import AnyJSONField, ErrorSerializer
from core.http.errors import ApiError
from flags import selectors, snapshots
from flags.api.hot import etag_matches

_SCALAR = (str, int, float, bool, type(None))


class OfrepRequestSerializer(serializers.Serializer):
    context = serializers.DictField(  # type: ignore[assignment]  # OFREP's context, not DRF's
        required=False, help_text="targetingKey (the VIN) and flat attributes, e.g. region, sw_version")


class OfrepSuccessSerializer(serializers.Serializer):
    key = serializers.CharField()
    value = AnyJSONField(allow_null=True)
    reason = serializers.CharField()
    variant = serializers.CharField()
    metadata = serializers.DictField()


class OfrepFailureSerializer(serializers.Serializer):
    key = serializers.CharField(required=False)
    errorCode = serializers.CharField()
    errorDetails = serializers.CharField(required=False)


class OfrepBulkSerializer(serializers.Serializer):
    flags = serializers.ListField(child=serializers.DictField())


class _Invalid(Exception):
    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _target(request: Request) -> tuple[str, dict[str, Any], str]:
    """(vin, context, environment) from an OFREP request body."""
    try:
        body = request.data
    except ParseError as exc:
        raise _Invalid("PARSE_ERROR", f"the body is not valid JSON: {exc.detail}") from exc
    except ApiError as exc:  # the one parser's refusals, in OFREP's own error shape
        raise _Invalid("PARSE_ERROR" if exc.error_code == Code.PARSE_ERROR else "INVALID_CONTEXT", exc.message) from exc
    if not isinstance(body, dict):
        raise _Invalid("INVALID_CONTEXT", "the body must be a JSON object with a context")
    context = body.get("context")
    if context is None:
        raise _Invalid("TARGETING_KEY_MISSING", "context.targetingKey (the vehicle's VIN) is required")
    if not isinstance(context, dict):
        raise _Invalid("INVALID_CONTEXT", "context must be a JSON object")
    attributes = dict(context)
    vin = attributes.pop("targetingKey", None)
    if vin in (None, ""):
        raise _Invalid("TARGETING_KEY_MISSING", "context.targetingKey (the vehicle's VIN) is required")
    if not isinstance(vin, str) or not VIN_RE.fullmatch(vin):
        raise _Invalid("INVALID_CONTEXT", "targetingKey must be a VIN: 17 characters of A-H, J-N, P, R-Z and 0-9")
    bad = sorted(name for name, value in attributes.items() if not isinstance(value, _SCALAR))
    if bad:
        raise _Invalid("INVALID_CONTEXT", f"context attributes must be flat values; not: {', '.join(bad)}")
    requested = attributes.pop("environment", None)
    if requested is not None and (not isinstance(requested, str) or requested not in selectors.ENVIRONMENTS):
        raise _Invalid("INVALID_CONTEXT", f"environment must be one of {', '.join(sorted(selectors.ENVIRONMENTS))}")
    target = selectors.resolve_input(vin, attributes, requested)
    return vin, target.context, target.environment


def _success(result: Resolution, environment: str, snapshot_version: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {"environment": environment, "snapshotVersion": snapshot_version}
    if result.version is not None:
        metadata["flagVersion"] = result.version
    reason = result.reason
    if reason == KILL_SWITCH:
        reason = "DISABLED"
        metadata["fleetflagReason"] = KILL_SWITCH
    return {"key": result.flag_key, "value": result.value, "reason": reason,
            "variant": result.variant or "default", "metadata": metadata}


def _failure(result: Resolution) -> dict[str, Any]:
    code = "FLAG_NOT_FOUND" if result.error_code == FLAG_NOT_FOUND else "PARSE_ERROR"
    details = f"flag {result.flag_key} not found" if code == "FLAG_NOT_FOUND" else \
        f"flag {result.flag_key} has a rule this server cannot read"
    return {"key": result.flag_key, "errorCode": code, "errorDetails": details}


class OfrepFlagView(APIView):
    write_roles = ALL_ROLES  # evaluating is reading, whatever the method

    @extend_schema(
        operation_id="ofrep_evaluate_flag", tags=["OFREP"], request=OfrepRequestSerializer,
        responses={200: OfrepSuccessSerializer,
                   400: OpenApiResponse(OfrepFailureSerializer, description="TARGETING_KEY_MISSING, INVALID_CONTEXT, PARSE_ERROR"),
                   404: OpenApiResponse(OfrepFailureSerializer, description="FLAG_NOT_FOUND"),
                   401: ErrorSerializer, 403: ErrorSerializer, 413: ErrorSerializer, 415: ErrorSerializer,
                   429: ErrorSerializer},
    )
    def post(self, request: Request, key: str) -> Response:
        try:
            vin, context, environment = _target(request)
        except _Invalid as exc:
            return Response({"key": key, "errorCode": exc.code, "errorDetails": exc.details}, status=400)
        snapshot = snapshots.compiled(environment)
        result = snapshot.evaluate(key, vin, context)
        metrics.count_evaluations(1, api="ofrep")
        if result.reason == ERROR:
            return Response(_failure(result), status=404 if result.error_code == FLAG_NOT_FOUND else 400)
        return Response(_success(result, environment, snapshot.version))


class OfrepBulkView(APIView):
    write_roles = ALL_ROLES

    @extend_schema(
        operation_id="ofrep_evaluate_flags", tags=["OFREP"], request=OfrepRequestSerializer,
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER)],
        responses={200: OfrepBulkSerializer, 304: OpenApiResponse(description="not modified"),
                   400: OpenApiResponse(OfrepFailureSerializer, description="TARGETING_KEY_MISSING, INVALID_CONTEXT, PARSE_ERROR"),
                   401: ErrorSerializer, 403: ErrorSerializer, 413: ErrorSerializer, 415: ErrorSerializer,
                   429: ErrorSerializer},
    )
    def post(self, request: Request) -> Response:
        try:
            vin, context, environment = _target(request)
        except _Invalid as exc:
            return Response({"errorCode": exc.code, "errorDetails": exc.details}, status=400)
        document = snapshots.document(environment)
        # The answer depends on the snapshot and on the context: the tag covers both.
        canonical = json.dumps([document.etag, environment, vin, context], sort_keys=True, separators=(",", ":"))
        etag = '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Response(status=304, headers=headers)
        snapshot = snapshots.compiled_for(document)
        results = snapshot.evaluate_all(vin, context)
        flags = [_success(r, environment, document.version) if r.reason != ERROR else _failure(r)
                 for r in results.values()]
        metrics.count_evaluations(len(flags), api="ofrep")
        return Response({"flags": flags}, headers=headers)
