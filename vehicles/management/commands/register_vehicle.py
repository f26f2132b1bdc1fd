from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.actors import Actor
from core.environments import Environment
from core.errors import ServiceError
from vehicles.services import vehicle_register


def one_line(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


class Command(BaseCommand):
    help = (
        "Register a vehicle and issue its token (audited as this command). The token is printed once, alone on "
        "the last line; only its hash is kept. A VIN registered already is refused: revoke_vehicle_token and the "
        "API's POST vehicles/{vin}/token/ handle tokens of registered vehicles."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("vin", help="17 characters of A-H, J-N, P, R-Z and 0-9")
        parser.add_argument("--model", required=True)
        parser.add_argument("--sw-version", required=True, help="a semantic version, like 2.5.0")
        parser.add_argument("--region", required=True)
        parser.add_argument("--environment", default=Environment.PRODUCTION,
                            help=f"which flags it receives: {', '.join(Environment.values)} (default production)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            vehicle, token = vehicle_register(
                actor=Actor.for_system("manage.py register_vehicle"),
                vin=options["vin"],
                model=options["model"],
                sw_version=options["sw_version"],
                region=options["region"],
                environment=options["environment"],
            )
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from exc
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"registered vehicle {vehicle.vin} ({vehicle.model} {vehicle.sw_version}, "
                          f"{vehicle.region}, {vehicle.environment}).")
        self.stdout.write("Store its token now: it is shown only once.")
        self.stdout.write(token)
