"""Kill-switch webhooks against a real HTTP receiver (``http.server`` on 127.0.0.1 in a thread):
sent after commit from the background (a real RQ worker on the test Redis, or the embedded
thread), retried, and never in the way of the engage."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest.mock import patch

import pytest
from django.urls import reverse

from core import jobs
from flags import services
from flags.models import ChangeRequest, KillSwitchEvent, Rule
from tests.admin.conftest import AdminClient, messages_of
from tests.factories import FlagFactory, RuleFactory, UserFactory, actor
from tests.flags.test_kill_switch_delivery import vehicles

pytestmark = pytest.mark.django_db

EMBEDDED_QUEUES = {"default": {"URL": "redis://embedded/0", "ASYNC": False}}


# -- a real webhook receiver ------------------------------------------------------------------------


@dataclass
class Receiver:
    """Answers 200 after ``fail_first`` answers of 500; ``hang`` seconds before answering."""

    fail_first: int = 0
    hang: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secret-part"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.attempts += 1
            if state.hang:
                state.released.wait(state.hang)
            if state.attempts <= state.fail_first:
                self.send_response(500)
                self.end_headers()
                return
            state.received.append({"path": self.path, "content_type": self.headers["Content-Type"],
                                   "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.released.set()
    assert jobs.wait_idle(15), "a webhook hand-off was still running"
    server.shutdown()
    server.server_close()


# -- where jobs run: a real RQ worker on the test Redis, or the embedded thread -----------------------


@pytest.fixture(params=["embedded", "rq"])
def mode(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    if request.param == "embedded":
        settings.RQ_QUEUES = EMBEDDED_QUEUES
        yield "embedded"
        return
    request.getfixturevalue("require_redis")
    import django_rq

    queue = django_rq.get_queue("default")
    queue.empty()
    yield "rq"
    jobs.wait_idle()
    queue.empty()


def run_jobs(mode: str) -> None:
    """Until every notification of the test is sent or given up."""
    assert jobs.wait_idle(15)
    if mode == "rq":
        import django_rq
        from rq import SimpleWorker

        queue = django_rq.get_queue("default")
        SimpleWorker([queue], connection=queue.connection).work(burst=True)


@pytest.fixture
def webhook(settings: Any, receiver: Receiver) -> Receiver:
    settings.KILL_SWITCH_WEBHOOK_URLS = [receiver.url]
    settings.KILL_SWITCH_WEBHOOK_RETRY_INTERVALS = [0, 0, 0, 0, 0]
    settings.KILL_SWITCH_WEBHOOK_TIMEOUT_SECONDS = 2.0
    settings.FLEETFLAG_PUBLIC_URL = "https://fleetflag.example.com/"
    return receiver


def engage(on_commit: Any, key: str = "brake.blend", reason: str = "recall 26-04", **flag: Any) -> tuple[Any, float]:
    target = FlagFactory(key=key, **flag)
    started = time.monotonic()
    with on_commit():
        outcome = services.kill_switch_engage(actor=actor("SAFETY", "sam-safety"), flag=target, reason=reason)
    return outcome, time.monotonic() - started


# -- the message -----------------------------------------------------------------------------------


def test_engage__receiver_up__one_message_with_flag_environment_reason_who_when_counts_link(
        mode: str, webhook: Receiver, on_commit: Any) -> None:
    # Given two registered vehicles and a webhook
    vehicles(2)
    # When a SAFETY engineer engages the kill switch and the jobs run
    outcome, _ = engage(on_commit, safety_level="ASIL_B")
    run_jobs(mode)
    # Then the receiver got one JSON POST on its own path that says what was committed
    event = KillSwitchEvent.objects.get()
    [message] = webhook.wait_for(1)
    assert message["path"] == "/services/T000/B000/secret-part"
    assert message["content_type"] == "application/json; charset=utf-8"
    text = message["json"]["text"]
    link = f"https://fleetflag.example.com/admin/flags/flag/{outcome.flag.pk}/change/"
    assert text.splitlines() == [
        "Kill switch ENGAGED: brake.blend in production",
        "Flag: brake.blend (ASIL-B)",
        "Environment: production",
        "Reason: recall 26-04",
        "Engaged by: sam-safety",
        f"When: {event.engaged_at:%Y-%m-%d %H:%M:%S} UTC",
        "Targeted: 2 vehicles registered, 0 online at the engage",
        f"Version: {event.version}",
        f"Flag page: {link}",
        "Vehicles serve the flag's default value. Delivery and acknowledgements: the flag page.",
    ]
    # And Slack blocks carry the same facts and the link
    blocks = message["json"]["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text",
                                                    "text": "Kill switch ENGAGED: brake.blend in production"}}
    assert {"type": "mrkdwn", "text": "*Reason*\nrecall 26-04"} in blocks[1]["fields"]
    assert blocks[2]["text"]["text"].startswith(f"<{link}|Open the flag page>")
    assert webhook.attempts == 1


def test_engage__slack_control_characters_in_reason__escaped_in_blocks_kept_in_text(
        webhook: Receiver, settings: Any, on_commit: Any) -> None:
    settings.RQ_QUEUES = EMBEDDED_QUEUES
    engage(on_commit, reason="<!channel> brake & ABS")
    run_jobs("embedded")
    [message] = webhook.wait_for(1)
    assert "Reason: <!channel> brake & ABS" in message["json"]["text"].splitlines()
    assert {"type": "mrkdwn", "text": "*Reason*\n&lt;!channel&gt; brake &amp; ABS"} in message["json"]["blocks"][1][
        "fields"]


def test_engage__no_webhook_configured__nothing_submitted(settings: Any, on_commit: Any) -> None:
    settings.KILL_SWITCH_WEBHOOK_URLS = []
    with patch.object(jobs, "submit") as submit:
        outcome, _ = engage(on_commit)
    assert outcome.applied and submit.call_count == 0


def test_engage__rolled_back__nothing_submitted(webhook: Receiver, on_commit: Any) -> None:
    # Given an engage whose transaction rolls back after the service returned
    flag = FlagFactory(key="brake.blend")
    from django.db import transaction

    with patch.object(jobs, "submit") as submit, on_commit():
        try:
            with transaction.atomic():
                services.kill_switch_engage(actor=actor("SAFETY"), flag=flag, reason="x")
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    # Then no notification leaves, and no kill switch exists
    assert submit.call_count == 0 and not Rule.objects.exists()


def test_engage__already_engaged__no_second_message(mode: str, webhook: Receiver, on_commit: Any) -> None:
    outcome, _ = engage(on_commit)
    with on_commit():
        again = services.kill_switch_engage(actor=actor("WRITE"), flag=outcome.flag.pk, reason="again")
    run_jobs(mode)
    assert not again.audit_actions
    assert len(webhook.wait_for(1)) == 1 and webhook.attempts == 1


def test_lift__message_says_lifted_with_the_reason_it_was_engaged_for(mode: str, webhook: Receiver,
                                                                        on_commit: Any) -> None:
    outcome, _ = engage(on_commit)
    with on_commit():
        lifted = services.kill_switch_lift(actor=actor("WRITE", "wanda-writer"), flag=outcome.flag.pk)
    run_jobs(mode)
    engaged, lift = webhook.wait_for(2)
    assert engaged["json"]["text"].startswith("Kill switch ENGAGED: brake.blend")
    lines = lift["json"]["text"].splitlines()
    assert lines[0] == "Kill switch LIFTED: brake.blend in production"
    assert "Was engaged for: recall 26-04" in lines and "Lifted by: wanda-writer" in lines
    assert f"Version: {lifted.flag.version}" in lines
    assert lines[-1] == "Vehicles serve the flag's rules again from their next update."


def test_lift_asil_d__not_on_request__on_approval_naming_the_request(settings: Any, webhook: Receiver,
                                                                     on_commit: Any) -> None:
    settings.RQ_QUEUES = EMBEDDED_QUEUES
    outcome, _ = engage(on_commit, safety_level="ASIL_D", enabled=False)
    # When a WRITE user asks to lift it: a change request, and no message
    with on_commit():
        proposed = services.kill_switch_lift(actor=actor("WRITE"), flag=outcome.flag.pk, rationale="fixed in 2.7")
    run_jobs("embedded")
    assert proposed.change_request is not None and len(webhook.wait_for(1)) == 1
    # When a SAFETY engineer approves it: the lift is announced with the request
    with on_commit():
        services.change_request_approve(actor=actor("SAFETY", "sam-approver"), change_request=proposed.change_request.pk)
    run_jobs("embedded")
    lift = webhook.wait_for(2)[1]["json"]["text"].splitlines()
    assert lift[0] == "Kill switch LIFTED: brake.blend in production"
    assert f"Lifted by: sam-approver (approved change request CR-{proposed.change_request.pk})" in lift
    assert ChangeRequest.objects.get().status == "approved"


def test_lift_by_deleting_the_rule__announced(settings: Any, webhook: Receiver, on_commit: Any) -> None:
    settings.RQ_QUEUES = EMBEDDED_QUEUES
    outcome, _ = engage(on_commit)
    with on_commit():
        services.rule_delete(actor=actor("WRITE"), flag=outcome.flag.pk, rule_id=outcome.rule.pk)
    run_jobs("embedded")
    assert webhook.wait_for(2)[1]["json"]["text"].startswith("Kill switch LIFTED: brake.blend")


def test_other_rule_deleted_while_killed__no_lift_message(settings: Any, webhook: Receiver, on_commit: Any) -> None:
    settings.RQ_QUEUES = EMBEDDED_QUEUES
    outcome, _ = engage(on_commit)
    other = RuleFactory(flag=outcome.flag, type="vehicle_whitelist", priority=5, conditions={"vins": []})
    with on_commit():
        services.rule_delete(actor=actor("WRITE"), flag=outcome.flag.pk, rule_id=other.pk)
    run_jobs("embedded")
    time.sleep(0.2)
    assert len(webhook.received) == 1


# -- retries and failures ----------------------------------------------------------------------------


def test_receiver_fails_twice__retried_to_success(mode: str, webhook: Receiver, on_commit: Any) -> None:
    webhook.fail_first = 2
    engage(on_commit)
    run_jobs(mode)
    assert webhook.attempts == 3 and len(webhook.wait_for(1)) == 1
    if mode == "rq":
        import django_rq

        queue = django_rq.get_queue("default")
        assert queue.count == 0 and queue.failed_job_registry.count == 0


def test_receiver_always_fails__gives_up_after_the_retries__logged(
        mode: str, webhook: Receiver, on_commit: Any, caplog: pytest.LogCaptureFixture) -> None:
    webhook.fail_first = 100
    with caplog.at_level(logging.WARNING, logger="fleetflag"):
        outcome, _ = engage(on_commit)
        run_jobs(mode)
    # Then 1 + 5 attempts, the kill switch stands, and the log names the host, never the secret path
    assert webhook.attempts == 6 and webhook.received == []
    assert Rule.objects.get(flag=outcome.flag).enabled
    refused = [r.getMessage() for r in caplog.records if "refused: HTTP 500" in r.getMessage()]
    assert len(refused) == 6
    assert all("secret-part" not in r.getMessage() for r in caplog.records)
    if mode == "rq":
        import django_rq

        assert django_rq.get_queue("default").failed_job_registry.count == 1


def test_receiver_hangs__engage_returns_at_once__send_times_out(
        mode: str, webhook: Receiver, settings: Any, on_commit: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Given a receiver that answers only after 5 s and a 2 s timeout, no retries
    webhook.hang = 5.0
    settings.KILL_SWITCH_WEBHOOK_RETRY_INTERVALS = []
    # When the kill switch is engaged (its commit hooks included)
    with caplog.at_level(logging.WARNING, logger="fleetflag"):
        outcome, elapsed = engage(on_commit)
        # Then the engage is back well within the webhook's timeout, committed
        assert elapsed < 1.0, elapsed
        assert KillSwitchEvent.objects.filter(flag=outcome.flag).exists()
        started = time.monotonic()
        run_jobs(mode)
    # And the send gave up at its timeout, not the receiver's 5 s
    assert time.monotonic() - started < 4.5
    assert any("timed out" in r.getMessage() for r in caplog.records)


def test_redis_down_at_enqueue__engage_commits_and_answers__logged(
        webhook: Receiver, settings: Any, on_commit: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Given a real queue whose Redis refuses connections
    import django_rq
    from redis import Redis

    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:9/0"}}
    dead = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    real_get_queue = django_rq.get_queue

    def dead_queue(name: str = "default", **kwargs: Any) -> Any:
        return real_get_queue(name, connection=dead, is_async=True, **kwargs)

    with patch.object(django_rq, "get_queue", dead_queue), caplog.at_level(logging.ERROR, logger="fleetflag"):
        outcome, elapsed = engage(on_commit)
        assert jobs.wait_idle(10)
    # Then the engage committed and answered at once, and the lost notification is logged
    assert elapsed < 1.0 and outcome.applied
    assert Rule.objects.get(flag=outcome.flag).enabled
    assert any("not handed off" in r.getMessage() for r in caplog.records)
    assert webhook.attempts == 0


# -- the admin: one message per flag, the page answered without waiting -----------------------------


@pytest.fixture
def safety_client(committed_db: None) -> AdminClient:
    return AdminClient(UserFactory(username="sam-safety", role="SAFETY"))


def test_admin_action__several_flags__one_message_per_flag(safety_client: AdminClient, settings: Any,
                                                           webhook: Receiver) -> None:
    settings.RQ_QUEUES = EMBEDDED_QUEUES
    flags = [FlagFactory(key="brake.blend"), FlagFactory(key="seat.heating", environment="staging")]
    response = safety_client.post(reverse("admin:flags_flag_changelist"), {
        "action": "engage_kill_switch", "_selected_action": [f.pk for f in flags], "_confirm": "1",
        "text": "INC-88", "confirm": "on"})
    assert response.status_code == 302
    assert jobs.wait_idle(10)
    headlines = sorted(m["json"]["text"].splitlines()[0] for m in webhook.wait_for(2))
    assert headlines == ["Kill switch ENGAGED: brake.blend in production",
                         "Kill switch ENGAGED: seat.heating in staging"]


def test_admin_kill_page__receiver_hangs__answered_at_once(safety_client: AdminClient, settings: Any,
                                                           webhook: Receiver) -> None:
    settings.RQ_QUEUES = EMBEDDED_QUEUES
    settings.KILL_SWITCH_WEBHOOK_RETRY_INTERVALS = []
    webhook.hang = 5.0
    flag = FlagFactory(key="seat.heating")
    started = time.monotonic()
    response = safety_client.post(reverse("admin:flags_flag_kill_switch", args=[flag.pk]),
                           {"text": "thermal event", "confirm": "on"})
    assert time.monotonic() - started < 1.5
    assert response.status_code == 302
    assert any("Kill switch engaged on seat.heating" in m for m in messages_of(response))
