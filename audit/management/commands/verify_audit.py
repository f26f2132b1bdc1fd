"""``manage.py verify_audit``: exit 0 and one line when the audit chain is intact.

Otherwise exit 1, naming the first broken entry (its seq and what is wrong). Run it daily
(docs/operations.md). ``--archive FILE`` also verifies an archived or exported JSON-lines
file; ``--checkpoint FILE`` also proves, against each signed checkpoint in FILE (written by
``audit_checkpoint``), that nothing up to that checkpoint was rewritten and that the chain
was not shortened below it. Notes on what an intact chain does not prove (the development
key, legacy SHA-256 entries) go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import services
from audit.models import GENESIS_HASH, AuditAnchor


class Command(BaseCommand):
    help = "Verify the audit MAC chain (exit 0 when intact, 1 naming the first broken entry)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--archive",
            type=Path,
            action="append",
            default=[],
            metavar="FILE",
            help="Also verify an archive or export in JSON lines (repeatable).",
        )
        parser.add_argument(
            "--checkpoint",
            type=Path,
            action="append",
            default=[],
            metavar="FILE",
            help="Also check the chain against the signed checkpoints in FILE (repeatable).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for path in [*options["archive"], *options["checkpoint"]]:
            if not path.is_file():
                raise CommandError(f"{path}: no such file", returncode=2)
        for path in options["archive"]:
            self._verify_file(path)
        report = services.verify_chain()
        for note in report.notes():
            self.stderr.write(f"note: {note}")
        failures = [] if report.ok else [report.summary()]
        if report.ok:
            self.stdout.write(report.summary())
        # Checked even when the chain is broken: a checkpoint names what was rewritten since.
        for path in options["checkpoint"]:
            try:
                with path.open(encoding="utf-8") as lines:
                    checked = services.checkpoints_verify(lines)
            except services.CheckpointError as exc:
                failures.append(f"{path}: {exc}")
                continue
            self.stdout.write(checked.summary(str(path)))
        if failures:
            raise CommandError("\n".join(failures), returncode=1)
        if services.is_partitioned():
            stray = next((p for p in services.partitions_list() if p.month is None and p.entries), None)
            if stray is not None:
                self.stderr.write(
                    f"warning: {stray.entries} entries are in the DEFAULT partition; run "
                    "`manage.py audit_partitions ensure` (or `create YYYY-MM`) to give them their month"
                )

    def _verify_file(self, path: Path) -> None:
        sha256 = services.file_sha256(path)
        anchor = AuditAnchor.objects.filter(archive_sha256=sha256).first()
        if anchor is not None and (problem := services.anchor_problem(anchor)) is not None:
            raise CommandError(f"{path}: {problem}", returncode=1)
        with path.open(encoding="utf-8") as lines:
            if anchor is not None:
                previous = AuditAnchor.objects.filter(seq__lt=anchor.first_seq).order_by("-seq").first()
                report = services.verify_jsonl(
                    lines,
                    start_seq=anchor.first_seq,
                    start_hash=previous.hash if previous is not None else GENESIS_HASH,
                )
            else:
                report = services.verify_jsonl(lines)
        if not report.ok:
            raise CommandError(f"{path}: {report.summary()}", returncode=1)
        if anchor is not None and (report.last_seq, report.head_hash) != (anchor.seq, anchor.hash):
            raise CommandError(f"{path}: does not end at its anchor #{anchor.seq}", returncode=1)
        matched = f"matches anchor #{anchor.seq}" if anchor is not None else "no anchor records this file"
        self.stdout.write(f"{path}: {report.checked} entries intact (#{report.first_seq}..#{report.last_seq}); {matched}")
