from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors
from accounts.services import api_key_expire, api_key_revoke
from core.actors import Actor
from core.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Revoke an API key for good (or, with --expire, end its validity now). Name the key by its prefix: "
        "abcd1234 or ffk_abcd1234, as the admin and the API list it. Every server refuses it within "
        "API_KEY_LOCAL_CACHE_SECONDS (2 s) of the commit."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="the key's 8-character prefix, bare or as ffk_<prefix>")
        parser.add_argument("--expire", action="store_true", help="expire it now instead of revoking it")

    def handle(self, *args: Any, **options: Any) -> None:
        end = api_key_expire if options["expire"] else api_key_revoke
        try:
            key = selectors.api_key_get(prefix=options["prefix"])
            key = end(actor=Actor.for_system("manage.py revoke_api_key"), api_key=key)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        owner = f", bound to {key.user.get_username()}" if key.user is not None else ""
        verb = "expired" if options["expire"] else "revoked"
        self.stdout.write(f"{verb} API key {key.name!r} (ffk_{key.key_prefix}{owner}).")
