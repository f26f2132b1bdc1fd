"""``manage.py safety_evidence KEY [--format json|html] [--output FILE]``: one flag's evidence report.

JSON (the default) goes to standard output unless ``--output`` names a file. Archived flags
have evidence too; an unknown key is an error.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from flags.evidence import build_report, render_html
from flags.models import Flag


class Command(BaseCommand):
    help = "The safety evidence report of one flag (ISO 26262): JSON or printable HTML."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", help="The flag key.")
        parser.add_argument("--format", choices=("json", "html"), default="json")
        parser.add_argument("--output", help="Write to this file instead of standard output.")

    def handle(self, *args: Any, **options: Any) -> None:
        flag = Flag.objects.filter(key=options["key"]).first()
        if flag is None:
            raise CommandError(f"no flag with key {options['key']!r}")
        report = build_report(flag)
        if options["format"] == "html":
            text = render_html(report)
        else:
            text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as handle:
                handle.write(text)
            self.stderr.write(f"wrote the {options['format']} evidence report of {flag.key} to {options['output']}")
        else:
            self.stdout.write(text, ending="")
