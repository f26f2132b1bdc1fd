"""Per-call cost of FleetFlag's evaluator, on the server and on the vehicle, next to two peers.

Figures (each the median of REPEATS timed runs, ``perf_counter_ns``, the garbage collector
off while a run is timed, as ``timeit`` does):

1. server: ``Snapshot.evaluate_all`` of 100 flags x 5 rules (whitelist of 50 VINs,
   vehicle_target models + sw range + regions, user_attribute ``in``, a 50 % rollout with
   two variants, a lower-priority 20 % rollout) for 1000 pre-generated random vehicles;
   reported per call and per flag;
2. vehicle hot path: ``LocalFlags.is_enabled(key)`` for the vehicle's own VIN;
3. vehicle, extra context: ``LocalFlags.evaluate(key, context={...})``, which is not
   served from the precomputed results but evaluated in full;
4. the flag of ``bench/peers_eval.py`` (gradual rollout 50 % + region IN + semver floor)
   evaluated in full by FleetFlag, by ``UnleashClient`` and by ``flagsmith-flag-engine``,
   in this same run, so the ratios compare like with like on one machine.

Targets checked at the end: hot path <= 1 µs and >= 50x faster than UnleashClient;
server <= 10 µs per flag. Exit status 1 when one fails.

Run: ``.venv/bin/python bench/eval_bench.py`` (peers from requirements-bench.txt, which
``make`` installs; without them their lines say so and the ratio target is skipped).
"""

from __future__ import annotations

import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # agent_client, when run as a script from anywhere

import peers_eval  # noqa: E402 - bench/ is sys.path[0] when run as a script

from agent_client import LocalFlags, Snapshot  # noqa: E402

REPEATS = 7
N_FLAGS = 100
N_VEHICLES = 1000
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # VINs never use I, O or Q

MODELS = ["ioniq5", "ioniq6", "kona", "ev9", "niro"]
SW_VERSIONS = ["2.4.0", "2.5.3", "2.7.1", "3.0.0"]
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-east"]
TRIMS = ["base", "comfort", "premium", "n-line"]

HOT_PATH_MAX_US = 1.0
HOT_PATH_MIN_RATIO = 50.0
SERVER_MAX_US_PER_FLAG = 10.0


# -- timing ---------------------------------------------------------------------------------


def per_call_ns(call: Callable[[Any], object], args: Sequence[Any], *, number: int, repeats: int = REPEATS) -> float:
    """Median time per call (ns): the same timing loop the peers are measured with
    (``peers_eval.median_per_call_us``: pre-built inputs, warm-up, gc off while timed)."""
    return peers_eval.median_per_call_us(call, args, repeats, number) * 1000.0


# -- data -------------------------------------------------------------------------------------


def random_vins(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(VIN_ALPHABET, k=17)) for _ in range(n)]


def server_flags(rng: random.Random) -> list[dict[str, Any]]:
    """100 boolean flags of 5 rules each, in snapshot JSON (as flags.snapshots.flag_to_dict)."""
    flags = []
    for i in range(N_FLAGS):
        base = i * 10
        rules: list[dict[str, Any]] = [
            {
                "id": base + 1,
                "type": "vehicle_whitelist",
                "priority": 50,
                "enabled": True,
                "conditions": {"vins": random_vins(rng, 50)},
                "variant": "pilot",
            },
            {
                "id": base + 2,
                "type": "vehicle_target",
                "priority": 40,
                "enabled": True,
                "conditions": {
                    "models": rng.sample(MODELS, 2),
                    "sw_version": ">= 2.5.0, < 3",
                    "regions": rng.sample(REGIONS, 2),
                },
                "variant": "fleet",
            },
            {
                "id": base + 3,
                "type": "user_attribute",
                "priority": 30,
                "enabled": True,
                "conditions": {"attribute": "trim", "operator": "in", "values": rng.sample(TRIMS, 2)},
                "variant": "trim",
            },
            {
                "id": base + 4,
                "type": "percentage_rollout",
                "priority": 20,
                "enabled": True,
                "conditions": {
                    "rollout_percentage": 50,
                    "sticky": True,
                    "variants": [
                        {"key": "control", "weight": 50, "value": False},
                        {"key": "treatment", "weight": 50, "value": True},
                    ],
                },
                "variant": "experiment",
            },
            {
                "id": base + 5,
                "type": "percentage_rollout",
                "priority": 10,
                "enabled": True,
                "conditions": {"rollout_percentage": 20, "sticky": True},
                "variant": "canary",
            },
        ]
        flags.append(
            {
                "key": f"fleet.feature-{i:03d}",
                "type": "boolean",
                "default_value": False,
                "enabled": True,
                "safety_level": "NON_CRITICAL",
                "environment": "production",
                "version": 1,
                "ttl_seconds": 604800,
                "rules": rules,
            }
        )
    return flags


