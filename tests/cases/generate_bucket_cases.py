"""Derive the bucket-dependent evaluation cases from the SPEC formula alone (stdlib only).

SPEC §2 "Bucketing"::

    h = sha256(f"{flag_key}.{salt}.{vin}".encode()).digest()
    bucket = int.from_bytes(h[:8], "big") % 10000
    rollout of p percent includes the VIN when bucket < p * 100     (salt "rollout")
    variants: salt "variant", walk in listed order cumulating weight * 100

This file re-implements that formula on purpose instead of importing ``agent_client``:
the expected values must come from the SPEC, not from the code under test. ``p * 100``
is computed exactly (``Decimal``): percentages have at most two decimals, so p percent is
exactly ``p * 100`` buckets, and binary floats would get some wrong (``0.07 * 100`` is
``7.000000000000001`` in floating point, which would let bucket 7 into a 0.07 % rollout).

For every rollout and variant split it searches a fixed, ordered list of candidate VINs
for the first one whose bucket sits exactly at a boundary (threshold - 1 and threshold)
and writes the expected outcome as literal JSON, so the committed cases never depend on
this script at test time. A test re-runs ``build()`` and compares it with the committed
files, so the JSON and this derivation cannot drift apart.

Run: ``.venv/bin/python tests/cases/generate_bucket_cases.py`` (rewrites
``evaluation_buckets.json`` and ``buckets.json`` next to this file).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CASES_FILE = HERE / "evaluation_buckets.json"
BUCKETS_FILE = HERE / "buckets.json"

BUCKETS = 10_000
CANDIDATES = 400_000  # P(no candidate lands on a given bucket) = (1 - 1e-4) ** 4e5 ~ 4e-18


def spec_bucket(flag_key: str, salt: str, vin: str) -> int:
    digest = hashlib.sha256(f"{flag_key}.{salt}.{vin}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def buckets_of(percent: float) -> Decimal:
    """``p * 100`` computed exactly (the decimal written in the JSON, not its binary float)."""
    return Decimal(str(percent)) * 100


def candidate_vins() -> Iterator[str]:
    """Valid VINs (17 characters, no I, O or Q) in a fixed order."""
    for n in range(CANDIDATES):
        yield f"KMHBK{n:012d}"


def find_vin(flag_key: str, want: Callable[[int, int], bool]) -> str:
    """The first candidate VIN whose (rollout bucket, variant bucket) satisfies ``want``."""
    for vin in candidate_vins():
        if want(spec_bucket(flag_key, "rollout", vin), spec_bucket(flag_key, "variant", vin)):
            return vin
    raise LookupError(f"no candidate VIN fits for {flag_key}")


def rollout_bucket_is(pin: int) -> Callable[[int, int], bool]:
    return lambda rollout, _variant: rollout == pin


def variant_bucket_is(pin: int) -> Callable[[int, int], bool]:
    return lambda _rollout, variant: variant == pin


def expected(flag: dict[str, Any], vin: str) -> dict[str, Any]:
    """The SPEC's outcome for a flag whose only rule is a percentage rollout."""
    rule = flag["rules"][0]
    conditions = rule["conditions"]
    if not spec_bucket(flag["key"], "rollout", vin) < buckets_of(conditions["rollout_percentage"]):
        return {"value": flag["default_value"], "variant": "default", "reason": "DEFAULT"}
    rule_value = rule.get("value", True if flag["type"] == "boolean" else flag["default_value"])
    variants = conditions.get("variants")
    if not variants:
        return {"value": rule_value, "variant": rule["variant"], "reason": "SPLIT"}
    point = spec_bucket(flag["key"], "variant", vin)
    upper = Decimal(0)
    for variant in variants:
        upper += buckets_of(variant["weight"])
        if point < upper:
            value = variant["value"] if variant.get("value") is not None else rule_value
            return {"value": value, "variant": variant["key"], "reason": "SPLIT"}
    raise AssertionError("variant weights must sum to 100")


def rollout_flag(
    key: str, percent: float, *, variants: list[dict[str, Any]] | None = None, flag_type: str = "boolean"
) -> dict[str, Any]:
    conditions: dict[str, Any] = {"rollout_percentage": percent, "sticky": True}
    if variants is not None:
        conditions["variants"] = variants
    default: Any = False if flag_type == "boolean" else "blue"
    return {
        "key": key,
        "type": flag_type,
        "default_value": default,
        "enabled": True,
        "safety_level": "NON_CRITICAL",
        "environment": "production",
        "version": 7,
        "ttl_seconds": 604800,
        "rules": [
            {
                "id": 1,
                "type": "percentage_rollout",
                "priority": 10,
                "enabled": True,
                "conditions": conditions,
                "variant": "enabled",
            }
        ],
    }


def _case(name: str, note: str, flag: dict[str, Any], vin: str) -> dict[str, Any]:
    rollout = spec_bucket(flag["key"], "rollout", vin)
    variant = spec_bucket(flag["key"], "variant", vin)
    return {
        "name": name,
        "note": f"{note} (rollout bucket {rollout}, variant bucket {variant})",
        "flag": flag,
        "vin": vin,
        "context": {},
        "expect": expected(flag, vin),
    }


# (percentage, [rollout buckets to pin]): just inside and just outside each threshold.
ROLLOUTS: list[tuple[float, list[int]]] = [
    (50, [4999, 5000]),
    (12.5, [1249, 1250]),
    (33.33, [3332, 3333]),
    (1, [99, 100]),
    (0.07, [6, 7]),  # 0.07 * 100 is 7.000000000000001 in binary floating point
    (0.29, [28, 29]),  # 0.29 * 100 is 28.999999999999996: truncating it would lose bucket 28
    (0.01, [0, 1]),
    (99.99, [9998, 9999]),
    (100, [0, 9999]),
    (0, [0, 9999]),
]

