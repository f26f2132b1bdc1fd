"""``manage.py signing_key generate|show|rotate``: the Ed25519 keys that sign what vehicles get.

- ``generate`` writes a new keyring file (one active key; mode 0600) to ``--file`` or the
  configured one (``SIGNING_KEY_FILE``, else the development keyring); an existing file is kept
  unless ``--force``, which replaces it and with it every older key.
- ``show`` prints the keys the server publishes (``GET /api/v1/signing-keys/``): one line each,
  ``kid active|inactive created_at public_key``. Never a private key.
- ``rotate`` adds a new active key to the keyring file; the old ones stay listed, inactive,
  public half only, so vehicles that pin them are moved over. Running processes pick up the
  file on its next change check (each payload they sign); the snapshots of every environment
  are re-published at once, so the sync body carries the new ``kid`` (``--no-publish`` skips
  that).

Errors are one line and exit 1. Key material from ``SIGNING_KEY`` (the environment) is changed
there, not here: see docs/operations.md, "Signing keys".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from core import signing
from core.environments import Environment
from flags import snapshots


class Command(BaseCommand):
    help = "Manage the Ed25519 keys that sign snapshots and frames: generate, show, rotate (docs/operations.md)."
    # generate must run before a configured keyring exists: the checks would refuse it.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=("generate", "show", "rotate"))
        parser.add_argument("--file", type=Path, metavar="PATH",
                            help="the keyring file (default: SIGNING_KEY_FILE, else the development keyring)")
        parser.add_argument("--force", action="store_true", help="generate: replace an existing keyring file")
        parser.add_argument("--no-publish", action="store_true",
                            help="rotate: do not re-publish the snapshots with the new key")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if options["force"] and action != "generate":
            raise CommandError("--force applies to generate only")
        if options["no_publish"] and action != "rotate":
            raise CommandError("--no-publish applies to rotate only")
        try:
            if action == "show":
                self._show(signing.read_file(options["file"]) if options["file"] else signing.load())
            elif action == "generate":
                self._generate(self._path(options["file"]), force=options["force"])
            else:
                self._rotate(self._path(options["file"]), publish=not options["no_publish"])
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None

    def _path(self, given: Path | None) -> Path:
        if given is not None:
            return given
        path = signing.configured_file()
        if path is None:
            raise CommandError("the signing key comes from SIGNING_KEY (the environment): change it there, "
                               "or name a keyring file with --file PATH")
        return path

    def _show(self, ring: signing.Keyring) -> None:
        self.stdout.write(f"signing keys from {ring.source}:")
        for key in ring.keys:
            state = "active" if key.active else "inactive"
            self.stdout.write(f"{key.kid} {state} {key.created_at or '-'} {key.as_dict()['public_key']}")

    def _generate(self, path: Path, *, force: bool) -> None:
        if not path.parent.is_dir():
            raise CommandError(f"{path}: the directory {path.parent} does not exist")
        try:
            ring = signing.generate_file(path, force=force)
        except FileExistsError:
            raise CommandError(f"{path} exists: keep it, rotate it, or replace it with --force "
                               "(which drops every older key vehicles may pin)") from None
        except OSError as exc:
            raise CommandError(f"{path}: cannot write the keyring: {exc.strerror or exc}") from None
        self.stdout.write(f"wrote {path} (mode 0600) with the new active key {ring.active.kid}")
        self._show(ring)

    def _rotate(self, path: Path, *, publish: bool) -> None:
        try:
            before, after = signing.rotate_file(path)
        except OSError as exc:
            raise CommandError(f"{path}: cannot write the keyring: {exc.strerror or exc}") from None
        self.stdout.write(f"rotated {path}: {after.active.kid} is active, {before.active.kid} and older are "
                          "listed inactive")
        self._show(after)
        in_use = signing.configured_file()
        if not publish or in_use is None or in_use.resolve() != path.resolve():
            return
        try:
            for environment in Environment.values:
                snapshots.publish(environment)
        except DatabaseError as exc:
            raise CommandError(f"rotated, but the snapshots could not be re-published ({exc}); they carry the new "
                               "key from their next change") from None
        self.stdout.write(f"re-published the snapshots of {', '.join(Environment.values)} with key {after.active.kid}")
