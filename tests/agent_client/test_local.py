"""LocalFlags, the vehicle's hot path: cached answers, TTL expiry (STALE), kill switches."""

from __future__ import annotations

from typing import Any

from agent_client import LocalFlags, Resolution, Snapshot

VIN = "KMHK381GFNU000001"
CONTEXT = {"model": "ioniq5", "sw_version": "2.6.0", "region": "eu-west"}
SYNCED_AT = 1_800_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _flag(
    key: str, rules: list[dict[str, Any]], *, default: Any = False, ttl: int | None = 600, **fields: Any
) -> dict[str, Any]:
    return {
        "key": key,
        "type": fields.pop("type", "boolean"),
        "default_value": default,
        "enabled": fields.pop("enabled", True),
        "safety_level": "ASIL_B",
        "environment": "production",
        "version": fields.pop("version", 4),
        "ttl_seconds": ttl,
        "rules": rules,
    }


def _whitelist(rule_id: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "type": "vehicle_whitelist",
        "priority": 10,
        "enabled": True,
        "conditions": {"vins": [VIN]},
        "variant": "enabled",
        **fields,
    }


def _kill(rule_id: int = 9) -> dict[str, Any]:
    return {
        "id": rule_id,
        "type": "kill_switch",
        "priority": 1,
        "enabled": True,
        "conditions": {"force_disabled": True, "reason": "FSR-12 brake assist fault"},
        "variant": "enabled",
    }


def _snapshot(*flags: dict[str, Any], version: int = 1) -> Snapshot:
    return Snapshot.from_dict({"environment": "production", "version": version, "flags": list(flags)})


def _local(snapshot: Snapshot, clock: Clock) -> LocalFlags:
    return LocalFlags(snapshot, vin=VIN, context=CONTEXT, synced_at=SYNCED_AT, clock=clock)


def test_local_flags__within_ttl__served_from_snapshot() -> None:
    # Given a flag with a 600 s TTL, synced now
    clock = Clock(SYNCED_AT)
    local = _local(_snapshot(_flag("adas.lka", [_whitelist()])), clock)
    # When asked just before the TTL runs out
    clock.now = SYNCED_AT + 599.999
    # Then the targeted value is served
    assert local.is_enabled("adas.lka") is True
    assert local.evaluate("adas.lka") == Resolution("adas.lka", True, "enabled", "TARGETING_MATCH", 4)


def test_local_flags__past_ttl__stale_default_value() -> None:
    # Given a flag with a 600 s TTL, synced at SYNCED_AT, whose rule serves true
    clock = Clock(SYNCED_AT)
    local = _local(_snapshot(_flag("adas.lka", [_whitelist()], default=False)), clock)
    # When the TTL has run out
    clock.now = SYNCED_AT + 600
    # Then the flag's default value is served with reason STALE, on every entry point
    assert local.evaluate("adas.lka") == Resolution("adas.lka", False, "default", "STALE", 4)
    assert local.evaluate("adas.lka", context={"trim": "x"}).reason == "STALE"
    assert local.is_enabled("adas.lka", True) is False  # the flag's default, not the caller's
    assert local.get_value("adas.lka") is False


def test_local_flags__past_ttl_string_flag__stale_flag_default() -> None:
    clock = Clock(SYNCED_AT)
    flag = _flag("drive.mode", [_whitelist(value="sport", variant="sport")], type="string", default="eco", ttl=60)
    local = _local(_snapshot(flag), clock)
    assert local.get_value("drive.mode") == "sport"
    clock.now = SYNCED_AT + 61
    assert local.evaluate("drive.mode") == Resolution("drive.mode", "eco", "default", "STALE", 4)


def test_local_flags__one_flag_past_its_ttl__others_still_fresh() -> None:
    # Given two flags with different TTLs
    clock = Clock(SYNCED_AT)
    short = _flag("ota.short", [_whitelist()], ttl=60)
    long = _flag("ota.long", [_whitelist()], ttl=3600)
    local = _local(_snapshot(short, long), clock)
    # When only the shorter TTL has run out
    clock.now = SYNCED_AT + 120
    # Then only that flag is stale
    assert local.evaluate("ota.short").reason == "STALE"
    assert local.is_enabled("ota.short") is False
    assert local.evaluate("ota.long").reason == "TARGETING_MATCH"
    assert local.is_enabled("ota.long") is True


def test_local_flags__load_after_stale__fresh_again() -> None:
    # Given a flag that went stale
    clock = Clock(SYNCED_AT)
    local = _local(_snapshot(_flag("adas.lka", [_whitelist()])), clock)
    clock.now = SYNCED_AT + 700
    assert local.evaluate("adas.lka").reason == "STALE"
    # When a new snapshot is loaded (a sync), without an explicit sync time
    local.load(_snapshot(_flag("adas.lka", [_whitelist()]), version=2))
    # Then the TTL counts from the load and the flag is served again
    assert local.evaluate("adas.lka").reason == "TARGETING_MATCH"
    assert local.is_enabled("adas.lka") is True


