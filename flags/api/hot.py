"""The hot read paths: vehicle sync, evaluate, evaluate/batch — plain async Django views.

A steady-state request reads only caches: the key (``accounts.keys``), the rate-limit
counter, the vehicle (``vin -> environment + attributes``, below) and the published
snapshot (``flags.snapshots``); the database is read in a worker thread only on a miss.

Three ways in, one answer: ``flags.api.asgi.HotLane`` serves bearer requests in front of
Django's handler (and decides a steady-state 304 with ``sync_not_modified`` below, without a
request object); inside Django, ``flags.api.middleware.ApiEdgeMiddleware`` hands bearer
requests past the sync middleware; browser sessions take the normal middleware path. All
of them call these view functions. The DRF ``*Doc`` classes only describe the views in the
OpenAPI schema (drf-spectacular reads ``view.cls``); they never serve a request.
"""

from __future__ import annotations

import contextvars
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import keys
from accounts.keys import KeyInfo
from agent_client.evaluator import Resolution
from agent_client.rules import VIN_RE
from audit.context import ROLE_ADMIN, ROLE_READ, ROLE_SAFETY, ROLE_WRITE, Actor
from flags import snapshots
from flags.api import serializers as s
from flags.api.authentication import aresolve_key, bearer_token
from flags.api.exceptions import ApiError, error_response
from flags.api.throttling import hit
from flags.models import Environment
from fleetflag import metrics
from vehicles.models import Vehicle

ENVIRONMENTS = frozenset(Environment.values)
# Responses name their charset: otherwise Django parses the Content-Type (through the email
# package) to find it, which cost ~10 % of a batch evaluation.
JSON = "application/json"
VIEW_ROLES = frozenset({ROLE_ADMIN, ROLE_WRITE, ROLE_READ, ROLE_SAFETY})
SYNC_ROLES = frozenset({ROLE_ADMIN})
_SCALAR = (str, int, float, bool, type(None))
VEHICLE_CACHE_SECONDS = 300
_MISSING = "missing"

# Set while flags.api.asgi.HotLane serves a request: Django's request signals did not run, so
# database work on a cache miss looks after its connection itself.
in_lane: contextvars.ContextVar[bool] = contextvars.ContextVar("ff_in_lane", default=False)


