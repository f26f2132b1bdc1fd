"""``manage.py audit_checkpoint --out FILE``: append a signed checkpoint of the chain head to FILE.

One JSON line: the head's seq and entry MAC, the time, the key id, the MAC of the previous
line, and a MAC over all of it with the audit key. The chain and the file's existing lines
are verified first; the command refuses (exit 1) rather than vouch for a broken chain or
continue a tampered file. Run it from cron and keep FILE where the database's users cannot
write (docs/audit.md, "Checkpoints"); ``verify_audit --checkpoint FILE`` checks against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import services


class Command(BaseCommand):
    help = "Verify the audit chain and append a signed checkpoint of its head to FILE."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                            help="The checkpoint file (JSON lines), appended to; created if absent.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["out"]
        if settings.AUDIT_HMAC_DEV_KEY_IN_USE:
            self.stderr.write("note: the audit key is the embedded development key (its value is public): this "
                              "checkpoint proves nothing; set AUDIT_HMAC_KEY or AUDIT_HMAC_KEY_FILE (docs/audit.md)")
        try:
            checkpoint = services.checkpoint_append(path=path)
        except services.CheckpointError as exc:
            raise CommandError(f"{path}: {exc}", returncode=1) from exc
        self.stdout.write(f"checkpoint #{checkpoint.seq} {checkpoint.hash[:16]} ({checkpoint.kid}) at "
                          f"{checkpoint.at} appended to {path}")
