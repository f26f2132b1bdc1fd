"""The hot read paths: vehicle sync, evaluate, evaluate/batch — plain async Django views.

A steady-state request reads only caches: the key (``accounts.keys``), the rate-limit
counter, the vehicle (``vehicles.selectors``) and the published snapshot
(``flags.snapshots``); the database is read in a worker thread only on a miss.

Three ways in, one answer: ``core.http.lane.HotLane`` serves bearer requests in front of
Django's handler (and lets ``vehicle_sync.quick`` decide a steady-state 304 without a request
object); inside Django, ``core.http.edge.ApiEdgeMiddleware`` hands bearer requests past the
sync middleware; browser sessions take the normal middleware path. All of them call these
view functions, guarded by ``accounts.authentication.hot_view``. The DRF ``*Doc`` classes
only describe the views in the OpenAPI schema (drf-spectacular reads ``view.cls``); they
never serve a request.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import keys
from accounts.authentication import Caller, check_cached, hot_view
from accounts.codes import KeyCode
from agent_client.evaluator import Resolution
from agent_client.rules import VIN_RE
from core import metrics
from core.actors import ROLE_ADMIN
from core.errors import Code
from core.http.api import ErrorSerializer, error_responses
from core.http.body import parse_json
from core.http.errors import ApiError
from core.http.threads import db
from flags import selectors, snapshots
from flags.api import serializers as s
from vehicles import selectors as vehicles

# Responses name their charset: otherwise Django parses the Content-Type (through the email
# package) to find it, which cost ~10 % of a batch evaluation.
JSON = "application/json"
# Keys that may read a vehicle's snapshot (vehicle tokens come with the vehicle issue);
# staff sessions with any role may.
SYNC_KEY_ROLES = frozenset({ROLE_ADMIN})
_SCALAR = (str, int, float, bool, type(None))

def _json_body(request: HttpRequest) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, Code.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
    data = parse_json(request.body or b"{}")
    if not isinstance(data, dict):
        raise ApiError(400, Code.VALIDATION_ERROR, "the body must be a JSON object",
                       fields={"non_field_errors": ["expected a JSON object"]})
    return data


def _invalid(fields: dict[str, str]) -> ApiError:
    summary = "; ".join(f"{k}: {v}" for k, v in fields.items())
    return ApiError(400, Code.VALIDATION_ERROR, f"invalid input — {summary}", fields={k: [v] for k, v in fields.items()})


def _check_vin(vin: Any, problems: dict[str, str]) -> str:
    if not isinstance(vin, str) or not VIN_RE.fullmatch(vin):
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
                  problems: dict[str, str]) -> selectors.EvaluationInput:
    requested = body.get("environment")
    if requested is not None and (not isinstance(requested, str) or requested not in selectors.ENVIRONMENTS):
        problems["environment"] = f"one of {', '.join(sorted(selectors.ENVIRONMENTS))}"
    if problems:
        raise _invalid(problems)
    return await selectors.aresolve_input(vin, context, requested)


async def _document(environment: str) -> snapshots.Document:
    found = snapshots.document_if_cached(environment, max_age=settings.SNAPSHOT_LOCAL_SECONDS)
    if found is None:
        found = await db(snapshots.document)(environment)
    return found


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(data, separators=(",", ":")), status=status, content_type=JSON, charset="utf-8")


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


@hot_view(("GET", "HEAD"), key_roles=SYNC_KEY_ROLES)
async def vehicle_sync(request: HttpRequest, caller: Caller, vin: str) -> HttpResponse:
    if not VIN_RE.fullmatch(vin):
        raise _invalid({"vin": "a VIN: 17 characters of A-H, J-N, P, R-Z and 0-9"})
    registered = await vehicles.atargeting(vin)
    if registered is None:
        raise ApiError(404, Code.NOT_FOUND, f"no registered vehicle {vin}")
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


@hot_view(("POST",))
async def evaluate(request: HttpRequest, caller: Caller) -> HttpResponse:
    body = _json_body(request)
    problems: dict[str, str] = {}
    flag_key = body.get("flag_key")
    if not isinstance(flag_key, str) or not flag_key:
        problems["flag_key"] = "the flag's key is required"
    vin = _check_vin(body.get("vin"), problems)
    context = _check_context(body.get("context"), problems)
    target = await _target(vin, body, context, problems)
    snapshot = snapshots.compiled_for(await _document(target.environment))
    result: Resolution = snapshot.evaluate(str(flag_key), vin, target.context, body.get("default"))
    metrics.count_evaluations(1)
    return _json(result.as_dict())


@hot_view(("POST",))
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
    target = await _target(vin, body, context, problems)
    environment, context = target.environment, target.context
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

_ERRORS = error_responses(400, 401, 403, 413, 415, 429, codes=[KeyCode])


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
                            "({format, environment, version, generated_at, flags, kid, sig}), signed "
                            "with the active key of signing-keys/ (SPEC §4 \"Signed payloads\"); strong ETag."),
            304: OpenApiResponse(description="Not modified: the caller's ETag is current."),
            **{k: v for k, v in _ERRORS.items() if k in (400, 401, 403, 429)},
            404: OpenApiResponse(ErrorSerializer, description="no registered vehicle with this VIN"),
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





# -- the steady-state poll, decided without building a request -------------------------------------


async def _sync_quick(headers: dict[bytes, bytes], kwargs: dict[str, Any]) -> tuple[int, list[Any], bytes] | None:
    """For ``core.http.lane.HotLane``: the 304 ``vehicle_sync`` would give, from the caches only;
    None when anything else could happen (a cache miss anywhere, a changed snapshot): the view
    then answers. A refusal of the key raises as the view would (the one key check), and the
    ``last_used_at`` touch it decides is written here — the decision is taken once."""
    if_none_match = headers.get(b"if-none-match", b"").decode("latin1")
    if not if_none_match:
        return None
    environment = vehicles.local_environment(kwargs["vin"])
    if environment is None:
        return None
    document = snapshots.document_if_cached(environment, max_age=settings.SNAPSHOT_LOCAL_SECONDS)
    if document is None or not etag_matches(if_none_match, document.etag):
        return None
    raw_key = headers.get(b"authorization", b"")[7:].decode("latin1").strip()
    checked = check_cached(raw_key, SYNC_KEY_ROLES)
    if checked is None:
        return None
    info, touch = checked
    if touch:
        await db(keys.touch_write)(info.id)
    return 304, [(b"ETag", document.etag.encode()), (b"Cache-Control", b"no-cache")], b""


vehicle_sync.quick = _sync_quick


def forget_local() -> None:
    """Tests: drop this process's batch answers."""
    _answers.clear()
