"""The canonical form, signing and verification (agent_client.signing, core.signing)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from agent_client import signing as agent
from core import signing
from tests.signing.conftest import spec_verify

KILL_SWITCH = {"type": "KILL_SWITCH", "flag_key": "adas.lane_keep", "reason": "field report 4411",
               "version": 42, "sent_at": "2026-12-03T10:00:00+00:00"}
FLAG_UPDATE = {"type": "FLAG_UPDATE", "flag_key": "hmi.theme", "version": 43,
               "flag": {"key": "hmi.theme", "type": "string", "default_value": "classic", "enabled": True,
                        "rules": [{"id": 7, "type": "percentage_rollout", "priority": 10, "enabled": True,
                                   "conditions": {"rollout_percentage": 12.5}, "value": "night"}]}}


def _pinned() -> dict[str, bytes]:
    return {key["kid"]: agent.public_key_bytes(key["public_key"]) for key in signing.public_keys()}


def test_sign__frame__new_dict_with_active_kid_and_verifying_sig() -> None:
    # Given a frame; When it is signed
    signed = signing.sign(KILL_SWITCH)
    # Then a new dict with kid and sig, the input untouched, and both verifiers accept it
    assert "sig" not in KILL_SWITCH and "kid" not in KILL_SWITCH
    assert {k: v for k, v in signed.items() if k not in ("kid", "sig")} == KILL_SWITCH
    assert signed["kid"] == signing.keyring().active.kid
    assert len(base64.urlsafe_b64decode(signed["sig"])) == 64
    assert agent.verify(signed, _pinned()) is True
    assert spec_verify(signed, signing.public_keys()) is True


def test_sign__already_signed__sig_replaced_not_signed_over() -> None:
    signed = signing.sign({**FLAG_UPDATE, "sig": "stale"})
    assert signed["sig"] != "stale"
    assert agent.verify(signed, _pinned()) is True


def test_canonical__key_order__same_bytes_and_reordered_payload_verifies() -> None:
    # Given a signed frame and the same frame with its keys (and nested keys) in reverse order
    signed = signing.sign(FLAG_UPDATE)
    reordered: dict[str, Any] = {k: signed[k] for k in reversed(list(signed))}
    reordered["flag"] = {k: signed["flag"][k] for k in reversed(list(signed["flag"]))}
    # Then the canonical form is the same, and it still verifies
    assert list(reordered) != list(signed)
    assert agent.canonical(reordered) == agent.canonical(signed)
    assert agent.verify(reordered, _pinned()) is True
    assert spec_verify(reordered, signing.public_keys()) is True


def test_canonical__recipe__sorted_compact_utf8_without_sig() -> None:
    assert agent.canonical({"b": 1, "a": [1, {"d": None, "c": "é"}], "sig": "x"}) == (
        '{"a":[1,{"c":"é","d":null}],"b":1}'.encode()
    )


def test_sign__non_ascii_values__utf8_not_escaped_and_verifies() -> None:
    # Given a frame whose values are not ASCII
    frame = {**KILL_SWITCH, "reason": "Spurhalteassistent: Fehlauslösung — 車線 ✓"}
    signed = signing.sign(frame)
    # Then the canonical form carries UTF-8 (ensure_ascii=False), and the signature is over it
    assert "Fehlauslösung — 車線 ✓".encode() in agent.canonical(signed)
    assert agent.verify(signed, _pinned()) is True
    assert spec_verify(json.loads(json.dumps(signed)), signing.public_keys()) is True  # escaped on the wire: same
    # and a verifier that canonicalised with ASCII escapes would not match it
    escaped = json.dumps({k: v for k, v in signed.items() if k != "sig"}, sort_keys=True, separators=(",", ":"))
    assert escaped.encode() != agent.canonical(signed)


@pytest.mark.parametrize(("field", "value"), [
    ("type", "FLAG_UPDATE"), ("flag_key", "adas.lane_keep2"), ("reason", "field report 4412"),
    ("version", 41), ("version", 42.0000001), ("sent_at", "2026-12-03T10:00:01+00:00"), ("extra", True),
])
def test_verify__any_field_tampered_or_added__refused(field: str, value: Any) -> None:
    signed = signing.sign(KILL_SWITCH)
    tampered = {**signed, field: value}
    assert agent.verify(tampered, _pinned()) is False
    assert spec_verify(tampered, signing.public_keys()) is False
    with pytest.raises(agent.SignatureError) as caught:
        agent.check(tampered, _pinned())
    assert caught.value.reason == "bad_signature"


def test_verify__nested_value_tampered__refused() -> None:
    signed = signing.sign(FLAG_UPDATE)
    tampered = json.loads(json.dumps(signed))
    tampered["flag"]["rules"][0]["conditions"]["rollout_percentage"] = 100
    assert agent.verify(tampered, _pinned()) is False


def test_verify__field_removed__refused() -> None:
    signed = signing.sign(KILL_SWITCH)
    assert agent.verify({k: v for k, v in signed.items() if k != "reason"}, _pinned()) is False


@pytest.mark.parametrize(("change", "reason"), [
    ({"sig": None}, "unsigned"), ({"kid": None}, "unsigned"),
    ({"kid": "0123456789abcdef"}, "unknown_kid"),
    ({"sig": "not base64!"}, "malformed"), ({"sig": "AAAA"}, "malformed"), ({"sig": 7}, "malformed"),
    ({"kid": ["list"]}, "malformed"),
])
def test_check__unsigned_unknown_kid_or_bad_base64__reason_and_verify_false(change: dict[str, Any],
                                                                            reason: str) -> None:
    # Given a signed frame with its kid or sig removed or damaged
    signed = signing.sign(KILL_SWITCH)
    damaged = {k: v for k, v in {**signed, **change}.items() if v is not None}
    # Then verify says False (never raises) and check names why
    assert agent.verify(damaged, _pinned()) is False
    with pytest.raises(agent.SignatureError) as caught:
        agent.check(damaged, _pinned())
    assert caught.value.reason == reason


def test_verify__signature_by_another_key_under_the_same_kid__refused() -> None:
    # Given a frame whose kid is pinned, but with a signature over the same bytes by another key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signed = signing.sign(KILL_SWITCH)
    forged = {**signed, "sig": agent.b64encode(Ed25519PrivateKey.generate().sign(agent.canonical(signed)))}
    assert agent.verify(forged, _pinned()) is False


@pytest.mark.parametrize("payload", [[], "text", None, 7, {"kid": "k", "sig": agent.b64encode(bytes(64)), "x": {1, 2}}])
def test_verify__not_a_json_object_or_not_serialisable__false_never_raises(payload: Any) -> None:
    assert agent.verify(payload, {"k": b"\x00" * 32}) is False


def test_verify__pinned_key_not_32_bytes__false() -> None:
    signed = signing.sign(KILL_SWITCH)
    assert agent.verify(signed, {signed["kid"]: b"short"}) is False


def test_sig__padded_or_unpadded_base64url__both_verify() -> None:
    signed = signing.sign(KILL_SWITCH)
    assert signed["sig"].endswith("==")  # 64 bytes: the server writes base64url with its padding
    assert agent.verify({**signed, "sig": signed["sig"].rstrip("=")}, _pinned()) is True


def test_sign_bytes__one_serialisation__parses_to_a_verifying_frame() -> None:
    raw = signing.sign_bytes({**KILL_SWITCH, "reason": "Überhitzung"})
    assert "Überhitzung".encode() in raw
    frame = json.loads(raw)
    assert agent.verify(frame, _pinned()) is True
    assert spec_verify(frame, signing.public_keys()) is True


def test_pinned__bare_public_keys__kid_derived_as_the_server_publishes_it() -> None:
    # Given the public keys alone, as FleetFlagClient(public_keys=[...]) receives them
    published = signing.public_keys()
    pinned = agent.pinned(key["public_key"] for key in published)
    # Then their ids are the ones the server signs with, and a signed frame verifies
    assert list(pinned) == [key["kid"] for key in published]
    assert agent.verify(signing.sign(KILL_SWITCH), pinned) is True


def test_pinned__standard_base64_alphabet__accepted() -> None:
    raw = signing.keyring().active.public_key
    assert agent.pinned([base64.b64encode(raw).decode()]) == {agent.key_id(raw): raw}


@pytest.mark.parametrize("text", ["", "AAAA", "not base64!", "é" * 44])
def test_pinned__not_a_public_key__value_error(text: str) -> None:
    with pytest.raises(ValueError):
        agent.pinned([text])