def db(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run ``function`` in Django's sync thread (cache misses only)."""

    def run(*args: Any) -> Any:
        if not in_lane.get():
            return function(*args)
        close_old_connections()
        try:
            return function(*args)
        finally:
            close_old_connections()

    return sync_to_async(run)


# -- vehicles, cached -----------------------------------------------------------------------------


def _vehicle_key(vin: str) -> str:
    return f"ff:vehicle:{vin}"


def _load_vehicle(vin: str) -> dict[str, str] | None:
    vehicle = Vehicle.objects.filter(vin=vin).only("vin", "environment", "model", "sw_version", "region").first()
    data = None if vehicle is None else {"environment": vehicle.environment, **vehicle.context()}
    # Unknown VINs are remembered too (shorter): a flood of random VINs must not reach the DB.
    cache.set(_vehicle_key(vin), data or _MISSING, timeout=VEHICLE_CACHE_SECONDS if data else 60)
    return data


# Per process, a vehicle read in the last VEHICLE_LOCAL_SECONDS is not read again.
VEHICLE_LOCAL_SECONDS = 30.0
_local_vehicles: dict[str, tuple[float, Any]] = {}


def _remember(vin: str, found: Any) -> None:
    if len(_local_vehicles) > 50000:
        _local_vehicles.clear()
    _local_vehicles[vin] = (time.monotonic() + VEHICLE_LOCAL_SECONDS, found)


async def vehicle(vin: str) -> dict[str, str] | None:
    """The registered vehicle's environment and targeting attributes, or None."""
    memo = _local_vehicles.get(vin)
    if memo is not None and memo[0] > time.monotonic():
        found = memo[1]
    else:
        found = cache.get(_vehicle_key(vin))
        if found is None:
            found = await db(_load_vehicle)(vin) or _MISSING
        _remember(vin, found)
    return None if found == _MISSING else dict(found)


def forget_vehicle(vin: str) -> None:
    """Vehicle registration and changes call this (on commit) so the next request re-reads it
    (other processes within VEHICLE_LOCAL_SECONDS)."""
    _local_vehicles.pop(vin, None)
    cache.delete(_vehicle_key(vin))


def forget_local() -> None:
    _local_vehicles.clear()
    _answers.clear()


# -- the guard every hot view passes --------------------------------------------------------------


class Caller:
    __slots__ = ("info", "roles", "session")

    def __init__(self, info: KeyInfo | None, roles: frozenset[str], session: bool) -> None:
        self.info = info
        self.roles = roles
        self.session = session


async def authenticate(request: HttpRequest, allowed: frozenset[str]) -> Caller:
    raw = bearer_token(request)
    if raw is not None:
        info = await aresolve_key(raw)
        # Only the key's info: these views make no audit entries, so no ApiKey object is built.
        request.api_key_info = info  # type: ignore[attr-defined]
        if info.roles.isdisjoint(allowed):
            raise ApiError(403, "permission_denied", f"API key ffk_{info.prefix} may not do that")
        wait = hit(info)
        if wait is not None:
            raise ApiError(429, "rate_limited", f"rate limit exceeded; retry in {wait} s",
                           headers={"Retry-After": str(wait)})
        return Caller(info, info.roles, False)
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else None
    if user is None or not user.is_authenticated or not user.is_staff:
        raise ApiError(401, "not_authenticated", "authenticate with Authorization: Bearer <api key> or a session")
    roles = await db(lambda: Actor.for_user(user).roles)()
    if roles.isdisjoint(allowed):
        raise ApiError(403, "permission_denied", f"{user.get_username()} may not do that")
    if request.method not in ("GET", "HEAD"):
        refusal = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, _no_view, (), {})
        if refusal is not None:
            raise ApiError(403, "csrf_failed", "CSRF check failed: send the X-CSRFToken header")
    return Caller(None, roles, True)


def _no_view(request: HttpRequest) -> HttpResponse:  # pragma: no cover - CSRF checks need a callback
    return HttpResponse()


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "parse_error", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "validation_error", "the body must be a JSON object",
                       fields={"non_field_errors": ["expected a JSON object"]})
    return data


def _invalid(fields: dict[str, str]) -> ApiError:
    summary = "; ".join(f"{k}: {v}" for k, v in fields.items())
    return ApiError(400, "validation_error", f"invalid input — {summary}", fields={k: [v] for k, v in fields.items()})


def _check_vin(vin: Any, problems: dict[str, str]) -> str:
    if not isinstance(vin, str) or not VIN_RE.match(vin):
        problems["vin"] = "a VIN: 17 characters of A-H, J-N, P, R-Z and 0-9"
        return ""
    return vin


def _check_context(context: Any, problems: dict[str, str]) -> dict[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, dict) or not all(isinstance(v, _SCALAR) for v in context.values()):
        problems["context"] = "a flat JSON object of attributes (string, number, boolean or null values)"
        return {}
    return context


