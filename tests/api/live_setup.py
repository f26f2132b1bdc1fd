"""Data for the live-server tests (run in a fresh SQLite database before daphne starts).

Prints the ADMIN API key alone on the last line.
"""

from __future__ import annotations

import django


def main() -> None:
    django.setup()
    from accounts.services import api_key_create
    from core.actors import Actor
    from flags import services
    from vehicles.models import Vehicle

    system = Actor.for_system("live-test setup")
    Vehicle.objects.create(vin="KMHXX00XXXX000001", model="ev6", sw_version="2.9.1", region="us-east")
    services.flag_create(actor=system, key="ui.dark-mode", name="Dark mode", type="boolean", default_value=False,
                         enabled=True)
    services.rule_create(actor=system, flag="ui.dark-mode", type="vehicle_whitelist",
                         conditions={"vins": ["KMHXX00XXXX000001"]}, variant="fleet")
    services.flag_create(actor=system, key="nav.engine", name="Route engine", type="string",
                         default_value="classic", enabled=True)
    services.rule_create(actor=system, flag="nav.engine", type="vehicle_target", value="graph-v2", variant="new",
                         conditions={"models": ["ev6"], "regions": ["us-east"]})
    services.flag_create(actor=system, key="battery.minutes", name="Preconditioning", type="number",
                         default_value=20, enabled=True)
    services.rule_create(actor=system, flag="battery.minutes", type="user_attribute", value=35, variant="cold",
                         conditions={"attribute": "climate", "operator": "in", "values": ["arctic"]})
    services.flag_create(actor=system, key="adas.tuning", name="Tuning", type="json",
                         default_value={"gain": 1.0}, enabled=False)
    services.flag_create(actor=system, key="brake.v2", name="Brake v2", type="boolean", default_value=False,
                         enabled=True, safety_level="ASIL_B")
    services.kill_switch_engage(actor=system, flag="brake.v2", reason="recall 26-04")
    _, raw = api_key_create(actor=system, name="live-admin", role="ADMIN")
    print(raw)


if __name__ == "__main__":
    main()
