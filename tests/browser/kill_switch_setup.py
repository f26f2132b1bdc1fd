"""Data for the kill-switch browser test, made through the services in the live server's own
(fresh SQLite) database before daphne starts. Prints one JSON line: the flag's id, the VIN and
the vehicle's token (shown once, as registration shows it)."""

from __future__ import annotations

import json

import django


def main() -> None:
    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from core.actors import Actor
    from flags import services
    from vehicles.services import vehicle_register

    system = Actor.for_system("browser-test setup")
    user = get_user_model().objects.create_user("sam-safety", password="test-password", is_staff=True)
    user.groups.add(Group.objects.get(name="SAFETY"))
    flag = services.flag_create(actor=system, key="nav.route-v3", name="Route engine v3", type="boolean",
                                default_value=False, enabled=True, safety_level="ASIL_B")
    vehicle, token = vehicle_register(actor=system, vin="KMHBR0WSER0000001", model="ev6", sw_version="2.9.1",
                                      region="eu-west")
    print(json.dumps({"flag_id": flag.pk, "vin": vehicle.vin, "token": token}))


if __name__ == "__main__":
    main()
