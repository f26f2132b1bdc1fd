from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.actors import Actor
from core.errors import ServiceError
from vehicles.services import vehicle_token_revoke


class Command(BaseCommand):
    help = (
        "Revoke a vehicle's token (audited as this command): it opens no new connection from the commit on, on "
        "every server. A new token: POST /api/v1/vehicles/{vin}/token/ or the vehicles admin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("vin")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            vehicle = vehicle_token_revoke(actor=Actor.for_system("manage.py revoke_vehicle_token"), vin=options["vin"])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"revoked the token of vehicle {vehicle.vin}.")
