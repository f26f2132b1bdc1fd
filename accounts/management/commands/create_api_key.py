from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiKey
from accounts.services import api_key_create
from core.actors import Actor
from core.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Create an API key with a role (READ, WRITE, ADMIN), or bound to a user (it then acts with the user's "
        "roles). The key is printed once, alone on the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--role", choices=ApiKey.Role.values)
        who.add_argument("--user", help="user name: the key acts as this user, with the user's roles")
        parser.add_argument("--rate-limit", type=int, default=10000, help="requests per minute (default 10000)")

    def handle(self, *args: Any, **options: Any) -> None:
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r}")
        try:
            key, raw = api_key_create(
                actor=Actor.for_system("manage.py create_api_key"),
                name=options["name"],
                role=options["role"] or ApiKey.Role.READ,
                user=user,
                rate_limit_per_min=options["rate_limit"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        acting = f"user {user.get_username()} and their roles" if user is not None else f"role {key.role}"
        self.stdout.write(f"created API key {key.name!r} (prefix ffk_{key.key_prefix}) acting with {acting}.")
        self.stdout.write("Store it now: it is shown only once.")
        self.stdout.write(raw)
