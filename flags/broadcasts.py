"""What the vehicle sockets are told, built once and pushed after commit.

Every change that bumps an environment's revision pushes one frame on commit: KILL_SWITCH for
an engage (``kill_switch_on_commit``), FLAG_UPDATE for any other change of a flag
(``flag_update_on_commit``), or a fresh SYNC when a flag left the environment. Each frame is
serialised here once, in the process that made the change; the server processes' fan-out
(``realtime.fanout``) writes the same text to each of their sockets of that environment.

The message on the push channel (``core.push``) is an envelope: ``{"kind": "frame" | "sync",
"environment", "version", "event" (kill-switch event id or null), "frame" (the text)}``.
A failed publish (Redis down) is logged, never undoes the change: every process sweeps its
sockets' versions against the database and sends what they missed (``catch_up``).

Every frame is signed (``core.signing``) once, where it is serialised. Frames carry the
environment's snapshot version (``Revision``): the one number the SYNC, ACK
and catch-up compare.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from core import push, signing, transactions
from flags import snapshots
from flags.models import Flag, KillSwitchEvent, Revision, Rule

log = logging.getLogger("fleetflag.push")

KILL_SWITCH = "KILL_SWITCH"
FLAG_UPDATE = "FLAG_UPDATE"
SYNC = "SYNC"
# Catch-up sends the missed kill switches engaged within this many versions, then a SYNC.
CATCH_UP_EVENTS = 50


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def signed(obj: dict[str, Any]) -> str:
    """The frame's text, signed (``kid``, ``sig``: SPEC §4): once per frame, sent as it is."""
    return signing.sign_bytes(obj).decode("utf-8")


def revision(environment: str) -> int:
    return Revision.objects.filter(environment=environment).values_list("value", flat=True).first() or 0


def revisions(environments: list[str]) -> dict[str, int]:
    found = dict(Revision.objects.filter(environment__in=environments).values_list("environment", "value"))
    return {environment: int(found.get(environment, 0)) for environment in environments}


# -- frames ----------------------------------------------------------------------------------------


def kill_switch_frame(event: KillSwitchEvent, flag_key: str, sent_at: str | None = None) -> str:
    return signed({"type": KILL_SWITCH, "flag_key": flag_key, "reason": event.reason, "version": event.version,
                  "sent_at": sent_at or timezone.now().isoformat()})


def flag_update_frame(flag: Flag, version: int, rules: list[Rule] | None = None) -> str:
    return signed({"type": FLAG_UPDATE, "flag_key": flag.key, "flag": snapshots.flag_to_dict(flag, rules),
                  "version": version})


_sync_frames: dict[str, tuple[str, str]] = {}  # environment -> (ETag, frame text), per process


def sync_frame(environment: str, at_least: int | None = None) -> tuple[int, str]:
    """(version, text) of the SYNC frame of the published snapshot, serialised once per ETag.

    ``at_least``: the caller knows the environment is at that version; a published snapshot
    older than that (its publish after commit failed) is rebuilt. Without the cache (Redis
    down) the snapshot is read from the database."""
    try:
        document = snapshots.document(environment)
        if at_least is not None and document.version < at_least:
            document = snapshots.publish(environment)
    except Exception as exc:  # noqa: BLE001 - the cache is away: the database still answers
        log.warning("snapshot cache unavailable (%s): SYNC of %s built from the database", exc, environment)
        return _sync_text(snapshots.build(environment))
    cached = _sync_frames.get(environment)
    if cached is not None and cached[0] == document.etag:
        return document.version, cached[1]
    version, text = _sync_text(document.parsed())
    _sync_frames[environment] = (document.etag, text)
    return version, text


def _sync_text(data: Any) -> tuple[int, str]:
    return int(data["version"]), signed({"type": SYNC, "version": data["version"], "environment": data["environment"],
                                        "generated_at": data["generated_at"], "flags": data["flags"]})


def missed_kill_switches(environment: str, since: int) -> list[tuple[int, str]]:
    """(event id, frame) of the kill switches engaged after version ``since`` and still engaged."""
    events = (KillSwitchEvent.objects.filter(environment=environment, version__gt=since, rule__enabled=True,
                                             rule__type="kill_switch")
              .select_related("flag").order_by("version")[:CATCH_UP_EVENTS])
    return [(event.pk, kill_switch_frame(event, event.flag.key, event.engaged_at.isoformat())) for event in events]


# -- publishing after commit -----------------------------------------------------------------------


def _envelope(kind: str, environment: str, version: int, frame: str | None, event: int | None = None) -> bytes:
    return dumps({"kind": kind, "environment": environment, "version": version, "event": event,
                  "frame": frame}).encode()


def _publish(message: bytes, what: str) -> bool:
    try:
        push.publish(message)
    except Exception as exc:  # noqa: BLE001 - the change is committed; the sweep delivers it
        log.warning("push of %s failed (%s): server processes send it on their next sweep, vehicles on their "
                    "next sync", what, exc)
        return False
    return True


def _push_kill_switch(event_id: int, message: bytes) -> None:
    if _publish(message, f"kill switch {event_id}"):
        KillSwitchEvent.objects.filter(pk=event_id).update(pushed=True)


def kill_switch_on_commit(event: KillSwitchEvent) -> None:
    """Inside the engage's transaction: the frame is built and signed now; it is published
    first thing after commit, ahead of the engage's other after-commit work (the snapshot
    rebuild and its cache writes, about 20 ms that a vehicle would otherwise wait for: the
    fan-out needs only the frame)."""
    frame = kill_switch_frame(event, event.flag.key)
    message = _envelope("frame", event.environment, event.version, frame, event.pk)
    transactions.after_commit(_push_kill_switch, event.pk, message)
    connection = transaction.get_connection()
    if connection.in_atomic_block and connection.run_on_commit:
        connection.run_on_commit.insert(0, connection.run_on_commit.pop())  # the hook just added


def _push_frames(messages: list[tuple[bytes, str]]) -> None:
    for message, what in messages:
        _publish(message, what)


def flag_update_on_commit(flag: Flag, *environments: str) -> None:
    """Inside the change's transaction: the frames of this change (its version and the flag as
    it now is), pushed after commit. The flag's own environment gets FLAG_UPDATE; an environment
    the flag left (moved, archived) gets a fresh SYNC."""
    versions = revisions(sorted(set(environments)))
    rules = list(Rule.objects.filter(flag=flag))
    messages = []
    for environment, version in versions.items():
        if environment == flag.environment and flag.archived_at is None:
            frame = flag_update_frame(flag, version, rules)
            messages.append((_envelope("frame", environment, version, frame), f"update of {flag.key}"))
        else:
            messages.append((_envelope("sync", environment, version, None), f"sync of {environment}"))
    transactions.after_commit(_push_frames, messages)
