"""The real OpenFeature SDK with the real OFREP provider against a running daphne."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api as openfeature
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from tests.api.live import LiveServer, live_server

pytestmark = pytest.mark.live

VIN = "KMHXX00XXXX000001"
OTHER_VIN = "KMHXX00XXXX000002"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(Path(tmp_path_factory.mktemp("ofrep")), port=8025) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[OpenFeatureClient]:
    provider = OFREPProvider(server.base_url, headers_factory=lambda: {"Authorization": f"Bearer {server.admin_key}"})
    openfeature.set_provider(provider, domain="fleetflag-live")
    yield openfeature.get_client("fleetflag-live")
    openfeature.clear_providers()


def test_ofrep_sdk__boolean__whitelisted_vin_targeting_match(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details("ui.dark-mode", False, EvaluationContext(VIN))
    assert (details.value, details.reason, details.variant, details.error_code) == \
        (True, Reason.TARGETING_MATCH, "fleet", None)
    other = client.get_boolean_details("ui.dark-mode", True, EvaluationContext(OTHER_VIN))
    assert (other.value, other.reason, other.variant) == (False, Reason.DEFAULT, "default")


def test_ofrep_sdk__string__registry_fills_context(client: OpenFeatureClient) -> None:
    details = client.get_string_details("nav.engine", "fallback", EvaluationContext(VIN))
    assert (details.value, details.reason, details.variant) == ("graph-v2", Reason.TARGETING_MATCH, "new")
    assert details.flag_metadata["flagVersion"] == 2


def test_ofrep_sdk__number__attribute_rule(client: OpenFeatureClient) -> None:
    cold = client.get_integer_details("battery.minutes", 0, EvaluationContext(OTHER_VIN, {"climate": "arctic"}))
    mild = client.get_integer_details("battery.minutes", 0, EvaluationContext(OTHER_VIN, {"climate": "mild"}))
    assert (cold.value, cold.reason, cold.variant) == (35, Reason.TARGETING_MATCH, "cold")
    assert (mild.value, mild.reason) == (20, Reason.DEFAULT)


def test_ofrep_sdk__object__disabled_flag_serves_default(client: OpenFeatureClient) -> None:
    details = client.get_object_details("adas.tuning", {}, EvaluationContext(VIN))
    assert (details.value, details.reason, details.variant) == ({"gain": 1.0}, Reason.DISABLED, "disabled")


def test_ofrep_sdk__killed_flag__disabled_with_kill_switch_metadata(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details("brake.v2", True, EvaluationContext(VIN))
    assert (details.value, details.reason, details.variant) == (False, Reason.DISABLED, "killed")
    assert details.flag_metadata["fleetflagReason"] == "KILL_SWITCH"


def test_ofrep_sdk__unknown_flag__flag_not_found_default(client: OpenFeatureClient) -> None:
    details = client.get_string_details("no.such-flag", "fallback", EvaluationContext(VIN))
    assert (details.value, details.reason, details.error_code) == ("fallback", Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)


def test_ofrep_sdk__no_targeting_key__targeting_key_missing(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details("ui.dark-mode", False, EvaluationContext(None, {"region": "x"}))
    assert (details.value, details.error_code) == (False, ErrorCode.TARGETING_KEY_MISSING)


def test_ofrep_sdk__bad_key__general_error_default(server: LiveServer) -> None:
    provider = OFREPProvider(server.base_url, headers_factory=lambda: {"Authorization": "Bearer ffk_nope"})
    openfeature.set_provider(provider, domain="bad-key")
    try:
        details = openfeature.get_client("bad-key").get_boolean_details("ui.dark-mode", False, EvaluationContext(VIN))
    finally:
        openfeature.clear_providers()
    assert (details.value, details.error_code, details.error_message) == (False, ErrorCode.GENERAL, "unauthorized")