# (name, variants, [variant buckets to pin]) for a 100 % rollout of a string flag.
SPLITS: list[tuple[str, list[dict[str, Any]], list[int]]] = [
    (
        "halves",
        [{"key": "control", "weight": 50, "value": "blue"}, {"key": "treatment", "weight": 50, "value": "green"}],
        [0, 4999, 5000, 9999],
    ),
    (
        "thirds",
        [
            {"key": "a", "weight": 33.33, "value": "red"},
            {"key": "b", "weight": 33.33, "value": "green"},
            {"key": "c", "weight": 33.34, "value": "blue"},
        ],
        [3332, 3333, 6665, 6666, 9999],
    ),
    (
        "zero_weight_first",
        [{"key": "never", "weight": 0, "value": "red"}, {"key": "always", "weight": 100, "value": "green"}],
        [0],
    ),
    (
        "zero_weight_middle",
        [
            {"key": "first", "weight": 10, "value": "red"},
            {"key": "skipped", "weight": 0, "value": "amber"},
            {"key": "rest", "weight": 90},
        ],
        [999, 1000],
    ),
]


def _slug(percent: float) -> str:
    return f"{percent:g}".replace(".", "_")


def build_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for percent, pins in ROLLOUTS:
        key = f"bucket.rollout-{_slug(percent)}"
        flag = rollout_flag(key, percent)
        for pin in pins:
            vin = find_vin(key, rollout_bucket_is(pin))
            inside = pin < buckets_of(percent)
            outcome = "split" if inside else "default"
            cases.append(
                _case(
                    f"bucket__rollout_{_slug(percent)}__bucket_{pin}__{outcome}",
                    f"{percent} % includes the buckets below {int(buckets_of(percent))}",
                    flag,
                    vin,
                )
            )
    for name, variants, pins in SPLITS:
        key = f"bucket.split-{name.replace('_', '-')}"
        flag = rollout_flag(key, 100, variants=variants, flag_type="string")
        for pin in pins:
            vin = find_vin(key, variant_bucket_is(pin))
            case = _case(
                f"bucket__split_{name}__variant_bucket_{pin}", f"weights {[v['weight'] for v in variants]}", flag, vin
            )
            case["name"] += f"__{case['expect']['variant']}"
            cases.append(case)
    # A rollout with variants: the rollout bucket decides first, then the variant bucket.
    key = "bucket.rollout-50-split"
    variants = [{"key": "control", "weight": 50, "value": "blue"}, {"key": "treatment", "weight": 50, "value": "green"}]
    flag = rollout_flag(key, 50, variants=variants, flag_type="string")
    pinned: list[tuple[str, Callable[[int, int], bool]]] = [
        ("inside_at_4999", lambda rollout, _variant: rollout == 4999),
        ("inside__variant_bucket_4999", lambda rollout, variant: rollout < 5000 and variant == 4999),
        ("inside__variant_bucket_5000", lambda rollout, variant: rollout < 5000 and variant == 5000),
        ("outside_at_5000", lambda rollout, _variant: rollout == 5000),
    ]
    for label, want in pinned:
        case = _case(
            f"bucket__rollout_50_with_variants__{label}",
            "the rollout bucket must be < 5000 before a variant is picked",
            flag,
            find_vin(key, want),
        )
        case["name"] += f"__{case['expect']['variant']}"
        cases.append(case)
    return cases


# Known answers for the hash itself: (flag key, salt, VIN).
KNOWN: list[tuple[str, str, str]] = [
    ("hvac.eco", "rollout", "KMHK381GFNU000001"),
    ("hvac.eco", "variant", "KMHK381GFNU000001"),
    ("hvac.eco", "rollout", "KMHK381GFNU000002"),
    ("ota.v2-5", "rollout", "5YJ3E1EA7KF000003"),
    ("adas.lka", "variant", "WVWZZZ1JZXW000004"),
    ("fleet-rollout", "rollout", "1FTFW1E50NF000001"),
    ("fleet-rollout", "variant", "1FTFW1E50NF000001"),
    ("bucket.rollout-50", "rollout", "KMHBK000000000000"),
]


def build_buckets() -> list[dict[str, Any]]:
    known = []
    for flag_key, salt, vin in KNOWN:
        digest = hashlib.sha256(f"{flag_key}.{salt}.{vin}".encode()).digest()
        known.append(
            {
                "flag_key": flag_key,
                "salt": salt,
                "vin": vin,
                "sha256_first8_hex": digest[:8].hex(),
                "bucket": int.from_bytes(digest[:8], "big") % BUCKETS,
            }
        )
    return known


def build() -> tuple[dict[str, Any], dict[str, Any]]:
    cases = {
        "description": "Bucket-dependent evaluation cases, derived from the SPEC formula by "
        "generate_bucket_cases.py (VINs picked at rollout and variant boundaries). Same case format as "
        "evaluation.json.",
        "cases": build_cases(),
    }
    buckets = {
        "description": "Known answers: bucket = int.from_bytes(sha256(f'{flag_key}.{salt}.{vin}')[:8], 'big') % 10000, "
        "computed with hashlib by generate_bucket_cases.py.",
        "buckets": build_buckets(),
    }
    return cases, buckets


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    cases, buckets = build()
    CASES_FILE.write_text(dump(cases))
    BUCKETS_FILE.write_text(dump(buckets))
    print(f"{len(cases['cases'])} cases -> {CASES_FILE.name}, {len(buckets['buckets'])} buckets -> {BUCKETS_FILE.name}")


if __name__ == "__main__":
    main()