def test_local_flags__kill_switch_loaded__overrides_cached_match() -> None:
    # Given a vehicle serving a whitelisted flag as true
    clock = Clock(SYNCED_AT)
    local = _local(_snapshot(_flag("adas.acc", [_whitelist(priority=100)], default=True)), clock)
    assert local.is_enabled("adas.acc") is True
    # When a snapshot with a kill switch (lower priority than the whitelist) is loaded
    killed = _flag("adas.acc", [_whitelist(priority=100), _kill()], default=True, version=5)
    local.load(_snapshot(killed, version=2))
    # Then every entry point serves the killed value, false, even with extra context
    assert local.is_enabled("adas.acc", True) is False
    assert local.evaluate("adas.acc") == Resolution("adas.acc", False, "killed", "KILL_SWITCH", 5)
    assert local.evaluate("adas.acc", context={"trim": "premium"}).reason == "KILL_SWITCH"
    assert local.get_value("adas.acc", True) is False


def test_local_flags__kill_switch_past_ttl__stays_killed() -> None:
    # Given a killed boolean flag whose default is true
    clock = Clock(SYNCED_AT)
    killed = _flag("adas.acc", [_whitelist(), _kill()], default=True, ttl=60)
    local = _local(_snapshot(killed), clock)
    # When the vehicle stays offline past the TTL
    clock.now = SYNCED_AT + 86400
    # Then the kill switch still holds: STALE's default (true) would turn the feature back on
    assert local.is_enabled("adas.acc", True) is False
    assert local.evaluate("adas.acc") == Resolution("adas.acc", False, "killed", "KILL_SWITCH", 4)


def test_local_flags__kill_switch_lifted_by_load__targeting_again() -> None:
    clock = Clock(SYNCED_AT)
    local = _local(_snapshot(_flag("adas.acc", [_whitelist(), _kill()])), clock)
    assert local.is_enabled("adas.acc") is False
    local.load(_snapshot(_flag("adas.acc", [_whitelist()]), version=3))
    assert local.evaluate("adas.acc").reason == "TARGETING_MATCH"
    assert local.is_enabled("adas.acc") is True


def test_local_flags__extra_context__evaluated_in_full() -> None:
    # Given a rule on an attribute the vehicle's base context does not have
    rule = {
        "id": 1,
        "type": "user_attribute",
        "priority": 10,
        "enabled": True,
        "conditions": {"attribute": "driver_profile", "operator": "eq", "value": "valet"},
        "variant": "valet",
        "value": False,
    }
    local = _local(_snapshot(_flag("drive.sport", [rule], default=True)), Clock(SYNCED_AT))
    # Then the cached answer is the default, and a call bringing the attribute matches
    assert local.is_enabled("drive.sport") is True
    assert local.evaluate("drive.sport", context={"driver_profile": "valet"}) == Resolution(
        "drive.sport", False, "valet", "TARGETING_MATCH", 4
    )


def test_local_flags__extra_context__overrides_base_attribute() -> None:
    rule = {
        "id": 1,
        "type": "vehicle_target",
        "priority": 10,
        "enabled": True,
        "conditions": {"regions": ["us-east"]},
        "variant": "enabled",
    }
    local = _local(_snapshot(_flag("ota.us", [rule])), Clock(SYNCED_AT))
    assert local.is_enabled("ota.us") is False
    assert local.evaluate("ota.us", context={"region": "us-east"}).reason == "TARGETING_MATCH"


def test_local_flags__unknown_flag__caller_default() -> None:
    local = _local(_snapshot(), Clock(SYNCED_AT))
    assert local.is_enabled("nope", True) is True
    assert local.is_enabled("nope") is False
    assert local.evaluate("nope", default="x") == Resolution("nope", "x", None, "ERROR", None, "FLAG_NOT_FOUND")


def test_local_flags__non_boolean_flag__is_enabled_caller_default() -> None:
    flag = _flag("drive.mode", [_whitelist(value="sport", variant="sport")], type="string", default="eco")
    local = _local(_snapshot(flag), Clock(SYNCED_AT))
    assert local.is_enabled("drive.mode", True) is True
    assert local.is_enabled("drive.mode", False) is False
    assert local.get_value("drive.mode") == "sport"


def test_local_flags__no_ttl_in_snapshot__never_stale() -> None:
    clock = Clock(SYNCED_AT)
    local = _local(_snapshot(_flag("adas.lka", [_whitelist()], ttl=None)), clock)
    clock.now = SYNCED_AT + 10 * 365 * 86400
    assert local.evaluate("adas.lka").reason == "TARGETING_MATCH"
    assert local.is_enabled("adas.lka") is True
