"""Kill-switch webhooks: a message to chat (Slack, Microsoft Teams) when one is engaged or lifted.

The one module that talks to webhook receivers. ``KILL_SWITCH_WEBHOOK_URLS`` (comma-separated,
empty: off) lists them; each gets one JSON POST per engage and per lift, with ``text`` (which
Slack incoming webhooks and Teams connectors both show) and Slack ``blocks``.

A notification can never delay or fail the kill switch: the message is built inside the
service's transaction (so it says what was committed, and the job needs no database), handed
off only after commit (``core.transactions.after_commit``, robust), and sent from the
background (``core.jobs.submit``: an RQ job with retries behind Redis, a thread in the
embedded default) with a short HTTP timeout. Failures are logged, never raised into the engage.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.urls import reverse

from core import jobs, transactions
from flags.models import Flag, KillSwitchEvent

log = logging.getLogger("fleetflag.notifications")

def enabled() -> bool:
    return bool(settings.KILL_SWITCH_WEBHOOK_URLS)


# -- the message ------------------------------------------------------------------------------


def flag_admin_url(flag: Flag) -> str:
    return settings.FLEETFLAG_PUBLIC_URL.rstrip("/") + reverse("admin:flags_flag_change", args=[flag.pk])


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _vehicles(count: int) -> str:
    return f"{count} vehicle{'' if count == 1 else 's'}"


def engaged_message(event: KillSwitchEvent, flag: Flag) -> dict[str, Any]:
    """What Slack and Teams show for an engage: the event as committed."""
    online = ("unknown (presence unavailable)" if event.targeted_online is None
              else f"{event.targeted_online} online at the engage")
    facts = {
        "Flag": f"{flag.key} ({flag.get_safety_level_display()})",
        "Environment": event.environment,
        "Reason": event.reason,
        "Engaged by": event.engaged_by,
        "When": _when(event.engaged_at),
        "Targeted": f"{_vehicles(event.targeted_all)} registered, {online}",
        "Version": str(event.version),
    }
    headline = f"Kill switch ENGAGED: {flag.key} in {event.environment}"
    return _payload(headline, facts, flag_admin_url(flag),
                    "Vehicles serve the flag's default value. Delivery and acknowledgements: the flag page.")


def lifted_message(flag: Flag, *, by: str, at: datetime, version: int, was_reason: str,
                   change_request_id: int | None) -> dict[str, Any]:
    """What Slack and Teams show when a kill switch is lifted (the flag serves its rules again)."""
    facts = {
        "Flag": f"{flag.key} ({flag.get_safety_level_display()})",
        "Environment": flag.environment,
        "Was engaged for": was_reason or "-",
        "Lifted by": by + (f" (approved change request CR-{change_request_id})" if change_request_id else ""),
        "When": _when(at),
        "Version": str(version),
    }
    headline = f"Kill switch LIFTED: {flag.key} in {flag.environment}"
    return _payload(headline, facts, flag_admin_url(flag),
                    "Vehicles serve the flag's rules again from their next update.")


def _payload(headline: str, facts: dict[str, str], link: str, footer: str) -> dict[str, Any]:
    # Plain text with a bare link: Slack and Teams both render it (their markup differs).
    lines = [headline, *(f"{name}: {value}" for name, value in facts.items()), f"Flag page: {link}", footer]
    return {
        "text": "\n".join(lines),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)[:1900]}"}
                                           for name, value in facts.items()][:10]},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open the flag page> - {footer}"}},
        ],
    }


def _escape(text: str) -> str:
    """Slack mrkdwn: &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- after commit --------------------------------------------------------------------------------


def kill_switch_engaged_on_commit(event: KillSwitchEvent, flag: Flag) -> None:
    """Called by ``flags.services.kill_switch_engage`` inside its transaction."""
    if enabled():
        transactions.after_commit(submit, engaged_message(event, flag))


def kill_switch_lifted_on_commit(flag: Flag, *, by: str, at: datetime, was_reason: str,
                                 change_request_id: int | None) -> None:
    """Called by ``flags.operations.apply`` when an applied change lifted the flag's kill switch."""
    if enabled():
        transactions.after_commit(submit, lifted_message(flag, by=by, at=at, version=flag.version,
                                                         was_reason=was_reason,
                                                         change_request_id=change_request_id))


def submit(payload: dict[str, Any]) -> None:
    """One background job per configured URL, each retried on its own."""
    for url in settings.KILL_SWITCH_WEBHOOK_URLS:
        jobs.submit(send_webhook, url, payload, retry_intervals=settings.KILL_SWITCH_WEBHOOK_RETRY_INTERVALS,
                    job_timeout=int(settings.KILL_SWITCH_WEBHOOK_TIMEOUT_SECONDS) + 30,
                    description=f"kill-switch webhook to {_host(url)}")


# -- the job -------------------------------------------------------------------------------------


def _host(url: str) -> str:
    """Webhook URLs carry their secret in the path: logs name the host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def send_webhook(url: str, payload: dict[str, Any]) -> int:
    """POST the payload; any failure raises, so that RQ (or the embedded thread) retries."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "User-Agent": "FleetFlag kill-switch webhook"})
    timeout = float(settings.KILL_SWITCH_WEBHOOK_TIMEOUT_SECONDS)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        log.warning("kill-switch webhook to %s refused: HTTP %s", _host(url), exc.code)
        raise RuntimeError(f"webhook {_host(url)} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:  # unreachable, timed out, a malformed URL
        log.warning("kill-switch webhook to %s failed: %s", _host(url), exc)
        raise RuntimeError(f"webhook {_host(url)} failed: {exc}") from None
    log.info("kill-switch webhook to %s delivered (HTTP %s)", _host(url), status)
    return status
