"""REST views for flags, rules, kill switches and change requests: validate, call a service,
answer. ASIL-D changes answer 202 with the change request the service made."""

from __future__ import annotations

from django.db.models import Q
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.codes import KeyCode
from core.actors import ROLE_ADMIN, ROLE_WRITE, Actor
from core.errors import NotFound
from core.http.api import bool_param, choice_param, error_responses, invalid, page
from flags import selectors, services
from flags.api import serializers as s
from flags.codes import FlagCode
from flags.models import ChangeRequest, Environment, Rule, SafetyLevel
from flags.services import Outcome


def actor_of(request: Request) -> Actor:
    return Actor.from_request(request)


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return error_responses(*statuses, codes=[KeyCode, FlagCode])


READ_ERRORS = (401, 403, 404, 429)
WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 429)

def change_request_response(request: ChangeRequest) -> Response:
    return Response(s.ChangeRequestSerializer(request).data, status=status.HTTP_202_ACCEPTED,
                    headers={"Location": reverse("api:change-request-detail", args=[request.pk])})


def flag_response(flag_key: str, code: int = status.HTTP_200_OK) -> Response:
    return Response(s.FlagSerializer(selectors.get_flag(flag_key)).data, status=code)


ACCEPTED = OpenApiResponse(s.ChangeRequestSerializer, description="ASIL-D: held as a change request for approval")


# -- flags -----------------------------------------------------------------------------------------