async def _target(vin: str, body: dict[str, Any], context: dict[str, Any],
                  problems: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The environment and the full context: the registered vehicle's, else the body's."""
    requested = body.get("environment")
    if requested is not None and (not isinstance(requested, str) or requested not in ENVIRONMENTS):
        problems["environment"] = f"one of {', '.join(sorted(ENVIRONMENTS))}"
    if problems:
        raise _invalid(problems)
    registered = await vehicle(vin)
    if registered is None:
        return requested or "production", context
    environment = registered.pop("environment")
    merged = {name: value for name, value in registered.items() if context.get(name) is None}
    return environment, {**context, **merged} if merged else context


async def _document(environment: str) -> snapshots.Document:
    found = snapshots.document_if_cached(environment, max_age=settings.SNAPSHOT_LOCAL_SECONDS)
    if found is None:
        found = await db(snapshots.document)(environment)
    return found


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(data, separators=(",", ":")), status=status, content_type=JSON, charset="utf-8")


Handler = Callable[..., Awaitable[HttpResponse]]


def hot_view(allowed: frozenset[str], methods: tuple[str, ...]) -> Callable[[Handler], Any]:
    """Wrap a hot handler: method check, authentication, limits, errors in the API's format."""

    def decorate(handler: Handler) -> Any:
        @csrf_exempt  # sessions are checked in authenticate(); bearer keys need no CSRF token
        async def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(request, 405, "method_not_allowed", f"method {request.method} not allowed",
                                      headers={"Allow": ", ".join(methods)})
            try:
                caller = await authenticate(request, allowed)
                return await handler(request, caller, **kwargs)
            except ApiError as exc:
                return error_response(request, exc.status_code, exc.error_code, exc.message, fields=exc.fields,
                                      headers=exc.headers)

        view.hot = True  # type: ignore[attr-defined]
        return view

    return decorate


# -- the views -------------------------------------------------------------------------------------

_ETAG_SPLIT = re.compile(r"\s*,\s*")


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match (weak comparison, RFC 9110 §13.1.2): any listed tag, or *."""
    if not header:
        return False
    for tag in _ETAG_SPLIT.split(header.strip()):
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@hot_view(VIEW_ROLES | SYNC_ROLES, ("GET", "HEAD"))
async def vehicle_sync(request: HttpRequest, caller: Caller, vin: str) -> HttpResponse:
    if caller.roles.isdisjoint(SYNC_ROLES) and not caller.session:
        raise ApiError(403, "permission_denied", "vehicle sync needs an ADMIN key (vehicle tokens come later)")
    if not VIN_RE.match(vin):
        raise _invalid({"vin": "a VIN: 17 characters of A-H, J-N, P, R-Z and 0-9"})
    registered = await vehicle(vin)
    if registered is None:
        raise ApiError(404, "not_found", f"no registered vehicle {vin}")
    # One cache read (the current ETag) in the steady state; the body is kept per process.
    document = await _document(registered["environment"])
    if etag_matches(request.headers.get("If-None-Match", ""), document.etag):
        response = HttpResponse(status=304, charset="utf-8")
    else:
        response = HttpResponse(document.body, content_type=JSON, charset="utf-8")
        response["X-Snapshot-Version"] = str(document.version)
    response["ETag"] = document.etag
    response["Cache-Control"] = "no-cache"
    return response


@hot_view(VIEW_ROLES, ("POST",))
async def evaluate(request: HttpRequest, caller: Caller) -> HttpResponse:
    body = _json_body(request)
    problems: dict[str, str] = {}
    flag_key = body.get("flag_key")
    if not isinstance(flag_key, str) or not flag_key:
        problems["flag_key"] = "the flag's key is required"
    vin = _check_vin(body.get("vin"), problems)
    context = _check_context(body.get("context"), problems)
    environment, context = await _target(vin, body, context, problems)
    snapshot = snapshots.compiled_for(await _document(environment))
    result: Resolution = snapshot.evaluate(str(flag_key), vin, context, body.get("default"))
    metrics.count_evaluations(1)
    return _json(result.as_dict())


@hot_view(VIEW_ROLES, ("POST",))
async def evaluate_batch(request: HttpRequest, caller: Caller) -> HttpResponse:
    body = _json_body(request)
    problems: dict[str, str] = {}
    vin = _check_vin(body.get("vin"), problems)
    context = _check_context(body.get("context"), problems)
    flag_keys = body.get("flag_keys")
    if flag_keys is not None and (
        not isinstance(flag_keys, list) or len(flag_keys) > 1000 or not all(isinstance(k, str) for k in flag_keys)
    ):
        problems["flag_keys"] = "a list of at most 1000 flag keys"
    environment, context = await _target(vin, body, context, problems)
    document = await _document(environment)
    memo_key = (vin, json.dumps(context, sort_keys=True), tuple(flag_keys) if flag_keys is not None else None)
    answers = _answers_for(document)
    found = answers.get(memo_key)
    if found is None:
        found = _batch_body(document, vin, environment, context, flag_keys)
        answers.put(memo_key, *found)
    content, count = found
    metrics.count_evaluations(count)
    return HttpResponse(content, content_type=JSON, charset="utf-8")


def _batch_body(document: snapshots.Document, vin: str, environment: str, context: dict[str, Any],
                flag_keys: list[str] | None) -> tuple[bytes, int]:
    snapshot = snapshots.compiled_for(document)
    results = snapshot.evaluate_all(vin, context, flag_keys)
    fragments = _fragments_of(snapshot)
    parts = []
    for r in results.values():
        # The evaluator hands out the same Resolution object for the same outcome of a flag:
        # its JSON is made once per snapshot and process.
        part = fragments.get(id(r)) if r.error_code is None else None
        if part is None:
            part = _fragment(r)
            if r.error_code is None:
                fragments[id(r)] = part
        parts.append(part)
    head = json.dumps({"vin": vin, "environment": environment, "version": document.version}, separators=(",", ":"))
    return (head[:-1] + ',"flags":{' + ",".join(parts) + "}}").encode(), len(parts)


class _Answers:
    """Batch answers of one snapshot, by (VIN, context, flag keys): the answer is a pure
    function of those and the snapshot, and a fleet asks the same question again and again.
    Least recently used entries go past ``API_BATCH_CACHE_BYTES`` (default 16 MiB)."""

    def __init__(self, etag: str, budget: int) -> None:
        self.etag = etag
        self.budget = budget
        self.size = 0
        self.entries: OrderedDict[Any, tuple[bytes, int]] = OrderedDict()

    def get(self, key: Any) -> tuple[bytes, int] | None:
        """(body, number of flags) when this question was answered before."""
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: Any, content: bytes, count: int) -> None:
        if self.budget <= 0 or len(content) > self.budget:
            return
        self.entries[key] = (content, count)
        self.size += len(content)
        while self.size > self.budget:
            _, (old, _) = self.entries.popitem(last=False)
            self.size -= len(old)


_answers: dict[str, _Answers] = {}


def _answers_for(document: snapshots.Document) -> _Answers:
    found = _answers.get(document.environment)
    if found is None or found.etag != document.etag:
        found = _answers[document.environment] = _Answers(document.etag, settings.API_BATCH_CACHE_BYTES)
    return found


def _fragment(r: Resolution) -> str:
    entry: dict[str, Any] = {"value": r.value, "variant": r.variant, "reason": r.reason, "version": r.version}
    if r.error_code is not None:
        entry["error_code"] = r.error_code
    return json.dumps(r.flag_key) + ":" + json.dumps(entry, separators=(",", ":"))


# Per environment, for the compiled snapshot in use: id(Resolution) -> its JSON. The entry holds
# the snapshot, which keeps its Resolutions alive, so an id is never reused while it is listed.
_fragment_tables: dict[str | None, tuple[Any, dict[int, str]]] = {}


def _fragments_of(snapshot: Any) -> dict[int, str]:
    entry = _fragment_tables.get(snapshot.environment)
    if entry is None or entry[0] is not snapshot:
        entry = _fragment_tables[snapshot.environment] = (snapshot, {})
    return entry[1]


# -- schema descriptions (never serve requests) -----------------------------------------------------

_ERRORS = {
    400: OpenApiResponse(s.ErrorSerializer, description="validation_error (fields) or parse_error"),
    401: OpenApiResponse(s.ErrorSerializer, description="not_authenticated, invalid_api_key, api_key_expired, ..."),
    403: OpenApiResponse(s.ErrorSerializer, description="permission_denied"),
    413: OpenApiResponse(s.ErrorSerializer, description="payload_too_large"),
    415: OpenApiResponse(s.ErrorSerializer, description="unsupported_media_type"),
    429: OpenApiResponse(s.ErrorSerializer, description="rate_limited (Retry-After)"),
}


class _Doc(APIView):
    def _never(self, request: Request, **kwargs: Any) -> Response:  # pragma: no cover
        raise RuntimeError("schema description only")


class VehicleSyncDoc(_Doc):
    @extend_schema(
        operation_id="vehicles_sync",
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER,
                                     description="the ETag of the snapshot the caller holds")],
        responses={
            (200, "application/json"): OpenApiResponse(
                description="The environment's published snapshot, as vehicles evaluate it "
                            "({format, environment, version, generated_at, flags}); strong ETag."),
            304: OpenApiResponse(description="Not modified: the caller's ETag is current."),
            **{k: v for k, v in _ERRORS.items() if k in (400, 401, 403, 429)},
            404: OpenApiResponse(s.ErrorSerializer, description="no registered vehicle with this VIN"),
        },
    )
    def get(self, request: Request, vin: str) -> Response:  # pragma: no cover
        return self._never(request)


class EvaluateDoc(_Doc):
    @extend_schema(operation_id="evaluate", request=s.EvaluateRequestSerializer,
                   responses={200: s.EvaluationSerializer, **_ERRORS})
    def post(self, request: Request) -> Response:  # pragma: no cover
        return self._never(request)


class EvaluateBatchDoc(_Doc):
    @extend_schema(operation_id="evaluate_batch", request=s.BatchRequestSerializer,
                   responses={200: s.BatchResponseSerializer, **_ERRORS})
    def post(self, request: Request) -> Response:  # pragma: no cover
        return self._never(request)


def described(view: Any, doc: type[APIView]) -> Any:
    """Give a plain view the DRF class that describes it (drf-spectacular reads ``.cls``)."""
    view.cls = doc
    view.initkwargs = {}
    return view





def vehicle_info(vin: str) -> dict[str, str] | None:
    """``vehicle`` for sync callers (the OFREP views)."""
    found = cache.get(_vehicle_key(vin))
    if found is None:
        return _load_vehicle(vin)
    return None if found == _MISSING else dict(found)


# -- the steady-state poll, decided without building a request -------------------------------------


def sync_not_modified(raw_key: str, vin: str, if_none_match: str) -> tuple[str, int | None] | None:
    """For ``flags.api.asgi.HotLane``: (ETag, None) when ``vehicle_sync`` would answer 304,
    (ETag, retry-after) when it would answer 429, None when anything else could happen (a cache
    miss, a refusal, a last_used_at write due, a changed snapshot): the lane then runs the view.

    Every check the view makes is made here, in its order, from the per-process caches only;
    the rate limit is counted last, once the answer is otherwise certain, so that it is never
    counted twice."""
    if not if_none_match:
        return None
    found = keys.cached_lookup(raw_key)
    if not isinstance(found, KeyInfo) or found.refusal() is not None or found.roles.isdisjoint(SYNC_ROLES):
        return None
    memo = _local_vehicles.get(vin)
    if memo is None or memo[0] <= time.monotonic() or memo[1] == _MISSING:
        return None
    document = snapshots.document_if_cached(memo[1]["environment"], max_age=settings.SNAPSHOT_LOCAL_SECONDS)
    if document is None or not etag_matches(if_none_match, document.etag):
        return None
    if keys.touch_due(found):
        return None  # touch_due() set its latch: the view must write last_used_at now
    return document.etag, hit(found)
