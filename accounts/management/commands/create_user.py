from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services import user_create_or_update
from core.actors import ROLES, Actor


class Command(BaseCommand):
    help = ("Create a user with a role (ADMIN, WRITE, READ, SAFETY), or add the role to an existing user. "
            "Audited (CREATE_USER, ADD_ROLE, GRANT_STAFF) as this command.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--password", default=None)
        parser.add_argument("--email", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            _, created = user_create_or_update(
                username=options["name"], role=options["role"], password=options["password"], email=options["email"],
                actor=Actor.for_system("manage.py create_user"),
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        verb = "created" if created else "updated"
        self.stdout.write(f"{verb} user {options['name']} with role {options['role']}")
