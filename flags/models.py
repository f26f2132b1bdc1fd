"""Flags, their targeting rules, change requests and the per-environment revision.

Models hold data and field-level checks only; every change goes through
``flags.services`` so that governance and audit cannot be bypassed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from agent_client.rules import validate_rule, value_type_error
from core.environments import Environment

FLAG_KEY_PATTERN = r"^[a-z][a-z0-9_.-]{1,99}$"


class FlagType(models.TextChoices):
    BOOLEAN = "boolean", "Boolean"
    STRING = "string", "String"
    NUMBER = "number", "Number"
    JSON = "json", "JSON"


class SafetyLevel(models.TextChoices):
    NON_CRITICAL = "NON_CRITICAL", "Non-Critical"
    SAFETY_RELEVANT = "SAFETY_RELEVANT", "Safety-Relevant"
    ASIL_B = "ASIL_B", "ASIL-B"
    ASIL_D = "ASIL_D", "ASIL-D"


SAFETY_ORDER = {level: rank for rank, level in enumerate(SafetyLevel.values)}


class RuleType(models.TextChoices):
    KILL_SWITCH = "kill_switch", "Kill switch"
    VEHICLE_WHITELIST = "vehicle_whitelist", "Vehicle whitelist"
    VEHICLE_TARGET = "vehicle_target", "Vehicle target"
    USER_ATTRIBUTE = "user_attribute", "Context attribute"
    PERCENTAGE_ROLLOUT = "percentage_rollout", "Percentage rollout"


class Flag(models.Model):
    key = models.CharField(
        max_length=100,
        unique=True,
        validators=[RegexValidator(FLAG_KEY_PATTERN, "2-100 characters: a lowercase letter, then a-z 0-9 _ . -")],
        help_text="Unique and immutable: vehicles and code refer to the flag by it.",
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    type = models.CharField(max_length=16, choices=FlagType.choices, default=FlagType.BOOLEAN)
    default_value = models.JSONField(help_text="Served when no rule matches, when disabled, killed or stale.")
    enabled = models.BooleanField(default=False)
    safety_level = models.CharField(max_length=16, choices=SafetyLevel.choices, default=SafetyLevel.NON_CRITICAL)
    environment = models.CharField(max_length=16, choices=Environment.choices, default=Environment.PRODUCTION)
    ttl_seconds = models.PositiveIntegerField(
        default=604800,
        validators=[MinValueValidator(60), MaxValueValidator(90 * 86400)],
        help_text="How long a vehicle may serve its cached copy offline (default 7 days).",
    )
    owner_team = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="owned_flags",
        help_text="Only this team (and ADMIN) may change the flag. Empty: any WRITE user.",
    )
    total_evaluations = models.BigIntegerField(default=0)
    active_vehicles = models.IntegerField(default=0)
    last_evaluation_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1, help_text="Increases on every applied change.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("key",)
        permissions = [("archive_flag", "Can archive flag")]
        indexes = [
            models.Index(fields=["environment", "archived_at"], name="flag_env_archived"),
            models.Index(fields=["safety_level"], name="flag_safety"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(type__in=FlagType.values), name="flag_type_valid"),
            models.CheckConstraint(condition=models.Q(safety_level__in=SafetyLevel.values), name="flag_safety_valid"),
            models.CheckConstraint(condition=models.Q(environment__in=Environment.values), name="flag_env_valid"),
            models.CheckConstraint(condition=models.Q(ttl_seconds__gte=60), name="flag_ttl_min"),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def is_asil_d(self) -> bool:
        return self.safety_level == SafetyLevel.ASIL_D

    def clean(self) -> None:
        problem = value_type_error(self.type, self.default_value)
        if problem:
            raise ValidationError({"default_value": problem})


class Rule(models.Model):
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="rules")
    type = models.CharField(max_length=32, choices=RuleType.choices)
    priority = models.IntegerField(default=0, help_text="Higher is evaluated first.")
    enabled = models.BooleanField(default=True)
    conditions = models.JSONField(default=dict)
    value = models.JSONField(null=True, blank=True, help_text="Served on a match; empty for boolean flags means true.")
    variant = models.CharField(max_length=64, default="enabled")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-priority", "id")
        constraints = [
            models.UniqueConstraint(fields=["flag", "type", "priority"], name="rule_flag_type_priority_unique"),
            models.CheckConstraint(condition=models.Q(type__in=RuleType.values), name="rule_type_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_type_display()} (priority {self.priority})"

    def clean(self) -> None:
        flag_type = self.flag.type if self.flag_id else FlagType.BOOLEAN
        errors = validate_rule(
            flag_type=flag_type, rule_type=self.type, conditions=self.conditions, value=self.value, variant=self.variant
        )
        if errors:
            raise ValidationError(errors)


class Revision(models.Model):
    """A counter per environment, bumped by every applied change: the snapshot version."""

    environment = models.CharField(max_length=16, choices=Environment.choices, primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.environment}@{self.value}"


class ChangeRequest(models.Model):
    """A proposed change to an ASIL-D flag, applied only when a second person approves it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"

    class Operation(models.TextChoices):
        UPDATE_FLAG = "update_flag", "Update flag"
        ENABLE_FLAG = "enable_flag", "Enable flag"
        DISABLE_FLAG = "disable_flag", "Disable flag"
        ARCHIVE_FLAG = "archive_flag", "Archive flag"
        CREATE_RULE = "create_rule", "Create rule"
        UPDATE_RULE = "update_rule", "Update rule"
        DELETE_RULE = "delete_rule", "Delete rule"
        LIFT_KILL_SWITCH = "lift_kill_switch", "Lift kill switch"
        BATCH = "batch", "Several changes"

    flag = models.ForeignKey(Flag, on_delete=models.PROTECT, related_name="change_requests")
    operation = models.CharField(max_length=32, choices=Operation.choices)
    payload = models.JSONField(help_text="The operation's arguments, applied as given on approval.")
    before = models.JSONField(help_text="The flag with its rules when the request was made.")
    after = models.JSONField(help_text="The flag with its rules as the request would leave it.")
    base_version = models.PositiveIntegerField(help_text="The flag version the request was made against.")
    rationale = models.TextField(help_text="Why: a hazard-analysis or safety-case reference.")
    content_hash = models.CharField(max_length=64, help_text="SHA-256 over what was submitted.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="change_requests"
    )
    requested_by_api_key_id = models.BigIntegerField(null=True, blank=True)
    requested_by_label = models.CharField(max_length=255)
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="decided_change_requests"
    )
    decided_by_label = models.CharField(max_length=255, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True, help_text="The approver's comment or the rejection reason.")

    class Meta:
        ordering = ("-requested_at",)
        permissions = [("approve_changerequest", "Can approve or reject change requests (SAFETY)")]
        indexes = [models.Index(fields=["status", "-requested_at"], name="cr_status_time")]

    def __str__(self) -> str:
        return f"CR-{self.pk} {self.get_operation_display()} on {self.flag.key}"

    @property
    def is_expired(self) -> bool:
        return self.status == self.Status.PENDING and timezone.now() >= self.expires_at

    @property
    def display_status(self) -> str:
        return "expired" if self.is_expired else self.status

    def compute_content_hash(self) -> str:
        return content_hash(
            flag_id=self.flag_id,
            operation=self.operation,
            payload=self.payload,
            before=self.before,
            after=self.after,
            base_version=self.base_version,
            rationale=self.rationale,
            requested_by_id=self.requested_by_id,
            requested_by_api_key_id=self.requested_by_api_key_id,
        )


