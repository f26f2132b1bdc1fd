"""Hostile input at the edge, through the real ASGI stack (the lane, Django, DRF, OFREP):
every write and evaluation path, attacked with bad bytes, sizes, depths, characters,
encodings and content types. Nothing may answer 5xx, every refusal is JSON in the one error
shape (OFREP's own shape on OFREP), and a refused write changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from audit.models import AuditEntry
from flags.models import ChangeRequest, Flag, Rule
from tests.api.conftest import Api
from tests.asgi_client import asgi_request
from tests.factories import FlagFactory, RuleFactory, VehicleFactory

VIN = "KMHHX000000000001"


@pytest.fixture
def world(db: Any, admin_api: Api, make_api: Callable[..., Api]) -> dict[str, Any]:
    VehicleFactory(vin=VIN)
    flag = FlagFactory(key="h.flag")
    rule = RuleFactory(flag=flag, conditions={"vins": [VIN]})
    asil = FlagFactory(key="h.asil", safety_level="ASIL_D", enabled=False)
    from core.actors import Actor
    from flags import services

    pending = services.flag_update(actor=Actor.for_system("tests"), flag=asil, changes={"name": "proposed"},
                                   rationale="HARA-1").change_request
    return {"auth": {"Authorization": f"Bearer {admin_api.raw}"}, "rule": rule.pk, "cr": pending.pk,
            "prefix": admin_api.key.key_prefix}


# (method, path) of every path that takes a body; {rule}, {cr}, {prefix} filled from the world.
WRITE_PATHS = [
    ("POST", "/api/v1/flags/"),
    ("PATCH", "/api/v1/flags/h.flag/"),
    ("PUT", "/api/v1/flags/h.flag/"),
    ("DELETE", "/api/v1/flags/h.flag/"),
    ("POST", "/api/v1/flags/h.flag/rules/"),
    ("PATCH", "/api/v1/flags/h.flag/rules/{rule}/"),
    ("DELETE", "/api/v1/flags/h.flag/rules/{rule}/"),
    ("POST", "/api/v1/flags/h.flag/kill-switch/"),
    ("DELETE", "/api/v1/flags/h.flag/kill-switch/"),
    ("POST", "/api/v1/change-requests/{cr}/approve/"),
    ("POST", "/api/v1/change-requests/{cr}/reject/"),
    ("POST", "/api/v1/change-requests/{cr}/withdraw/"),
    ("POST", "/api/v1/api-keys/{prefix}/expire/"),
]
EVALUATION_PATHS = [
    ("POST", "/api/v1/evaluate/"),
    ("POST", "/api/v1/evaluate/batch/"),
    ("POST", "/ofrep/v1/evaluate/flags/h.flag"),
    ("POST", "/ofrep/v1/evaluate/flags"),
]
ALL_PATHS = WRITE_PATHS + EVALUATION_PATHS

DEEP = b"[" * 5000 + b"]" * 5000
BODIES = {
    "deep-array-5000": DEEP,
    "deep-object-100": b'{"a":' * 100 + b"1" + b"}" * 100,
    "deep-in-field": b'{"name": ' + DEEP + b', "reason": ' + DEEP + b"}",
    "not-json": b"{'key': 'single quotes'}",
    "truncated": b'{"name": "x',
    "invalid-utf8": b'{"name": "\xff\xfe"}',
    "utf16": '{"name": "x"}'.encode("utf-16"),
    "nul-escape": b'{"name": "a\\u0000b", "reason": "a\\u0000b", "comment": "a\\u0000b", "rationale": "a\\u0000b"}',
    "nul-in-key": b'{"context": {"a\\u0000": "x"}, "name\\u0000": "x"}',
    "lone-surrogate": b'{"name": "\\ud800", "reason": "\\udfff", "context": {"targetingKey": "\\ud800"}}',
    "nan": b'{"name": NaN, "default_value": NaN}',
    "infinity": b'{"default_value": 1e999, "context": {"n": -Infinity}}',
    "huge-int": b'{"default_value": ' + b"9" * 5000 + b"}",
    "top-level-array": b"[1, 2, 3]",
    "top-level-string": b'"just a string"',
    "top-level-null": b"null",
    "huge-string": b'{"name": "' + b"x" * 200_000 + b'", "reason": "' + b"x" * 200_000 + b'"}',
    "huge-list": b'{"flag_keys": [' + b",".join(b'"k%d"' % i for i in range(20000)) + b'], "vin": "' + VIN.encode() + b'"}',
    "wrong-types": b'{"name": 5, "enabled": "yes", "vin": 17, "context": [], "flag_keys": "all", "reason": []}',
}


# Valid JSON with nothing hostile in its characters or depth: a path may serve it as a request.
SERVABLE = {"huge-list", "wrong-types", "top-level-null", "deep-object-100", "huge-string", "huge-int", "utf16",
            "top-level-array", "top-level-string"}


def _fill(path: str, world: dict[str, Any]) -> str:
    return path.format(rule=world["rule"], cr=world["cr"], prefix=world["prefix"])


def _state() -> tuple[Any, ...]:
    """Everything a write could change."""
    return (
        list(Flag.objects.order_by("pk").values_list("key", "name", "version", "enabled", "archived_at")),
        list(Rule.objects.order_by("pk").values_list("pk", "enabled", "conditions")),
        list(ChangeRequest.objects.order_by("pk").values_list("pk", "status")),
        AuditEntry.objects.count(),
    )


def _assert_refused_in_shape(path: str, status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert status < 500, body[:300]
    assert 400 <= status < 500, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    data = json.loads(body)
    if path.startswith("/ofrep/") and status == 400:
        assert set(data) >= {"errorCode"}, data
    else:
        assert set(data) == {"error"} and {"code", "message", "request_id"} <= set(data["error"]), data
    return data


@pytest.mark.parametrize("method,path", ALL_PATHS)
@pytest.mark.parametrize("attack", sorted(BODIES))
def test_edge__hostile_body__4xx_json_nothing_changed(world: dict[str, Any], method: str, path: str,
                                                       attack: str) -> None:
    # Given the world as it is
    before = _state()
    # When a hostile body arrives as JSON
    status, headers, body = asgi_request(method, _fill(path, world), {**world["auth"], "Content-Type":
                                         "application/json"}, body=BODIES[attack])
    # Then it is refused in the one shape, and nothing changed
    if attack == "huge-list" and path.endswith("/evaluate/batch/"):
        _assert_refused_in_shape(path, status, headers, body)  # at most 1000 flag keys
    elif status < 400:
        # Only a body that is valid JSON of safe characters, which this path reads as a request it
        # may serve, can succeed; every other attack must be refused.
        assert attack in SERVABLE, (attack, method, path, status, body[:200])
        return
    else:
        _assert_refused_in_shape(path, status, headers, body)
    assert _state() == before


@pytest.mark.parametrize("method,path", ALL_PATHS)
@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=",
                                          "application/x-www-form-urlencoded", "text/plain", "application/xml",
                                          "application/jsonx", "application/json-patch+json", ""])
def test_edge__non_json_content_type__415_json_nothing_changed(world: dict[str, Any], method: str, path: str,
                                                               content_type: str) -> None:
    before = _state()
    headers = {**world["auth"], **({"Content-Type": content_type} if content_type else {})}
    status, answer_headers, body = asgi_request(method, _fill(path, world), headers, body=b"name=x&reason=y")
    data = _assert_refused_in_shape(path, status, answer_headers, body)
    assert (status, data["error"]["code"]) == (415, "unsupported_media_type")
    assert _state() == before


@pytest.mark.parametrize("method,path", ALL_PATHS)
def test_edge__over_the_limit_declared__413_before_reading(world: dict[str, Any], method: str, path: str) -> None:
    before = _state()
    limit = settings.API_MAX_BODY_BYTES
    status, headers, body = asgi_request(method, _fill(path, world), {
        **world["auth"], "Content-Type": "application/json", "Content-Length": str(limit + 1)}, body=b"{}")
    assert (status, _assert_refused_in_shape(path, status, headers, body)["error"]["code"]) == \
        (413, "payload_too_large")
    assert _state() == before


@pytest.mark.parametrize("method,path", ALL_PATHS)
def test_edge__over_the_limit_chunked__413(world: dict[str, Any], method: str, path: str) -> None:
    before = _state()
    limit = settings.API_MAX_BODY_BYTES
    chunks = [b'{"name": "'] + [b"x" * 65536] * (limit // 65536 + 1) + [b'"}']
    status, headers, body = asgi_request(method, _fill(path, world), {
        **world["auth"], "Content-Type": "application/json", "Transfer-Encoding": "chunked"}, chunks=chunks)
    assert (status, _assert_refused_in_shape(path, status, headers, body)["error"]["code"]) == \
        (413, "payload_too_large")
    assert _state() == before


def test_edge__chunked_create__read_as_the_whole_body(world: dict[str, Any]) -> None:
    # Given a valid create sent in pieces with no Content-Length (Transfer-Encoding: chunked)
    status, _, body = asgi_request("POST", "/api/v1/flags/", {
        **world["auth"], "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        chunks=[b'{"key": "h.chun', b'ked", "na', b'me": "Chunked"}'])
    # Then it is created from the whole body
    assert (status, json.loads(body)["key"]) == (201, "h.chunked")


def test_edge__chunked_optional_body__not_read_as_empty(world: dict[str, Any]) -> None:
    # Given an approval whose body (the comment) is optional, sent chunked
    status, _, _ = asgi_request("POST", f"/api/v1/change-requests/{world['cr']}/reject/", {
        **world["auth"], "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        chunks=[b'{"reason": "HARA', b' says no"}'])
    # Then the reason arrived (an empty body would have been refused for a missing reason);
    # an unbound ADMIN key may not decide, so the answer is the two-person rule's, not a 400
    assert status == 403
    assert ChangeRequest.objects.get(pk=world["cr"]).status == "pending"


def test_edge__chunked_evaluate__read_as_the_whole_body(world: dict[str, Any]) -> None:
    status, _, body = asgi_request("POST", "/api/v1/evaluate/", {
        **world["auth"], "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        chunks=[b'{"flag_key": "h.fl', b'ag", "vin": "' + VIN.encode() + b'"}'])
    assert (status, json.loads(body)["reason"]) == (200, "TARGETING_MATCH")


TARGETS = [
    "/api/v1/flags/h%00flag/",
    "/api/v1/flags/h.flag%00/rules/",
    "/api/v1/flags/?search=a%00b",
    "/api/v1/flags/?search=%ff%fe",
    "/api/v1/flags/?environment=%00",
    "/api/v1/audit-logs/?format=jsonl&actor=x%00",
    "/api/v1/audit-logs/?format=csv&flag=%00",
    "/api/v1/audit-logs/?since=%00",
    "/api/v1/change-requests/?flag=%00",
    "/api/v1/vehicles/?search=%00",
    "/api/v1/vehicles/KMH%00/",
    "/api/v1/vehicles/" + VIN + "%00/sync/",
    "/api/v1/api-keys/?search=%00",
    "/ofrep/v1/evaluate/flags/h%00flag",
    "/api/v1/flags/" + "%ff" * 10 + "/",
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_edge__bad_characters_in_path_or_query__400_validation_error(world: dict[str, Any], target: str,
                                                                     method: str) -> None:
    before = _state()
    status, headers, body = asgi_request(method, target, {**world["auth"], "Content-Type": "application/json"},
                                         body=b"{}" if method == "POST" else b"")
    data = _assert_refused_in_shape(target.split("?")[0], status, headers, body)
    code = data["errorCode"] if target.startswith("/ofrep/") else data["error"]["code"]
    assert (status, code) == (400, "INVALID_CONTEXT" if target.startswith("/ofrep/") else "validation_error")
    assert _state() == before


@pytest.mark.parametrize("path,body", [
    ("/api/v1/flags", b'{"key": "h.noslash", "name": "No slash"}'),
    ("/api/v1/flags/h.flag/rules", b'{"type": "vehicle_whitelist", "conditions": {"vins": ["KMHHX000000000002"]}}'),
    ("/api/v1/evaluate", b'{"flag_key": "h.flag", "vin": "' + VIN.encode() + b'"}'),
])
def test_edge__post_without_trailing_slash__served_not_redirected(world: dict[str, Any], path: str,
                                                                  body: bytes) -> None:
    status, headers, _ = asgi_request("POST", path, {**world["auth"], "Content-Type": "application/json"}, body=body)
    assert status in (200, 201), status
    assert "location" not in headers


def test_edge__unknown_path__json_404(world: dict[str, Any]) -> None:
    status, headers, body = asgi_request("POST", "/api/v1/nothing-here", {**world["auth"], "Content-Type":
                                         "application/json"}, body=b"{}")
    assert (status, _assert_refused_in_shape("/api/", status, headers, body)["error"]["code"]) == (404, "not_found")


def test_schema__format_json__json(db: Any) -> None:
    status, headers, body = asgi_request("GET", "/api/schema/?format=json")
    assert status == 200 and "json" in headers["content-type"]
    assert json.loads(body)["openapi"].startswith("3.")


def test_audit_export__failing_part_way__ends_with_an_error_row(world: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an export whose reading fails after the first row
    from audit import services as audit

    def failing(entries: Any) -> Any:
        yield '{"seq": 1}\n'
        raise RuntimeError("the database went away")

    monkeypatch.setattr(audit, "export_jsonl", failing)
    # When it is streamed
    status, _, body = asgi_request("GET", "/api/v1/audit-logs/?format=jsonl", world["auth"])
    # Then the stream ends, its last row saying the export is incomplete
    lines = body.decode().strip().splitlines()
    assert status == 200 and lines[0] == '{"seq": 1}'
    assert json.loads(lines[-1])["error"]["code"] == "server_error"


def test_audit_export__more_rows_than_a_batch__every_row_streamed(world: dict[str, Any]) -> None:
    # Given more audit entries than one read batch of the stream
    from core.actors import Actor
    from flags import services

    system = Actor.for_system("tests")
    for i in range(300):
        services.flag_create(actor=system, key=f"h.many-{i:03d}", name=f"Many {i}")
    expected = AuditEntry.objects.count()
    # When the JSON lines export is streamed through the ASGI stack
    status, _, body = asgi_request("GET", "/api/v1/audit-logs/?format=jsonl", world["auth"])
    # Then every entry arrives, in chain order
    seqs = [json.loads(line)["seq"] for line in body.decode().splitlines()]
    assert status == 200 and len(seqs) == expected and seqs == sorted(seqs)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_edge__escaped_nul_in_a_utf16_or_utf32_body__400(world: dict[str, Any], encoding: str) -> None:
    # Given a body the JSON decoder reads in another Unicode encoding, hiding a NUL escape
    before = _state()
    body = '{"key": "h.wide", "name": "a\\u0000b"}'.encode(encoding)
    status, headers, answer = asgi_request("POST", "/api/v1/flags/", {**world["auth"], "Content-Type":
                                           "application/json"}, body=body)
    # Then it is refused like any other NUL, and nothing is created
    assert (status, _assert_refused_in_shape("/api/", status, headers, answer)["error"]["code"]) == \
        (400, "validation_error")
    assert _state() == before
