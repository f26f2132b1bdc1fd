"""Per-call local evaluation time of two peer SDKs on a flag equivalent to FleetFlag's.

The flag: a gradual rollout of 50 % sticky by vehicle id (VIN), plus two constraints,
``region IN ["eu-west", "eu-central", "us-east"]`` and a semantic-version floor of 2.0.0.

* ``UnleashClient`` 6.x: ``flexibleRollout`` (rollout 50, stickiness ``default``,
  groupId = flag name) with an ``IN`` constraint on ``region`` and ``SEMVER_GT 2.0.0``
  on ``sw_version`` (custom context fields), bootstrapped offline from a features
  document built here.  Timed: ``client.is_enabled(flag, context)``.
* ``flagsmith-flag-engine`` 11: one feature (off in the environment) and one segment
  whose override turns it on; the segment's rules are ``region IN [...]``,
  ``sw_version GREATER_THAN 2.0.0:semver`` and a ``PERCENTAGE_SPLIT`` of 50.  Timed:
  ``flag_engine.engine.get_evaluation_result`` for one identity, building that
  identity's evaluation context included (as an SDK does on every call).

Boundary: Unleash has no ``SEMVER_GTE``, so ``SEMVER_GT``/``GREATER_THAN`` (the default,
as in the measurements of /work/shared/notes/peers.md) differ from ``>= 2.0.0`` for
exactly ``2.0.0``; ``SEMVER_INCLUSIVE = True`` switches to the exact equivalents
(Unleash ``SEMVER_LT 2.0.0`` inverted, Flagsmith ``GREATER_THAN_INCLUSIVE``).  Both
peers only compare full ``MAJOR.MINOR.PATCH`` versions: ``"2.5"``, ``"3"`` or
``"v2.5.0"`` never match (Flagsmith even turns ``"2.5"`` into the float 2.5).

Benchmark extras only (never runtime dependencies): stdlib + the two peer packages.

Run: ``cd /work/main && .venv/bin/python bench/peers_eval.py``
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from itertools import cycle, islice
from typing import Any

FLAG = "fleet-rollout"
REGIONS: list[str] = ["eu-west", "eu-central", "us-east"]
MIN_VERSION = "2.0.0"
ROLLOUT_PERCENT = 50
FIXED_VIN = "1FTFW1E50NF000001"  # inside the 50 % for both peers (asserted in _sanity)
DEFAULT_REGION = "eu-west"
DEFAULT_SW_VERSION = "2.5.0"
N_RANDOM_VINS = 1000

#: False: the operators of the brief (strict ``>``); True: exact ``>=`` equivalents.
SEMVER_INCLUSIVE = False

_VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # VINs never use I, O or Q


def make_random_vins(n: int = N_RANDOM_VINS, seed: int = 20261) -> list[str]:
    """``n`` random 17-character VINs, the same ones for a given seed."""
    rng = random.Random(seed)
    return ["".join(rng.choices(_VIN_ALPHABET, k=17)) for _ in range(n)]


def _vins(random_vins: bool) -> list[str]:
    """What a timing run cycles through: FIXED_VIN alone, or 1000 random VINs (about
    half of them outside the rollout)."""
    return make_random_vins() if random_vins else [FIXED_VIN]


# ----------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------


def median_per_call_us(
    call: Callable[[Any], object], args: Sequence[Any], repeats: int, number: int
) -> float:
    """Median over ``repeats`` runs of the per-call time (µs) of ``number`` calls.

    Calls cycle through ``args``, one argument per call, fed from a pre-built list.
    As ``timeit`` does, the garbage collector is off while a run is timed.
    """
    if repeats < 1 or number < 1:
        raise ValueError("repeats and number must be >= 1")
    for arg in islice(cycle(args), min(number, 2000)):  # warm-up
        call(arg)
    per_call_ns: list[float] = []
    gc_was_enabled = gc.isenabled()
    try:
        for _ in range(repeats):
            feed = list(islice(cycle(args), number))
            gc.collect()
            gc.disable()
            t0 = time.perf_counter_ns()
            for arg in feed:
                call(arg)
            elapsed = time.perf_counter_ns() - t0
            if gc_was_enabled:
                gc.enable()
            per_call_ns.append(elapsed / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(per_call_ns) / 1000.0


# ----------------------------------------------------------------------------------
# Unleash
# ----------------------------------------------------------------------------------


def unleash_features_document() -> dict[str, Any]:
    """The ``/api/client/features`` document (format version 2) with the one flag."""
    semver_constraint: dict[str, Any] = {
        "contextName": "sw_version",
        "operator": "SEMVER_LT" if SEMVER_INCLUSIVE else "SEMVER_GT",
        "value": MIN_VERSION,
        "inverted": SEMVER_INCLUSIVE,
        "caseInsensitive": False,
    }
    region_constraint: dict[str, Any] = {
        "contextName": "region",
        "operator": "IN",
        "values": list(REGIONS),
        "inverted": False,
        "caseInsensitive": False,
    }
    return {
        "version": 2,
        "features": [
            {
                "name": FLAG,
                "type": "release",
                "project": "default",
                "enabled": True,
                "stale": False,
                "impressionData": False,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {
                            "rollout": str(ROLLOUT_PERCENT),
                            "stickiness": "default",
                            "groupId": FLAG,
                        },
                        "constraints": [region_constraint, semver_constraint],
                    }
                ],
                "variants": [],
            }
        ],
    }


def make_unleash_client() -> Any:
    """An ``UnleashClient`` evaluating locally from the bootstrapped document.

    No network, no disk, no thread:

    * the cache is an in-memory ``BaseCache`` marked ``bootstrapped`` (the default
      ``FileCache`` would write under the user's cache directory), so the constructor
      loads the features into the engine through its ``BootstrapConnector``;
    * ``initialize_client()`` is never called: it is what registers, polls, sends
      metrics and starts APScheduler's ``BackgroundScheduler`` thread (even with
      ``fetch_toggles=False``, for the offline connector's reload job).  Registration
      and metrics are disabled anyway and the URL is never contacted;
    * do not call ``destroy()`` on it: it would shut down a scheduler that never
      started and log a warning; there is nothing to tear down.
    """
    from UnleashClient import UnleashClient
    from UnleashClient.cache import BaseCache
    from UnleashClient.constants import FEATURES_URL
    from UnleashClient.utils import InstanceAllowType

    class _MemoryCache(BaseCache):
        def __init__(self, features: dict[str, Any]) -> None:
            self._data: dict[str, Any] = {FEATURES_URL: json.dumps(features)}
            self.bootstrapped = True

        def set(self, key: str, value: Any) -> None:
            self._data[key] = value

        def mset(self, data: dict[str, Any]) -> None:
            self._data.update(data)

        def get(self, key: str, default: Any = None) -> Any:
            return self._data.get(key, default)

        def exists(self, key: str) -> bool:
            return key in self._data

        def destroy(self) -> None:
            self._data.clear()

    threads_before = threading.active_count()
    client = UnleashClient(
        url="http://127.0.0.1:9/api",  # discard port; never contacted
        app_name="fleetflag-bench",
        instance_id="peers-eval",
        disable_metrics=True,
        disable_registration=True,
        cache=_MemoryCache(unleash_features_document()),
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
    )
    # The engine swallows every error and answers False, and a feature it cannot
    # parse is only logged: check the flag really got in.
    if FLAG not in client.feature_definitions():
        raise RuntimeError("UnleashClient did not load the bootstrapped flag")
    if threading.active_count() != threads_before:
        raise RuntimeError("UnleashClient started a background thread")
    return client


def _unleash_context(vin: str, region: str, sw_version: str) -> dict[str, Any]:
    return {"userId": vin, "properties": {"region": region, "sw_version": sw_version}}


def unleash_is_enabled_us(
    repeats: int = 7, number: int = 20000, random_vins: bool = False
) -> float:
    """Median per-call time (µs) of ``UnleashClient.is_enabled`` on the flag, for
    region eu-west and sw_version 2.5.0, with FIXED_VIN or 1000 random VINs."""
    client = make_unleash_client()
    is_enabled = client.is_enabled
    contexts = [
        _unleash_context(vin, DEFAULT_REGION, DEFAULT_SW_VERSION)
        for vin in _vins(random_vins)
    ]

    def call(context: dict[str, Any]) -> bool:
        return is_enabled(FLAG, context)

    if not any(call(context) for context in contexts):
        raise RuntimeError("Unleash evaluates the flag to False for every VIN")
    return median_per_call_us(call, contexts, repeats, number)


# ----------------------------------------------------------------------------------
# Flagsmith flag engine
# ----------------------------------------------------------------------------------

_FS_ENVIRONMENT_KEY = "fleetflag-bench-env"
_FS_SEGMENT_KEY = "1"


def flagsmith_environment_context() -> dict[str, Any]:
    """The identity-less part of flag_engine 11's ``EvaluationContext``.

    The segment has the shape Flagsmith serves for a segment made in its UI: one
    ``ALL`` rule whose sub-rules are ``ANY`` groups of one condition each.  The split
    has an empty property, so it hashes ``[segment key, identity key]`` (md5).
    """
    feature_off: dict[str, Any] = {
        "key": "101",
        "name": FLAG,
        "enabled": False,
        "value": None,
    }
    semver_operator = "GREATER_THAN_INCLUSIVE" if SEMVER_INCLUSIVE else "GREATER_THAN"
    conditions: list[dict[str, Any]] = [
        {"property": "region", "operator": "IN", "value": list(REGIONS)},
        {
            "property": "sw_version",
            "operator": semver_operator,
            "value": f"{MIN_VERSION}:semver",
        },
        {"property": "", "operator": "PERCENTAGE_SPLIT", "value": str(ROLLOUT_PERCENT)},
    ]
    return {
        "environment": {"key": _FS_ENVIRONMENT_KEY, "name": "bench"},
        "features": {FLAG: feature_off},
        "segments": {
            _FS_SEGMENT_KEY: {
                "key": _FS_SEGMENT_KEY,
                "name": "fleet-rollout-segment",
                "rules": [
                    {
                        "type": "ALL",
                        "rules": [
                            {"type": "ANY", "conditions": [c]} for c in conditions
                        ],
                    }
                ],
                "overrides": [{**feature_off, "enabled": True, "priority": 0}],
            }
        },
    }


def make_flagsmith_evaluator() -> Callable[[str, dict[str, Any]], bool]:
    """``evaluate(vin, traits) -> enabled`` through ``get_evaluation_result``."""
    from flag_engine.engine import get_evaluation_result

    base = flagsmith_environment_context()

    def evaluate(vin: str, traits: dict[str, Any]) -> bool:
        context: Any = {**base, "identity": {"identifier": vin, "traits": traits}}
        return bool(get_evaluation_result(context)["flags"][FLAG]["enabled"])

    return evaluate


def flagsmith_engine_us(
    repeats: int = 7, number: int = 20000, random_vins: bool = False
) -> float:
    """Median per-call time (µs) of flag_engine 11 evaluating the flag for one
    identity (region eu-west, sw_version 2.5.0), FIXED_VIN or 1000 random VINs."""
    evaluate = make_flagsmith_evaluator()
    traits = {"region": DEFAULT_REGION, "sw_version": DEFAULT_SW_VERSION}
    vins = _vins(random_vins)

    def call(vin: str) -> bool:
        return evaluate(vin, traits)

    if not any(call(vin) for vin in vins):
        raise RuntimeError("flag_engine evaluates the flag to False for every VIN")
    return median_per_call_us(call, vins, repeats, number)


# ----------------------------------------------------------------------------------
# Sanity checks and report
# ----------------------------------------------------------------------------------

Evaluate = Callable[[str, str, str], bool]  # (vin, region, sw_version) -> enabled


def enabled_fraction(
    evaluate: Evaluate,
    vins: Sequence[str],
    region: str = DEFAULT_REGION,
    sw_version: str = DEFAULT_SW_VERSION,
) -> float:
    """Share of ``vins`` for which the flag is on."""
    return sum(bool(evaluate(vin, region, sw_version)) for vin in vins) / len(vins)


def _sanity() -> None:
    """Both peers must really evaluate the rule: about 50 % on, sticky, 0 % when a
    constraint fails."""
    client = make_unleash_client()
    fs_evaluate = make_flagsmith_evaluator()

    def unleash(vin: str, region: str, sw_version: str) -> bool:
        return bool(client.is_enabled(FLAG, _unleash_context(vin, region, sw_version)))

    def flagsmith(vin: str, region: str, sw_version: str) -> bool:
        return fs_evaluate(vin, {"region": region, "sw_version": sw_version})

    peers: dict[str, Evaluate] = {"UnleashClient": unleash, "flag_engine": flagsmith}
    vins = make_random_vins()
    for name, evaluate in peers.items():
        on = enabled_fraction(evaluate, vins)
        us_east = enabled_fraction(evaluate, vins, region="us-east")
        ap_south = enabled_fraction(evaluate, vins, region="ap-south")
        old_sw = enabled_fraction(evaluate, vins, sw_version="1.9.0")
        at_min = enabled_fraction(evaluate, vins, sw_version=MIN_VERSION)
        print(
            f"{name:13s} on for {on:6.1%} of {len(vins)} VINs (eu-west, 2.5.0);"
            f" us-east {us_east:.1%}, ap-south {ap_south:.1%},"
            f" sw 1.9.0 {old_sw:.1%}, sw {MIN_VERSION} {at_min:.1%}"
        )
        assert 0.45 <= on <= 0.55, f"{name}: {on:.1%} on, expected about 50 %"
        assert us_east == on, f"{name}: the bucket depends on the region"
        assert ap_south == 0.0, f"{name}: region constraint not applied"
        assert old_sw == 0.0, f"{name}: semver constraint not applied"
        assert at_min == (on if SEMVER_INCLUSIVE else 0.0), f"{name}: semver bound"
        first = [evaluate(v, DEFAULT_REGION, DEFAULT_SW_VERSION) for v in vins[:200]]
        again = [evaluate(v, DEFAULT_REGION, DEFAULT_SW_VERSION) for v in vins[:200]]
        assert first == again, f"{name}: not sticky"
        assert evaluate(FIXED_VIN, DEFAULT_REGION, DEFAULT_SW_VERSION), (
            f"{name}: FIXED_VIN is outside the rollout"
        )


def main() -> None:
    _sanity()
    threads = threading.active_count()
    timings: dict[str, Callable[..., float]] = {
        "UnleashClient.is_enabled": unleash_is_enabled_us,
        "flag_engine get_evaluation_result": flagsmith_engine_us,
    }
    print("median per call, µs                 fixed VIN   random VINs")
    for name, measure in timings.items():
        fixed = measure(random_vins=False)
        rand = measure(random_vins=True)
        print(f"{name:35s} {fixed:9.1f}   {rand:11.1f}")
    assert threading.active_count() == threads, "a peer left a thread running"


if __name__ == "__main__":
    main()
