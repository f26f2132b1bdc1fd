"""Demo data, idempotent: one user per role, flags of every type and rule type, vehicles."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from accounts.services import user_create_or_update
from core.actors import Actor
from flags import services
from flags.models import ChangeRequest, Flag
from vehicles.models import Vehicle
from vehicles.services import vehicle_upsert

USERS = [("admin", "ADMIN"), ("writer", "WRITE"), ("reader", "READ"), ("safety", "SAFETY"), ("safety2", "SAFETY")]
PASSWORD_SUFFIX = "-demo-pass"

VEHICLES = [
    ("KMHXX00XXXX000001", "ioniq5", "2.6.1", "eu-west"),
    ("KMHXX00XXXX000002", "ioniq5", "2.4.0", "eu-central"),
    ("KMHXX00XXXX000003", "ev6", "3.0.0", "us-east"),
    ("KMHXX00XXXX000004", "ev6", "2.9.9", "eu-west"),
    ("KMHXX00XXXX000005", "gv60", "3.1.0-rc.1", "ap-northeast"),
    ("KMHXX00XXXX000006", "ioniq6", "2.5.0", "eu-west"),
    ("KMHXX00XXXX000007", "ioniq6", "1.9.3", "us-west"),
    ("KMHXX00XXXX000008", "gv60", "2.7.2", "eu-central"),
]

FLAGS: list[dict[str, Any]] = [
    {
        "key": "infotainment.dark-mode", "name": "Infotainment dark mode", "type": "boolean", "default_value": False,
        "enabled": True, "safety_level": "NON_CRITICAL",
        "description": "Dark theme on the centre display, rolled out to half the fleet.",
        "rules": [{"type": "percentage_rollout", "priority": 10, "conditions": {"rollout_percentage": 50}}],
    },
    {
        "key": "navigation.route-engine", "name": "Navigation route engine", "type": "string",
        "default_value": "classic", "enabled": True, "safety_level": "NON_CRITICAL",
        "description": "A/B test of the new routing engine.",
        "rules": [{"type": "percentage_rollout", "priority": 10, "conditions": {
            "rollout_percentage": 100, "variants": [
                {"key": "control", "weight": 50, "value": "classic"},
                {"key": "treatment", "weight": 50, "value": "graph-v2"}]}}],
    },
    {
        "key": "battery.preconditioning-minutes", "name": "Battery preconditioning (minutes)", "type": "number",
        "default_value": 20, "enabled": True, "safety_level": "SAFETY_RELEVANT",
        "description": "How long before departure the battery is warmed.",
        "rules": [
            {"type": "user_attribute", "priority": 20, "value": 35,
             "conditions": {"attribute": "climate", "operator": "in", "values": ["arctic", "cold"]}},
            {"type": "vehicle_target", "priority": 10, "value": 25,
             "conditions": {"models": ["ioniq5", "ioniq6"], "regions": ["eu-central"]}},
        ],
    },
    {
        "key": "adas.lane-keep-tuning", "name": "Lane keeping tuning", "type": "json",
        "default_value": {"gain": 1.0, "max_torque_nm": 2.5}, "enabled": True, "safety_level": "ASIL_B",
        "description": "Controller parameters for lane keeping assist on the 3.x software line.",
        "rules": [
            {"type": "vehicle_whitelist", "priority": 30, "value": {"gain": 1.2, "max_torque_nm": 2.8},
             "variant": "test-fleet", "conditions": {"vins": ["KMHXX00XXXX000001", "KMHXX00XXXX000003"]}},
            {"type": "vehicle_target", "priority": 20, "value": {"gain": 1.1, "max_torque_nm": 2.6},
             "conditions": {"sw_version": ">= 3.0.0, < 4"}},
        ],
    },
    {
        "key": "brake.regen-blending-v2", "name": "Regenerative brake blending v2", "type": "boolean",
        "default_value": False, "enabled": False, "safety_level": "ASIL_D",
        "description": "New blending of regenerative and friction braking. ASIL-D: changes need SAFETY approval.",
        "rules": [
            {"type": "vehicle_target", "priority": 10,
             "conditions": {"models": ["ev6"], "sw_version": ">= 2.9.0", "regions": ["us-east", "eu-west"]}},
        ],
    },
    {
        "key": "climate.heat-pump-boost", "name": "Heat pump boost mode", "type": "boolean",
        "default_value": False, "enabled": True, "safety_level": "SAFETY_RELEVANT",
        "description": "Extra compressor power in cold weather. Killed after field reports.",
        "rules": [{"type": "vehicle_target", "priority": 10, "conditions": {"regions": ["eu-central", "us-west"]}}],
        "kill_switch": "Compressor over-temperature reports from the field (ticket FLD-2211)",
    },
    {
        "key": "ota.download-window", "name": "OTA download window", "type": "string", "default_value": "night",
        "enabled": True, "safety_level": "NON_CRITICAL", "environment": "staging",
        "rules": [{"type": "user_attribute", "priority": 10, "value": "any",
                   "conditions": {"attribute": "sw_version", "operator": "semver_gte", "value": "2.6.0"}}],
    },
]


class Command(BaseCommand):
    help = "Load demo data (idempotent) and print the demo logins."

    def handle(self, *args: Any, **options: Any) -> None:
        users = {}
        for name, role in USERS:
            users[name], _ = user_create_or_update(username=name, role=role, password=name + PASSWORD_SUFFIX)
        writer = Actor.for_user(users["writer"])
        safety = Actor.for_user(users["safety"])
        for vin, model, sw, region in VEHICLES:
            if not Vehicle.objects.filter(vin=vin).exists():
                vehicle_upsert(vin=vin, model=model, sw_version=sw, region=region)
        for spec in FLAGS:
            if Flag.objects.filter(key=spec["key"]).exists():
                continue
            spec = dict(spec)
            rules = spec.pop("rules")
            enabled = spec.pop("enabled")
            kill_reason = spec.pop("kill_switch", None)
            asil_d = spec["safety_level"] == "ASIL_D"
            flag = services.flag_create(actor=writer, enabled=enabled and not asil_d, **spec)
            for rule in rules:
                outcome = services.rule_create(actor=writer, flag=flag, rationale="Demo: HARA-2026-017", **rule)
                if outcome.change_request is not None:
                    services.change_request_approve(actor=safety, change_request=outcome.change_request,
                                                    comment="Reviewed against SC-BRK-004")
            if kill_reason:
                services.kill_switch_engage(actor=safety, flag=flag.key, reason=kill_reason)
            if asil_d:
                # Left pending on purpose: the approval queue has something to show.
                services.flag_set_enabled(actor=writer, flag=flag.key, enabled=True,
                                          rationale="Field validation passed, see SC-BRK-004 rev 3")
        pending = ChangeRequest.objects.filter(status=ChangeRequest.Status.PENDING).count()
        self.stdout.write(f"Demo data ready: {Flag.objects.count()} flags, {Vehicle.objects.count()} vehicles, "
                          f"{pending} change request(s) waiting for SAFETY approval.")
        self.stdout.write("Logins (user / password / role):")
        for name, role in USERS:
            self.stdout.write(f"  {name:<8} {name + PASSWORD_SUFFIX:<22} {role}")