class FlagListView(APIView):
    write_roles = (ROLE_ADMIN, ROLE_WRITE)

    @extend_schema(
        operation_id="flags_list",
        parameters=[
            OpenApiParameter("environment", str, enum=Environment.values),
            OpenApiParameter("enabled", bool),
            OpenApiParameter("safety_level", str, enum=SafetyLevel.values),
            OpenApiParameter("search", str, description="in key, name and description"),
            OpenApiParameter("archived", bool, description="archived flags instead (default false)"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses={200: s.PaginatedFlagSerializer, **_errors(400, 401, 403, 404, 429)},
    )
    def get(self, request: Request) -> Response:
        flags = selectors.flags_with_rules()
        archived = bool_param(request, "archived")
        flags = flags.filter(archived_at__isnull=not archived)
        environment = choice_param(request, "environment", Environment.values)
        if environment:
            flags = flags.filter(environment=environment)
        enabled = bool_param(request, "enabled")
        if enabled is not None:
            flags = flags.filter(enabled=enabled)
        level = choice_param(request, "safety_level", SafetyLevel.values)
        if level:
            flags = flags.filter(safety_level=level)
        search = request.query_params.get("search", "").strip()
        if search:
            flags = flags.filter(Q(key__icontains=search) | Q(name__icontains=search) | Q(description__icontains=search))
        return page(request, self, flags.order_by("key"), s.FlagSerializer)

    @extend_schema(operation_id="flags_create", request=s.FlagCreateSerializer,
                   responses={201: s.FlagSerializer, **_errors(400, 401, 403, 413, 429)})
    def post(self, request: Request) -> Response:
        data = s.FlagCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        flag = services.flag_create(actor=actor_of(request), **data.validated_data)
        return flag_response(flag.key, status.HTTP_201_CREATED)


class FlagDetailView(APIView):
    @extend_schema(operation_id="flags_retrieve", responses={200: s.FlagSerializer, **_errors(*READ_ERRORS)})
    def get(self, request: Request, key: str) -> Response:
        return flag_response(key)

    def _update(self, request: Request, key: str, *, partial: bool) -> Response:
        data = s.FlagUpdateSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        rationale = changes.pop("rationale", "")
        current = services.flag_fields(selectors.get_flag(key))
        changes = {name: value for name, value in changes.items() if current.get(name) != value}
        if not changes:
            return flag_response(key)  # already so: nothing to change, nothing to approve
        outcome = services.flag_update(actor=actor_of(request), flag=key, changes=changes, rationale=rationale)
        return self._answer(outcome)

    @staticmethod
    def _answer(outcome: Outcome) -> Response:
        if outcome.change_request is not None:
            return change_request_response(outcome.change_request)
        return flag_response(outcome.flag.key)

    @extend_schema(operation_id="flags_partial_update", request=s.FlagUpdateSerializer,
                   responses={200: s.FlagSerializer, 202: ACCEPTED, **_errors(*WRITE_ERRORS)})
    def patch(self, request: Request, key: str) -> Response:
        return self._update(request, key, partial=True)

    @extend_schema(operation_id="flags_update", request=s.FlagUpdateSerializer,
                   responses={200: s.FlagSerializer, 202: ACCEPTED, **_errors(*WRITE_ERRORS)})
    def put(self, request: Request, key: str) -> Response:
        return self._update(request, key, partial=False)

    @extend_schema(operation_id="flags_archive", request=s.RationaleSerializer,
                   responses={200: s.FlagSerializer, 202: ACCEPTED, **_errors(*WRITE_ERRORS)},
                   description="Archive the flag (flags are never deleted). ASIL-D: 202 with a change request.")
    def delete(self, request: Request, key: str) -> Response:
        data = s.RationaleSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        outcome = services.flag_archive(actor=actor_of(request), flag=key, rationale=data.validated_data["rationale"])
        return self._answer(outcome)


# -- rules ------------------------------------------------------------------------------------------


def _rule_answer(outcome: Outcome, code: int = status.HTTP_200_OK) -> Response:
    if outcome.change_request is not None:
        return change_request_response(outcome.change_request)
    if outcome.rule is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(s.RuleSerializer(outcome.rule).data, status=code)


class RuleListView(APIView):
    @extend_schema(operation_id="rules_list", responses={200: s.RuleSerializer(many=True), **_errors(*READ_ERRORS)})
    def get(self, request: Request, key: str) -> Response:
        flag = selectors.get_flag(key)
        return Response(s.RuleSerializer(flag.rules.all(), many=True).data)

    @extend_schema(operation_id="rules_create", request=s.RuleCreateSerializer,
                   responses={201: s.RuleSerializer, 202: ACCEPTED, **_errors(*WRITE_ERRORS)})
    def post(self, request: Request, key: str) -> Response:
        data = s.RuleCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        rationale = fields.pop("rationale", "")
        outcome = services.rule_create(actor=actor_of(request), flag=key, rationale=rationale, **fields)
        return _rule_answer(outcome, status.HTTP_201_CREATED)


class RuleDetailView(APIView):
    @extend_schema(operation_id="rules_retrieve", responses={200: s.RuleSerializer, **_errors(*READ_ERRORS)})
    def get(self, request: Request, key: str, rule_id: int) -> Response:
        rule = Rule.objects.filter(flag__key=key, pk=rule_id).first()
        if rule is None:
            raise NotFound(f"flag {key} has no rule {rule_id}")
        return Response(s.RuleSerializer(rule).data)

    def _update(self, request: Request, key: str, rule_id: int, partial: bool) -> Response:
        data = s.RuleUpdateSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        rationale = changes.pop("rationale", "")
        outcome = services.rule_update(actor=actor_of(request), flag=key, rule_id=rule_id, rationale=rationale,
                                       **changes)
        return _rule_answer(outcome)

    @extend_schema(operation_id="rules_partial_update", request=s.RuleUpdateSerializer,
                   responses={200: s.RuleSerializer, 202: ACCEPTED, **_errors(*WRITE_ERRORS)})
    def patch(self, request: Request, key: str, rule_id: int) -> Response:
        return self._update(request, key, rule_id, partial=True)

    @extend_schema(operation_id="rules_update", request=s.RuleUpdateSerializer,
                   responses={200: s.RuleSerializer, 202: ACCEPTED, **_errors(*WRITE_ERRORS)})
    def put(self, request: Request, key: str, rule_id: int) -> Response:
        return self._update(request, key, rule_id, partial=False)

    @extend_schema(operation_id="rules_destroy", request=s.RationaleSerializer,
                   responses={204: None, 202: ACCEPTED, **_errors(*WRITE_ERRORS)})
    def delete(self, request: Request, key: str, rule_id: int) -> Response:
        data = s.RationaleSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        outcome = services.rule_delete(actor=actor_of(request), flag=key, rule_id=rule_id,
                                       rationale=data.validated_data["rationale"])
        if outcome.change_request is not None:
            return change_request_response(outcome.change_request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- kill switch ------------------------------------------------------------------------------------


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise invalid(name, "a non-negative integer")
    return int(raw)


class KillSwitchView(APIView):
    @extend_schema(operation_id="kill_switch_state",
                   parameters=[OpenApiParameter("ack_offset", int, description="first acknowledgement listed (0)"),
                               OpenApiParameter("ack_limit", int, description="acknowledgements listed (100, at most 1000)")],
                   responses={200: s.KillSwitchStateSerializer, **_errors(400, *READ_ERRORS)},
                   description="The kill switch and the delivery of its last engagement: targeted vehicles (all, "
                               "online), frames sent, acknowledgements with their times per vehicle.")
    def get(self, request: Request, key: str) -> Response:
        offset, limit = _int_param(request, "ack_offset", 0), _int_param(request, "ack_limit", 100)
        state = selectors.kill_switch_state(selectors.get_flag(key), ack_offset=offset, ack_limit=limit)
        return Response(s.KillSwitchStateSerializer(state).data)

    @extend_schema(
        operation_id="kill_switch_engage", request=s.KillSwitchEngageSerializer,
        responses={201: s.KillSwitchStateSerializer,
                   200: OpenApiResponse(s.KillSwitchStateSerializer, description="already engaged: unchanged"),
                   **_errors(*WRITE_ERRORS)},
        description="Engage at once, on any flag (toward the safe state needs no approval).",
    )
    def post(self, request: Request, key: str) -> Response:
        data = s.KillSwitchEngageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = services.kill_switch_engage(actor=actor_of(request), flag=key, reason=data.validated_data["reason"])
        code = status.HTTP_201_CREATED if outcome.audit_actions else status.HTTP_200_OK
        return Response(s.KillSwitchStateSerializer(selectors.kill_switch_state(outcome.flag)).data, status=code)

    @extend_schema(
        operation_id="kill_switch_lift", request=s.RationaleSerializer,
        parameters=[OpenApiParameter("rationale", str, description="alternative to the body's rationale")],
        responses={200: s.KillSwitchStateSerializer, 202: ACCEPTED, **_errors(*WRITE_ERRORS)},
        description="Lift the kill switch: away from the safe state, so on ASIL-D flags a change request (202).",
    )
    def delete(self, request: Request, key: str) -> Response:
        data = s.RationaleSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        rationale = data.validated_data["rationale"] or request.query_params.get("rationale", "")
        outcome = services.kill_switch_lift(actor=actor_of(request), flag=key, rationale=rationale)
        if outcome.change_request is not None:
            return change_request_response(outcome.change_request)
        return Response(s.KillSwitchStateSerializer(selectors.kill_switch_state(outcome.flag)).data)


# -- change requests --------------------------------------------------------------------------------

CR_STATUSES = ["pending", "approved", "rejected", "withdrawn", "expired"]


def _change_request(pk: int) -> ChangeRequest:
    found = ChangeRequest.objects.select_related("flag").filter(pk=pk).first()
    if found is None:
        raise NotFound(f"no change request {pk}")
    return found


class ChangeRequestListView(APIView):
    @extend_schema(
        operation_id="change_requests_list",
        parameters=[
            OpenApiParameter("status", str, enum=CR_STATUSES),
            OpenApiParameter("flag", str, description="flag key"),
            OpenApiParameter("mine", bool, description="only the requests I made (this user or this API key)"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses={200: s.PaginatedChangeRequestSerializer, **_errors(400, 401, 403, 404, 429)},
    )
    def get(self, request: Request) -> Response:
        requests = ChangeRequest.objects.select_related("flag")
        wanted = choice_param(request, "status", CR_STATUSES)
        if wanted == "expired":
            requests = selectors.expired_requests(requests)
        elif wanted == "pending":
            requests = selectors.open_requests(requests)
        elif wanted:
            requests = requests.filter(status=wanted)
        flag_key = request.query_params.get("flag", "").strip()
        if flag_key:
            requests = requests.filter(flag__key=flag_key)
        if bool_param(request, "mine"):
            actor = actor_of(request)
            if actor.api_key is not None and actor.user is None:
                requests = requests.filter(requested_by_api_key_id=actor.api_key.pk)
            else:
                requests = requests.filter(requested_by_id=actor.user_id)
        return page(request, self, requests.order_by("-requested_at", "-id"), s.ChangeRequestSerializer)


class ChangeRequestDetailView(APIView):
    @extend_schema(operation_id="change_requests_retrieve",
                   responses={200: s.ChangeRequestSerializer, **_errors(*READ_ERRORS)})
    def get(self, request: Request, pk: int) -> Response:
        return Response(s.ChangeRequestSerializer(_change_request(pk)).data)


class ChangeRequestApproveView(APIView):
    @extend_schema(
        operation_id="change_requests_approve", request=s.ApproveSerializer,
        responses={200: s.ApprovalResultSerializer, **_errors(*WRITE_ERRORS)},
        description="A SAFETY user other than the requester (session, or an API key bound to that user) "
                    "applies the change.",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = s.ApproveSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        outcome = services.change_request_approve(actor=actor_of(request), change_request=pk,
                                                  comment=data.validated_data["comment"])
        return Response({
            "change_request": s.ChangeRequestSerializer(_change_request(pk)).data,
            "flag": s.FlagSerializer(selectors.get_flag(outcome.flag.key)).data,
        })


class ChangeRequestRejectView(APIView):
    @extend_schema(operation_id="change_requests_reject", request=s.RejectSerializer,
                   responses={200: s.ChangeRequestSerializer, **_errors(*WRITE_ERRORS)})
    def post(self, request: Request, pk: int) -> Response:
        data = s.RejectSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.change_request_reject(actor=actor_of(request), change_request=pk,
                                       reason=data.validated_data["reason"])
        return Response(s.ChangeRequestSerializer(_change_request(pk)).data)


class ChangeRequestWithdrawView(APIView):
    @extend_schema(operation_id="change_requests_withdraw", request=None,
                   responses={200: s.ChangeRequestSerializer, **_errors(*WRITE_ERRORS)})
    def post(self, request: Request, pk: int) -> Response:
        services.change_request_withdraw(actor=actor_of(request), change_request=pk)
        return Response(s.ChangeRequestSerializer(_change_request(pk)).data)