def random_vehicles(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            vin,
            {
                "model": rng.choice(MODELS),
                "sw_version": rng.choice(SW_VERSIONS),
                "region": rng.choice(REGIONS),
                "trim": rng.choice(TRIMS),
            },
        )
        for vin in random_vins(rng, N_VEHICLES)
    ]


def peer_equivalent_flag() -> dict[str, Any]:
    """peers_eval's flag in FleetFlag's rule language.

    Rules are alternatives tried by priority, so the peers' "rollout AND region AND
    version" is written as two exclusions served false, then the rollout: outside the
    regions -> false; version below the floor -> false; else 50 % -> true. With region
    and sw_version present (as in the bench) that is the same decision.
    """
    # peers_eval compares strictly (> 2.0.0) unless SEMVER_INCLUSIVE: exclude the complement.
    below_floor = f"< {peers_eval.MIN_VERSION}" if peers_eval.SEMVER_INCLUSIVE else f"<= {peers_eval.MIN_VERSION}"
    return {
        "key": peers_eval.FLAG,
        "type": "boolean",
        "default_value": False,
        "enabled": True,
        "safety_level": "NON_CRITICAL",
        "environment": "production",
        "version": 1,
        "ttl_seconds": 604800,
        "rules": [
            {
                "id": 1,
                "type": "user_attribute",
                "priority": 30,
                "enabled": True,
                "conditions": {"attribute": "region", "operator": "not_in", "values": list(peers_eval.REGIONS)},
                "variant": "other-region",
                "value": False,
            },
            {
                "id": 2,
                "type": "vehicle_target",
                "priority": 20,
                "enabled": True,
                "conditions": {"sw_version": below_floor},
                "variant": "old-software",
                "value": False,
            },
            {
                "id": 3,
                "type": "percentage_rollout",
                "priority": 10,
                "enabled": True,
                "conditions": {"rollout_percentage": peers_eval.ROLLOUT_PERCENT, "sticky": True},
                "variant": "rollout",
            },
        ],
    }


# -- measurements -----------------------------------------------------------------------------


def check_peer_equivalent(snapshot: Snapshot) -> None:
    """Our version of the peers' flag must decide like theirs (same checks as peers_eval)."""

    def ours(vin: str, region: str, sw_version: str) -> bool:
        return bool(snapshot.evaluate(peers_eval.FLAG, vin, {"region": region, "sw_version": sw_version}).value)

    vins = peers_eval.make_random_vins()
    on = peers_eval.enabled_fraction(ours, vins)
    assert 0.45 <= on <= 0.55, f"FleetFlag: {on:.1%} on, expected about 50 %"
    assert peers_eval.enabled_fraction(ours, vins, region="us-east") == on, "bucket depends on the region"
    assert peers_eval.enabled_fraction(ours, vins, region="ap-south") == 0.0, "region exclusion not applied"
    assert peers_eval.enabled_fraction(ours, vins, sw_version="1.9.0") == 0.0, "version floor not applied"
    at_floor = peers_eval.enabled_fraction(ours, vins, sw_version=peers_eval.MIN_VERSION)
    assert at_floor == (on if peers_eval.SEMVER_INCLUSIVE else 0.0), "version floor boundary"


def measure_peers(number: int) -> dict[str, tuple[float, float] | str]:
    """UnleashClient and flag_engine, fixed VIN and random VINs, µs per call."""
    results: dict[str, tuple[float, float] | str] = {}
    measures: dict[str, Callable[..., float]] = {
        "UnleashClient.is_enabled": peers_eval.unleash_is_enabled_us,
        "flag_engine get_evaluation_result": peers_eval.flagsmith_engine_us,
    }
    for name, measure in measures.items():
        try:
            fixed = measure(repeats=REPEATS, number=number, random_vins=False)
            rand = measure(repeats=REPEATS, number=number, random_vins=True)
        except ImportError as exc:
            results[name] = f"not installed ({exc.name}): pip install -r requirements-bench.txt"
            continue
        results[name] = (fixed, rand)
    return results


def fmt_us(us: float) -> str:
    return f"{us:.3f} µs" if us < 10 else f"{us:.1f} µs"