def content_hash(**fields: Any) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class KillSwitchEvent(models.Model):
    """One engagement of a kill switch and the proof of its delivery.

    Made in the transaction of the engage (``flags.services.kill_switch_engage``). ``version``
    is the environment's snapshot version (``Revision``) the engage produced: a vehicle that
    acknowledges that version or a later one has applied it. ``targeted_all`` counts the
    environment's registered vehicles and ``targeted_online`` those online at that moment;
    ``sent`` counts the KILL_SWITCH frames server processes wrote to sockets (re-sends on
    catch-up included); acknowledgements are one row per vehicle (``KillSwitchAck``).
    """

    flag = models.ForeignKey(Flag, on_delete=models.PROTECT, related_name="kill_switch_events")
    rule = models.ForeignKey(Rule, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    version = models.PositiveBigIntegerField(help_text="The environment's snapshot version after the engage.")
    reason = models.TextField()
    engaged_at = models.DateTimeField(default=timezone.now)
    engaged_by = models.CharField(max_length=200, help_text="The actor's label, as audited.")
    targeted_all = models.PositiveIntegerField(help_text="Registered vehicles of the environment at the engage.")
    targeted_online = models.PositiveIntegerField(null=True, blank=True,
                                                  help_text="Of those, online at the engage (null: unknown).")
    sent = models.PositiveIntegerField(default=0, help_text="KILL_SWITCH frames written to vehicle sockets.")
    pushed = models.BooleanField(default=False, help_text="The push channel took the frame after commit.")

    class Meta:
        ordering = ("-engaged_at", "-id")
        indexes = [models.Index(fields=["environment", "version"], name="kill_event_env_version")]

    def __str__(self) -> str:
        return f"kill switch of {self.flag_id} at version {self.version}"


class KillSwitchAck(models.Model):
    """A vehicle acknowledged a version at or past the kill switch's (once per vehicle)."""

    event = models.ForeignKey(KillSwitchEvent, on_delete=models.CASCADE, related_name="acks")
    vehicle = models.ForeignKey("vehicles.Vehicle", on_delete=models.CASCADE, related_name="+", db_constraint=True)
    version = models.PositiveBigIntegerField(help_text="The version the vehicle acknowledged.")
    acked_at = models.DateTimeField()

    class Meta:
        ordering = ("acked_at", "vehicle_id")
        constraints = [models.UniqueConstraint(fields=["event", "vehicle"], name="kill_ack_once_per_vehicle")]

    def __str__(self) -> str:
        return f"{self.vehicle_id} acked event {self.event_id}"
