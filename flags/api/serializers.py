"""Request and response shapes. Serializers check types only; the services own the rules."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from agent_client.rules import VIN_RE
from core.http.api import AnyJSONField, paginated
from flags import selectors
from flags.models import FLAG_KEY_PATTERN, ChangeRequest, Environment, Flag, FlagType, Rule, RuleType, SafetyLevel

# -- flags and rules ---------------------------------------------------------------------------


class RuleSerializer(serializers.ModelSerializer):
    value = AnyJSONField(allow_null=True)
    conditions = serializers.DictField()

    class Meta:
        model = Rule
        fields = ("id", "type", "priority", "enabled", "conditions", "value", "variant", "created_at", "updated_at")
        read_only_fields = fields


class FlagSerializer(serializers.ModelSerializer):
    default_value = AnyJSONField(allow_null=True)
    owner_team = serializers.SerializerMethodField()
    archived = serializers.SerializerMethodField()
    kill_switch_engaged = serializers.SerializerMethodField()
    rules = RuleSerializer(many=True, read_only=True)

    class Meta:
        model = Flag
        fields = ("key", "name", "description", "type", "default_value", "enabled", "safety_level", "environment",
                  "ttl_seconds", "owner_team", "version", "archived", "archived_at", "kill_switch_engaged",
                  "total_evaluations", "active_vehicles", "last_evaluation_at", "created_at", "updated_at", "rules")
        read_only_fields = fields

    def get_owner_team(self, flag: Flag) -> str | None:
        return flag.owner_team.name if flag.owner_team is not None else None

    def get_archived(self, flag: Flag) -> bool:
        return flag.archived_at is not None

    def get_kill_switch_engaged(self, flag: Flag) -> bool:
        return selectors.is_killed(flag.rules.all())


class FlagCreateSerializer(serializers.Serializer):
    key = serializers.RegexField(FLAG_KEY_PATTERN, max_length=100,
                                 help_text="Unique and immutable: ^[a-z][a-z0-9_.-]{1,99}$")
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    type = serializers.ChoiceField(choices=FlagType.choices, default=FlagType.BOOLEAN)
    default_value = AnyJSONField(required=False, allow_null=True, default=None,
                                 help_text="Must match the type; boolean flags default to false.")
    enabled = serializers.BooleanField(required=False, default=False)
    safety_level = serializers.ChoiceField(choices=SafetyLevel.choices, default=SafetyLevel.NON_CRITICAL)
    environment = serializers.ChoiceField(choices=Environment.choices, default=Environment.PRODUCTION)
    ttl_seconds = serializers.IntegerField(min_value=60, max_value=90 * 86400, default=604800)
    owner_team = serializers.CharField(required=False, allow_null=True, default=None, help_text="A team (group) name.")


class FlagUpdateSerializer(serializers.Serializer):
    """PATCH: any subset. PUT: every field below but description, owner_team and rationale."""

    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    default_value = AnyJSONField(allow_null=True)
    enabled = serializers.BooleanField()
    safety_level = serializers.ChoiceField(choices=SafetyLevel.choices)
    environment = serializers.ChoiceField(choices=Environment.choices)
    ttl_seconds = serializers.IntegerField(min_value=60, max_value=90 * 86400)
    owner_team = serializers.CharField(required=False, allow_null=True)
    rationale = serializers.CharField(required=False, allow_blank=True, default="",
                                      help_text="Why (hazard analysis or safety-case reference); required for ASIL-D.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (set(attrs) - {"rationale"}) and self.partial:
            raise serializers.ValidationError({"non_field_errors": ["nothing to change"]})
        return attrs


class RationaleSerializer(serializers.Serializer):
    rationale = serializers.CharField(required=False, allow_blank=True, default="",
                                      help_text="Why; required when the flag is ASIL-D.")


class RuleCreateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=RuleType.choices)
    priority = serializers.IntegerField(required=False, min_value=-1_000_000, max_value=1_000_000,
                                        help_text="Higher first; default: above the highest.")
    enabled = serializers.BooleanField(required=False)
    conditions = serializers.DictField(help_text="Per rule type, see the flag rules documentation.")
    value = AnyJSONField(required=False, allow_null=True)
    variant = serializers.CharField(required=False, max_length=64)
    rationale = serializers.CharField(required=False, allow_blank=True, default="")


class RuleUpdateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=RuleType.choices, required=False)
    priority = serializers.IntegerField(required=False, min_value=-1_000_000, max_value=1_000_000)
    enabled = serializers.BooleanField(required=False)
    conditions = serializers.DictField(required=False)
    value = AnyJSONField(required=False, allow_null=True)
    variant = serializers.CharField(required=False, max_length=64)
    rationale = serializers.CharField(required=False, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (set(attrs) - {"rationale"}):
            raise serializers.ValidationError({"non_field_errors": ["nothing to change"]})
        return attrs


# -- kill switch -------------------------------------------------------------------------------


class KillSwitchEngageSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the flag is killed (shown to operators).")


class KillSwitchAckSerializer(serializers.Serializer):
    vin = serializers.CharField()
    acked_at = serializers.DateTimeField()
    version = serializers.IntegerField(help_text="The snapshot version the vehicle acknowledged (at or past the event's).")


class KillSwitchAckPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    offset = serializers.IntegerField()
    limit = serializers.IntegerField()
    results = KillSwitchAckSerializer(many=True)


class DeliverySerializer(serializers.Serializer):
    event_id = serializers.IntegerField(allow_null=True, help_text="The last kill-switch event of the flag (null: none).")
    version = serializers.IntegerField(allow_null=True, help_text="The environment's snapshot version it produced.")
    environment = serializers.CharField()
    engaged_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField(allow_null=True)
    targeted_vehicles = serializers.IntegerField(help_text="Registered vehicles in the flag's environment at the engage.")
    targeted_online = serializers.IntegerField(allow_null=True, help_text="Of those, online at the engage (null: unknown).")
    sent = serializers.IntegerField(help_text="KILL_SWITCH frames the server processes wrote to vehicle sockets.")
    pushed = serializers.BooleanField(help_text="The push channel took the frame after commit (false: delivered by "
                                                "the servers' sweep and the vehicles' next sync).")
    acknowledged = serializers.IntegerField(help_text="Vehicles that acknowledged this version or a later one.")
    acks = KillSwitchAckPageSerializer(help_text="Per vehicle, oldest first: ?ack_offset=&ack_limit= (at most 1000).")


class KillSwitchStateSerializer(serializers.Serializer):
    flag_key = serializers.CharField()
    engaged = serializers.BooleanField()
    reason = serializers.CharField(allow_null=True)
    rule_id = serializers.IntegerField(allow_null=True)
    engaged_at = serializers.DateTimeField(allow_null=True)
    engaged_by = serializers.CharField(allow_null=True)
    flag_version = serializers.IntegerField()
    delivery = DeliverySerializer()


# -- change requests ---------------------------------------------------------------------------


class ChangeRequestSerializer(serializers.ModelSerializer):
    flag = serializers.CharField(source="flag.key")
    status = serializers.CharField(source="display_status",
                                   help_text="pending, approved, rejected, withdrawn or expired")
    before = serializers.DictField()
    after = serializers.DictField()
    requested_by = serializers.CharField(source="requested_by_label")
    decided_by = serializers.CharField(source="decided_by_label")
    links = serializers.SerializerMethodField()

    class Meta:
        model = ChangeRequest
        fields = ("id", "flag", "operation", "status", "before", "after", "base_version", "rationale",
                  "requested_by", "requested_at", "expires_at", "decided_by", "decided_at", "decision_comment",
                  "links")
        read_only_fields = fields

    def get_links(self, request: ChangeRequest) -> dict[str, str]:
        pk = request.pk
        return {
            "self": reverse("api:change-request-detail", args=[pk]),
            "approve": reverse("api:change-request-approve", args=[pk]),
            "reject": reverse("api:change-request-reject", args=[pk]),
            "withdraw": reverse("api:change-request-withdraw", args=[pk]),
        }


class ApproveSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=5000, help_text="Required: why the change is refused.")


class ApprovalResultSerializer(serializers.Serializer):
    change_request = ChangeRequestSerializer()
    flag = FlagSerializer()


# -- evaluation ------------------------------------------------------------------------------------


class EvaluateRequestSerializer(serializers.Serializer):
    flag_key = serializers.CharField(max_length=100)
    vin = serializers.RegexField(VIN_RE.pattern, help_text="17 characters, no I, O or Q.")
    context = serializers.DictField(  # type: ignore[assignment]  # the evaluation context, not DRF's
        required=False, help_text="Flat attributes (string, number, boolean, null).")
    environment = serializers.ChoiceField(choices=Environment.choices, required=False,
                                          help_text="For unregistered vehicles (default production).")
    default = AnyJSONField(required=False, allow_null=True, help_text="Served when the flag does not exist.")


class EvaluationSerializer(serializers.Serializer):
    flag_key = serializers.CharField()
    value = AnyJSONField(allow_null=True)
    variant = serializers.CharField(allow_null=True)
    reason = serializers.ChoiceField(choices=["KILL_SWITCH", "DISABLED", "TARGETING_MATCH", "SPLIT", "DEFAULT",
                                              "ERROR"])
    version = serializers.IntegerField(allow_null=True, help_text="The flag's version.")
    error_code = serializers.CharField(required=False, help_text="Only when reason is ERROR, e.g. FLAG_NOT_FOUND.")


class BatchRequestSerializer(serializers.Serializer):
    vin = serializers.RegexField(VIN_RE.pattern)
    context = serializers.DictField(required=False)  # type: ignore[assignment]  # the evaluation context
    flag_keys = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=1000,
                                      help_text="Default: every flag of the environment.")
    environment = serializers.ChoiceField(choices=Environment.choices, required=False)


class BatchEntrySerializer(serializers.Serializer):
    value = AnyJSONField(allow_null=True)
    variant = serializers.CharField(allow_null=True)
    reason = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    error_code = serializers.CharField(required=False)


class BatchResponseSerializer(serializers.Serializer):
    vin = serializers.CharField()
    environment = serializers.CharField()
    version = serializers.IntegerField(help_text="The environment's snapshot version.")
    flags = serializers.DictField(child=BatchEntrySerializer())


PaginatedFlagSerializer = paginated(FlagSerializer, "PaginatedFlagList")
PaginatedChangeRequestSerializer = paginated(ChangeRequestSerializer, "PaginatedChangeRequestList")
