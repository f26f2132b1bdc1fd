"""``manage.py audit_partitions``: monthly partitions and 7-year archival (PostgreSQL).

    audit_partitions ensure [--months-ahead 3]   create DEFAULT, this month and the next ones (cron, monthly)
    audit_partitions create YYYY-MM              create one month (moves its rows out of DEFAULT)
    audit_partitions list                        partitions with their entry counts
    audit_partitions archive YYYY-MM --output F  export + verify + anchor + detach a month older than 7 years

See docs/audit.md.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import services

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(value: str) -> date:
    match = _MONTH.match(value.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise CommandError(f"not a month (YYYY-MM): {value!r}")
    return date(int(match.group(1)), int(match.group(2)), 1)


class Command(BaseCommand):
    help = "Manage the audit table's monthly partitions and archive months past the retention period."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="action", required=True)
        ensure = commands.add_parser("ensure", help="Create DEFAULT, this month and the next months.")
        ensure.add_argument("--months-ahead", type=int, default=3)
        create = commands.add_parser("create", help="Create one month's partition.")
        create.add_argument("month")
        commands.add_parser("list", help="List partitions with their entry counts.")
        archive = commands.add_parser("archive", help="Archive and detach a month older than the retention period.")
        archive.add_argument("month")
        archive.add_argument("--output", required=True, type=Path, help="The JSON-lines archive file to write.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._handle(options)
        except services.RetentionError as exc:
            raise CommandError(str(exc)) from exc

    def _handle(self, options: dict[str, Any]) -> None:
        action = options["action"]
        if action == "ensure":
            created = services.partitions_ensure(months_ahead=options["months_ahead"])
            self.stdout.write(f"created: {', '.join(created)}" if created else "all partitions exist already")
        elif action == "create":
            name = services.partition_create(parse_month(options["month"]))
            self.stdout.write(f"created: {name}" if name else "the partition exists already")
        elif action == "list":
            for partition in services.partitions_list():
                label = f"{partition.month:%Y-%m}" if partition.month else "DEFAULT"
                self.stdout.write(f"{partition.name}\t{label}\t{partition.entries} entries")
        elif action == "archive":
            month = parse_month(options["month"])
            anchor = services.partition_archive(month=month, output=options["output"], actor="system:audit_partitions")
            if anchor is None:
                self.stdout.write(f"{month:%Y-%m} had no entries; partition detached")
            else:
                self.stdout.write(
                    f"archived {anchor.entries} entries #{anchor.first_seq}..#{anchor.seq} of {month:%Y-%m} to "
                    f"{options['output']} (sha256 {anchor.archive_sha256}); partition detached as "
                    f"audit_archived_y{month.year:04d}m{month.month:02d}; the chain now starts at anchor #{anchor.seq}"
                )
