"""The audit admin: read-only for everyone, exports streamed with the filters, chain verification."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.db import transaction
from django.http import StreamingHttpResponse
from django.urls import reverse

from audit import services as audit
from audit.models import AuditEntry
from core.actors import Actor
from tests.factories import VehicleFactory

pytestmark = pytest.mark.django_db

LIST = reverse("admin:audit_auditentry_changelist")


@pytest.fixture
def entries() -> list[AuditEntry]:
    actor = Actor.for_system("test", roles=frozenset({"ADMIN"}))
    actor = Actor(system="test", roles=actor.roles, request_id="req-abc", ip="203.0.113.9")
    made = []
    with transaction.atomic():
        for key, action in [("brake.blend", "CREATE_FLAG"), ("brake.blend", "ENABLE_FLAG"), ("seat.heat", "CREATE_FLAG")]:
            made.append(audit.record(actor=actor, action=action, flag=_Flag(key), object_type="flag", object_id=1,
                                     before={"enabled": False}, after={"enabled": True}))
    return made


class _Flag:
    def __init__(self, key: str) -> None:
        self.key = key
        self.pk = 1


def streamed_text(response: Any) -> str:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode()


def test_list__filters_search_and_date_hierarchy__render(login: Any, entries: list[AuditEntry]) -> None:
    client = login("READ")
    year = entries[0].created_at.year
    for query in ["", "action__exact=ENABLE_FLAG", "actor_type__exact=system", f"created_at__year={year}",
                  "q=brake.blend", "q=req-abc", "flag_key__exact=seat.heat"]:
        assert client.get(f"{LIST}?{query}").status_code == 200, query
    found = client.get(LIST, {"q": "brake"}).context["cl"].result_list
    assert {entry.flag_key for entry in found} == {"brake.blend"}
    by_request = client.get(LIST, {"q": "req-abc"}).context["cl"].result_list
    assert len(by_request) == 3


def test_detail__before_after_pretty_and_hash_checked(login: Any, entries: list[AuditEntry]) -> None:
    html = login("READ").get(reverse("admin:audit_auditentry_change", args=[entries[0].pk])).content.decode()
    assert "{\n  &quot;enabled&quot;: false\n}" in html
    assert "matches the content" in html


def test_superuser__no_add_change_or_delete_and_post_alters_nothing(login: Any, entries: list[AuditEntry]) -> None:
    client = login("ADMIN", is_superuser=True)
    entry = entries[0]
    change_url = reverse("admin:audit_auditentry_change", args=[entry.pk])
    assert client.get(reverse("admin:audit_auditentry_add")).status_code == 403
    assert client.post(change_url, {"actor": "someone else", "action": "DELETE_FLAG"}).status_code == 403
    assert client.post(reverse("admin:audit_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    page = client.get(LIST)
    assert page.context["action_form"] is None or "delete_selected" not in str(page.context["action_form"])
    client.post(LIST, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    stored = AuditEntry.objects.get(pk=entry.pk)
    assert (stored.actor, stored.action, stored.hash) == (entry.actor, entry.action, entry.hash)
    assert AuditEntry.objects.count() == 3
    view = client.get(change_url)
    assert view.status_code == 200 and not view.context["has_change_permission"]


def test_export_csv__filtered_by_flag_and_action__streamed_attachment(login: Any, entries: list[AuditEntry]) -> None:
    response = login("READ").get(reverse("admin:audit_auditentry_export_csv"),
                                 {"flag": "brake.blend", "action": "ENABLE_FLAG", "since": "2000-01-01"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="fleetflag-audit-')
    rows = list(csv.DictReader(io.StringIO(streamed_text(response))))
    assert [(row["seq"], row["action"], row["flag_key"]) for row in rows] == [
        (str(entries[1].seq), "ENABLE_FLAG", "brake.blend")]
    assert json.loads(rows[0]["after"]) == {"enabled": True}


def test_export_jsonl__list_filters_carried__streamed(login: Any, entries: list[AuditEntry]) -> None:
    year = entries[0].created_at.year
    response = login("READ").get(reverse("admin:audit_auditentry_export_jsonl"),
                                 {"action__exact": "CREATE_FLAG", "created_at__year": str(year)})
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].endswith('.jsonl"')
    lines = [json.loads(line) for line in streamed_text(response).splitlines()]
    assert [line["flag_key"] for line in lines] == ["brake.blend", "seat.heat"]
    assert lines[0]["hash"] == entries[0].hash


def test_export__until_excludes_later_days_and_bad_date_is_400(login: Any, entries: list[AuditEntry]) -> None:
    client = login("READ")
    export = reverse("admin:audit_auditentry_export_jsonl")
    assert streamed_text(client.get(export, {"until": "2000-01-01"})) == ""
    assert client.get(export, {"since": "yesterday"}).status_code == 400


def test_export__list_page_offers_both_prefilled(login: Any, entries: list[AuditEntry]) -> None:
    html = login("READ").get(LIST, {"action__exact": "ENABLE_FLAG"}).content.decode()
    assert reverse("admin:audit_auditentry_export_csv") in html
    assert reverse("admin:audit_auditentry_export_jsonl") in html
    assert 'name="action" value="ENABLE_FLAG"' in html


def test_export__not_logged_in__redirected(client: Any, entries: list[AuditEntry]) -> None:
    response = client.get(reverse("admin:audit_auditentry_export_csv"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_verify__intact_chain__reported(login: Any, entries: list[AuditEntry]) -> None:
    response = login("READ").get(reverse("admin:audit_auditentry_verify"))
    assert response.status_code == 200
    assert response.context["report"].ok
    assert "Chain intact." in response.content.decode()


def test_vehicles__listed_read_only_without_credential_hash(login: Any) -> None:
    VehicleFactory(vin="KMHXX00XXXX000001", token_hash="f" * 64)
    client = login("ADMIN", is_superuser=True)
    listing = client.get(reverse("admin:vehicles_vehicle_changelist"), {"q": "KMHXX", "status__exact": "offline"})
    assert listing.status_code == 200 and "KMHXX00XXXX000001" in listing.content.decode()
    change = reverse("admin:vehicles_vehicle_change", args=["KMHXX00XXXX000001"])
    page = client.get(change)
    assert "f" * 64 not in page.content.decode()
    assert client.post(change, {"token_hash": "0" * 64}).status_code == 403
    # Registering is for ADMIN (tests/vehicles/test_admin.py); a READ user cannot reach it
    assert login("READ").get(reverse("admin:vehicles_vehicle_add")).status_code == 403
