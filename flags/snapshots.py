"""ORM rows -> the evaluator's input, and the per-environment snapshot cache.

``flag_to_dict`` is the one mapper from the database to ``agent_client``'s snapshot JSON.
``document(env)`` serves the published snapshot of an environment (body and strong ETag)
from the cache; services call ``publish(env)`` on commit, so readers never build a
snapshot from a transaction that may still roll back, and a steady-state ``304`` reads
only the cached ETag.

A published snapshot is signed (``kid``, ``sig``: SPEC §4 "Signed payloads") once, when it is
published; every request serves those bytes as they are.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from agent_client.evaluator import Snapshot
from agent_client.signing import SIG
from agent_client.types import FlagDict, RuleDict, SnapshotDict
from core import signing
from flags.models import Flag, Revision, Rule

SNAPSHOT_FORMAT = 1
_CACHE_PREFIX = "ff:snapshot"
# A safety net, not the invalidation mechanism (that is publish-on-commit): if a publish
# ever failed, the stale ETag lapses and the next reader rebuilds from the database.
ETAG_TTL_SECONDS = 300


def rule_to_dict(rule: Rule) -> RuleDict:
    data: RuleDict = {
        "id": rule.pk,
        "type": rule.type,
        "priority": rule.priority,
        "enabled": rule.enabled,
        "conditions": rule.conditions,
        "variant": rule.variant,
    }
    if rule.value is not None:
        data["value"] = rule.value
    return data


def flag_to_dict(flag: Flag, rules: list[Rule] | None = None) -> FlagDict:
    """The flag as the evaluator reads it (rules from a prefetch when given)."""
    if rules is None:
        rules = list(flag.rules.all())
    data: FlagDict = {
        "key": flag.key,
        "type": flag.type,
        "default_value": flag.default_value,
        "enabled": flag.enabled,
        "safety_level": flag.safety_level,
        "environment": flag.environment,
        "version": flag.version,
        "ttl_seconds": flag.ttl_seconds,
        "rules": [rule_to_dict(rule) for rule in sorted(rules, key=lambda r: (-r.priority, r.pk or 0))],
    }
    if flag.archived_at is not None:
        data["archived"] = True
    return data


def flags_with_rules(environment: str) -> QuerySet[Flag]:
    return (
        Flag.objects.filter(environment=environment, archived_at__isnull=True)
        .prefetch_related(Prefetch("rules", queryset=Rule.objects.order_by("-priority", "id")))
        .order_by("key")
    )


def build(environment: str) -> SnapshotDict:
    """The snapshot of one environment, read from the database now."""
    revision = Revision.objects.filter(environment=environment).values_list("value", flat=True).first() or 0
    return {
        "format": SNAPSHOT_FORMAT,
        "environment": environment,
        "version": revision,
        "generated_at": timezone.now().isoformat(),
        "flags": [flag_to_dict(flag, list(flag.rules.all())) for flag in flags_with_rules(environment)],
    }


@dataclass(frozen=True)
class Document:
    environment: str
    version: int
    etag: str
    body: bytes

    def parsed(self) -> SnapshotDict:
        result: SnapshotDict = json.loads(self.body)
        return result


def _etag_key(environment: str) -> str:
    return f"{_CACHE_PREFIX}:{environment}:etag"


def _body_key(environment: str, etag: str) -> str:
    return f"{_CACHE_PREFIX}:{environment}:{etag}"


def _encode(data: SnapshotDict) -> Document:
    signed = signing.sign(data)
    # generated_at and sig stay out of the ETag: the same flags signed by the same key give the
    # same tag on every server. kid is in it: after a rotation vehicles fetch the new signature.
    stable = {k: v for k, v in signed.items() if k not in ("generated_at", SIG)}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    body = json.dumps(signed, separators=(",", ":")).encode()
    return Document(data["environment"], int(data["version"]), f'"{digest}"', body)


def publish(environment: str) -> Document:
    """Rebuild from committed data and make it current (called on commit)."""
    document = _encode(build(environment))
    cache.set(_body_key(environment, document.etag), document, timeout=ETAG_TTL_SECONDS * 2)
    cache.set(_etag_key(environment), document.etag, timeout=ETAG_TTL_SECONDS)
    _etag_seen.pop(environment, None)
    _local[environment] = document
    return document


def current_etag(environment: str) -> str | None:
    """The ETag of the published snapshot: one cache read, no database."""
    etag: str | None = cache.get(_etag_key(environment))
    return etag


def document(environment: str) -> Document:
    """The published snapshot; built from the database only when the cache has none."""
    return document_if_cached(environment) or publish(environment)


# Compiled snapshots per process, keyed by environment and checked against the ETag.
_local: dict[str, Document] = {}
_compiled: dict[str, tuple[str, Snapshot]] = {}
_etag_seen: dict[str, tuple[float, str]] = {}  # environment -> (valid until, monotonic; ETag)
_compile_lock = threading.Lock()


def compiled(environment: str) -> Snapshot:
    return compiled_for(document(environment))


def document_if_cached(environment: str, max_age: float = 0.0) -> Document | None:
    """The published document when the cache holds it, else None: never touches the database
    (async views call this on the event loop and fall back to ``document`` in a thread).

    ``max_age`` > 0 lets this process reuse the ETag it read within that many seconds instead
    of reading it again (a second cache level for the hot API paths); a publish in this
    process resets it, other processes see a new snapshot within ``max_age``."""
    now = time.monotonic()
    cached = _local.get(environment)
    if max_age > 0 and cached is not None:
        seen = _etag_seen.get(environment)
        if seen is not None and seen[0] > now and seen[1] == cached.etag:
            return cached
    etag = current_etag(environment)
    if etag is None:
        return None
    if cached is None or cached.etag != etag:
        cached = cache.get(_body_key(environment, etag))
        if cached is None:
            return None
        _local[environment] = cached
    _etag_seen[environment] = (now + max_age, etag)
    return cached


def compiled_for(current: Document) -> Snapshot:
    """The compiled snapshot of a document, compiled once per process and ETag."""
    entry = _compiled.get(current.environment)
    if entry is not None and entry[0] == current.etag:
        return entry[1]
    with _compile_lock:
        snapshot = Snapshot.from_dict(current.parsed())
        _compiled[current.environment] = (current.etag, snapshot)
    return snapshot


def forget_local() -> None:
    """Drop this process's copies (tests switch databases under it)."""
    _local.clear()
    _compiled.clear()
    _etag_seen.clear()
