"""End to end in Chromium: an ASIL-D change waits for a second person, then applies."""

from __future__ import annotations

import re
from typing import Any

import pytest

from flags.models import ChangeRequest, Flag
from tests.factories import FlagFactory, RuleFactory, UserFactory, VehicleFactory

pytestmark = pytest.mark.browser

PASSWORD = "test-password"  # tests.factories.UserFactory's


def log_in(page: Any, username: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    page.wait_for_selector("#user-tools")


def log_out(page: Any) -> None:
    page.click("#logout-form button")
    page.wait_for_url(re.compile(r"/admin/logout/$"))


def test_asil_d_enable__requester_cannot_approve__second_person_approves__flag_enabled(page: Any) -> None:
    # Given an ASIL-D flag (disabled) that targets ev6, a registered ev6, a WRITE and a SAFETY user
    writer = UserFactory(username="wanda-writer", role="WRITE")
    UserFactory(username="sam-safety", role="SAFETY")
    flag = FlagFactory(key="brake.regen-blending-v2", name="Regen blending", safety_level="ASIL_D", enabled=False)
    RuleFactory(flag=flag, type="vehicle_target", priority=10, variant="ev6-fleet", conditions={"models": ["ev6"]})
    VehicleFactory(vin="KMHXX00XXXX000003", model="ev6", sw_version="3.0.0", region="us-east")
    flag_page = f"/admin/flags/flag/{flag.pk}/change/"

    # When the WRITE user enables it with a rationale
    log_in(page, "wanda-writer")
    page.goto(flag_page)
    assert "nothing changes until a second person approves" in page.inner_text("#ff-asil-d-banner")
    page.check("#id_enabled")
    page.fill("#id_rationale", "HARA-2026-017: brake blending validated on the ev6 test fleet")
    page.click("input[name=_save]")

    # Then the page names the change request, and the flag is unchanged
    page.wait_for_selector(".messagelist")
    request = ChangeRequest.objects.get()
    assert f"CR-{request.pk}" in page.inner_text(".messagelist")
    assert "Nothing changed yet" in page.inner_text(".messagelist")
    flag.refresh_from_db()
    assert (flag.enabled, flag.version, request.status, request.requested_by) == (False, 1, "pending", writer)

    # And the requester has no approve button, and a forged approval is refused
    page.goto(f"/admin/flags/changerequest/{request.pk}/change/")
    assert page.locator("#ff-approve").count() == 0
    status = page.evaluate(
        """async (url) => {
            const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken=')).split('=')[1];
            const response = await fetch(url, {method: 'POST', headers: {'X-CSRFToken': token}, redirect: 'manual'});
            return response.type === 'opaqueredirect' ? 302 : response.status;
        }""",
        f"/admin/flags/changerequest/{request.pk}/approve/",
    )
    assert status == 302
    page.reload()
    assert "Refused (permission_denied)" in page.inner_text(".messagelist")
    request.refresh_from_db()
    flag.refresh_from_db()
    assert (request.status, flag.enabled) == ("pending", False)
    log_out(page)

    # When a SAFETY engineer opens the queue, reviews the diff and approves
    log_in(page, "sam-safety")
    page.goto("/admin/flags/changerequest/")
    page.click(f"#result_list a:text-is('CR-{request.pk}')")
    page.wait_for_selector("#ff-diff")
    changed = page.locator("#ff-diff tr.ff-changed")
    assert changed.count() == 1 and "enabled" in changed.inner_text()
    assert "HARA-2026-017" in page.inner_text(".ff-rationale-text")
    page.fill("#ff-approve-comment", "Reviewed against SC-BRK-004 rev 3")
    page.click("#ff-approve")

    # Then the flag is enabled, the request approved by them
    page.wait_for_selector(".messagelist")
    assert f"Approved CR-{request.pk}" in page.inner_text(".messagelist")
    flag = Flag.objects.get(pk=flag.pk)
    request.refresh_from_db()
    assert (flag.enabled, flag.version, request.status, request.decided_by_label) == (True, 2, "approved",
                                                                                       "sam-safety")

    # And the evaluation preview on the flag page serves the rule's value to the ev6
    page.goto(flag_page)
    page.fill("#ff-eval-vin", "KMHXX00XXXX000003")
    page.click("#ff-eval-submit")
    page.wait_for_selector("#ff-eval-result")
    assert page.inner_text("#ff-eval-reason") == "TARGETING_MATCH"
    assert page.inner_text("#ff-eval-value").strip() == "true"
    assert page.inner_text("#ff-eval-variant") == "ev6-fleet"