def main() -> int:
    started = time.perf_counter()
    rng = random.Random(20261)
    flags = server_flags(rng)
    vehicles = random_vehicles(rng)
    snapshot = Snapshot.from_dict({"environment": "production", "version": 1, "flags": flags})
    keys = list(snapshot.flags)
    assert len(keys) == N_FLAGS and all(flag.fixed is None for flag in snapshot.flags.values())

    print(f"FleetFlag evaluator bench: Python {platform.python_version()} on {platform.machine()} {platform.system()}")
    print(f"median of {REPEATS} timed runs per figure; gc off while timed; calls cycle through pre-built inputs")
    print()

    def noop(_arg: object) -> None:
        return None

    noop_ns = per_call_ns(noop, keys, number=200_000)

    # (1) server: every flag of the snapshot for one vehicle per call.
    evaluate_all = snapshot.evaluate_all
    server_ns = per_call_ns(lambda vehicle: evaluate_all(vehicle[0], vehicle[1]), vehicles, number=1000)
    server_per_flag_us = server_ns / N_FLAGS / 1000

    # (2) and (3) vehicle: its own VIN and base context, results precomputed at load().
    own_vin, own_context = vehicles[0]
    local = LocalFlags(snapshot, vin=own_vin, context=own_context)
    hot_ns = per_call_ns(local.is_enabled, keys, number=200_000)
    extra = {"driver_profile": "standard"}
    local_evaluate = local.evaluate
    full_ns = per_call_ns(lambda key: local_evaluate(key, context=extra), keys, number=50_000)

    # (4) the peers' flag, full evaluation, no cache.
    peer_snapshot = Snapshot.from_dict({"flags": [peer_equivalent_flag()]})
    check_peer_equivalent(peer_snapshot)
    peer_context = {"region": peers_eval.DEFAULT_REGION, "sw_version": peers_eval.DEFAULT_SW_VERSION}
    peer_evaluate = peer_snapshot.evaluate
    flag_key = peers_eval.FLAG
    ours_fixed_ns = per_call_ns(
        lambda vin: peer_evaluate(flag_key, vin, peer_context), [peers_eval.FIXED_VIN], number=50_000
    )
    ours_random_ns = per_call_ns(
        lambda vin: peer_evaluate(flag_key, vin, peer_context), peers_eval.make_random_vins(), number=50_000
    )
    peers = measure_peers(number=5000)

    width = 74
    print(f"{'what':{width}s} {'per call':>11s}  {'per flag':>11s}")
    rows = [
        (
            f"(1) server  Snapshot.evaluate_all: {N_FLAGS} flags x 5 rules, {N_VEHICLES} random VINs",
            fmt_us(server_ns / 1000),
            fmt_us(server_per_flag_us),
        ),
        ("(2) vehicle LocalFlags.is_enabled(key), own VIN (the hot path)", fmt_us(hot_ns / 1000), ""),
        ("(3) vehicle LocalFlags.evaluate(key, context={...}): full evaluation", fmt_us(full_ns / 1000), ""),
        ("    reference: a no-op Python call in the same timing loop", fmt_us(noop_ns / 1000), ""),
    ]
    for label, per_call, per_flag in rows:
        print(f"{label:{width}s} {per_call:>11s}  {per_flag:>11s}".rstrip())
    print()
    print("(4) one flag: rollout 50 % + region IN + semver floor; full evaluation, no cache")
    print(f"    {'':{width - 4}s} {'fixed VIN':>11s}  {'random VINs':>11s}  {'vs FleetFlag':>12s}")
    ours_random_us = ours_random_ns / 1000
    label = "FleetFlag Snapshot.evaluate"
    print(f"    {label:{width - 4}s} {fmt_us(ours_fixed_ns / 1000):>11s}  {fmt_us(ours_random_us):>11s}  {'1.0x':>12s}")
    for name, result in peers.items():
        if isinstance(result, str):
            print(f"    {name:{width - 4}s} {result}")
        else:
            fixed, rand = result
            ratio_text = f"{rand / ours_random_us:.1f}x"
            print(f"    {name:{width - 4}s} {fmt_us(fixed):>11s}  {fmt_us(rand):>11s}  {ratio_text:>12s}")
    print()

    hot_us = hot_ns / 1000
    targets: list[tuple[str, str, bool | None]] = [
        (f"hot path is_enabled <= {HOT_PATH_MAX_US:g} µs", f"{hot_us:.3f} µs", hot_us <= HOT_PATH_MAX_US),
    ]
    unleash = peers["UnleashClient.is_enabled"]
    if isinstance(unleash, tuple):
        ratio = unleash[0] / hot_us
        targets.append(
            (
                f"hot path >= {HOT_PATH_MIN_RATIO:g}x faster than UnleashClient.is_enabled (fixed VIN)",
                f"{ratio:.0f}x ({unleash[0]:.1f} µs / {hot_us:.3f} µs)",
                ratio >= HOT_PATH_MIN_RATIO,
            )
        )
    else:
        targets.append(("hot path >= 50x faster than UnleashClient.is_enabled", "UnleashClient missing", None))
    targets.append(
        (
            f"server <= {SERVER_MAX_US_PER_FLAG:g} µs per flag",
            f"{server_per_flag_us:.2f} µs",
            server_per_flag_us <= SERVER_MAX_US_PER_FLAG,
        )
    )
    print("targets")
    for what, figure, ok in targets:
        verdict = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        print(f"  {verdict}  {what:76s} {figure}")
    print(f"\n(bench took {time.perf_counter() - started:.0f} s)")
    return 0 if all(ok is not False for _, _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
