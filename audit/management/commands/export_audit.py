"""``manage.py export_audit``: stream audit entries as CSV or JSON lines, filtered.

Entries are read in chunks (a server-side cursor on PostgreSQL), never all at once. JSON
lines carry every hashed field and the hash: ``verify_audit --archive FILE`` checks them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime

from audit import services


def parse_instant(value: str) -> datetime:
    """ISO 8601 date or date-time; without a zone it is UTC."""
    text = value.strip()
    parsed = parse_datetime(text)
    if parsed is None:
        day = parse_date(text)
        if day is None:
            raise ValueError(f"not an ISO 8601 date or date-time: {value!r}")
        parsed = datetime(day.year, day.month, day.day)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class _Counted:
    """Counts what an export iterates, keeping the export's own chunked iterator."""

    def __init__(self, entries: Any) -> None:
        self.entries = entries
        self.count = 0

    def iterator(self, chunk_size: int) -> Any:
        for entry in self.entries.iterator(chunk_size=chunk_size):
            self.count += 1
            yield entry


class Command(BaseCommand):
    help = "Export audit entries (CSV or JSON lines), streaming, with optional filters."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
        parser.add_argument("--since", help="From this ISO date/time on (inclusive; UTC unless a zone is given).")
        parser.add_argument("--until", help="Before this ISO date/time (exclusive).")
        parser.add_argument("--flag", help="Only this flag key.")
        parser.add_argument("--actor", help="Only this actor, as recorded (e.g. a user name or api-key:NAME).")
        parser.add_argument("--action", help="Only this action, e.g. KILL_SWITCH.")
        parser.add_argument("--output", help="Write to this file instead of standard output.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since = parse_instant(options["since"]) if options["since"] else None
            until = parse_instant(options["until"]) if options["until"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if since is not None and until is not None and until <= since:
            raise CommandError("--until must be after --since")
        entries = _Counted(
            services.filter_entries(
                since=since, until=until, flag_key=options["flag"], actor=options["actor"], action=options["action"]
            )
        )
        export = services.export_csv if options["format"] == "csv" else services.export_jsonl
        if options["output"]:
            # newline="": the csv module writes its own line endings.
            with open(options["output"], "w", encoding="utf-8", newline="") as handle:
                for chunk in export(entries):
                    handle.write(chunk)
            self.stderr.write(f"exported {entries.count} audit entries to {options['output']}")
        else:
            for chunk in export(entries):
                self.stdout.write(chunk, ending="")
