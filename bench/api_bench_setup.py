"""Seed the API benchmark's database (run by bench/api_bench.py in a fresh database).

100 flags comparable to the Unleash peer's: a 50 % percentage rollout, a region IN [...]
attribute rule and a semantic-version rule; a registered vehicle; an ADMIN key. Prints the
key alone on the last line.
"""

from __future__ import annotations

import django


def main() -> None:
    django.setup()
    from accounts.services import api_key_create
    from core.actors import Actor
    from flags import services
    from vehicles.services import vehicle_upsert

    system = Actor.for_system("bench setup")
    vehicle_upsert(vin="KMHBENCH000000001", model="ev6", sw_version="2.5.0", region="eu-west")
    for i in range(100):
        key = f"bench.flag-{i:03d}"
        services.flag_create(actor=system, key=key, name=f"Bench flag {i}", type="boolean", default_value=False,
                             enabled=True)
        services.rule_create(actor=system, flag=key, type="percentage_rollout", priority=30,
                             conditions={"rollout_percentage": 50})
        services.rule_create(actor=system, flag=key, type="user_attribute", priority=20, conditions={
            "attribute": "region", "operator": "in", "values": ["eu-west", "eu-central", "us-east"]})
        services.rule_create(actor=system, flag=key, type="user_attribute", priority=10, conditions={
            "attribute": "sw_version", "operator": "semver_gte", "value": "2.0.0"})
    _, raw = api_key_create(actor=system, name="bench", role="ADMIN", rate_limit_per_min=1_000_000)
    print(raw)


if __name__ == "__main__":
    main()
