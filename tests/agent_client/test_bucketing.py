"""Sticky bucketing by VIN: the SPEC hash, known answers, and exact percentages."""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agent_client.bucketing import ROLLOUT_SALT, VARIANT_SALT, bucket, percent_to_buckets
from agent_client.rules import in_rollout

CASES_DIR = Path(__file__).resolve().parents[1] / "cases"
KNOWN = json.loads((CASES_DIR / "buckets.json").read_text())["buckets"]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_bucket_cases", CASES_DIR / "generate_bucket_cases.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("known", KNOWN, ids=lambda k: f"{k['flag_key']}.{k['salt']}.{k['vin']}")
def test_bucket__known_answer__same_bucket(known: dict[str, Any]) -> None:
    # Given a (flag key, salt, VIN) whose bucket was computed with hashlib from the SPEC
    # When agent_client buckets it / Then it lands in the same bucket
    assert bucket(known["flag_key"], known["salt"], known["vin"]) == known["bucket"]
    assert int(known["sha256_first8_hex"], 16) % 10_000 == known["bucket"]


def test_bucket__salts__are_the_spec_names() -> None:
    assert (ROLLOUT_SALT, VARIANT_SALT) == ("rollout", "variant")


def test_generate_bucket_cases__rerun__matches_committed_json() -> None:
    # Given the generator that derived the bucket cases from the SPEC formula
    generator = _generator()
    # When it is run again
    cases, buckets = generator.build()
    # Then it reproduces the committed files byte for byte (nobody edited one without the other)
    assert generator.dump(cases) == (CASES_DIR / "evaluation_buckets.json").read_text()
    assert generator.dump(buckets) == (CASES_DIR / "buckets.json").read_text()


def test_percent_to_buckets__every_two_decimal_percentage__exact() -> None:
    # Given every percentage with at most two decimals, as the float JSON turns it into
    for hundredths in range(10_001):
        percent = float(Decimal(hundredths) / 100)
        # Then it covers exactly that many of the 10,000 buckets (no float drift:
        # 0.07 * 100 is 7.000000000000001, which a plain `bucket < p * 100` would get wrong)
        assert percent_to_buckets(percent) == hundredths, percent


def test_in_rollout__threshold__bucket_below_is_in_bucket_at_is_out() -> None:
    # Given a VIN and its rollout bucket for a flag
    vin = "KMHK381GFNU000001"
    point = bucket("hvac.eco", ROLLOUT_SALT, vin)
    # Then a threshold just above the bucket includes it, one equal to it does not
    assert in_rollout("hvac.eco", vin, point + 1) is True
    assert in_rollout("hvac.eco", vin, point) is False
