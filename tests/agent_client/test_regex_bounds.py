"""The ``regex`` operator is bounded: no pattern makes one evaluation cost more than ~1 ms.

Patterns that RE2 cannot run in linear time, or that are too big to run cheaply, are
refused when the rule is written (and again when a snapshot is compiled, on the vehicle
too); every accepted pattern, the worst ones included, evaluates within the budget on a
value at the length cap. The timings are medians of many evaluations through the full
evaluator path, each on a different value, so RE2's DFA cannot answer from a warm cache.
They are the thread's CPU time: the cost of the evaluation itself, which is what blocks an
event loop, without the time other processes on a shared machine take from it.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_client import Snapshot, regex
from agent_client.evaluator import CompiledFlag
from agent_client.regex import MAX_PATTERN_LENGTH, MAX_PROGRAM_SIZE, MAX_SUBJECT_LENGTH
from agent_client.rules import validate_rule

VIN = "KMHK381GFNU000001"
BUDGET_NS = 1_000_000  # 1 ms: the median evaluation of the worst accepted pattern must stay under it
RUNS = 61
EMOJI = "\U0001f600"  # four bytes in UTF-8: RE2 steps through bytes, so these are the costliest characters


def _flag(pattern: str) -> dict[str, Any]:
    return {
        "key": "bounded.regex",
        "type": "boolean",
        "default_value": False,
        "enabled": True,
        "safety_level": "ASIL_B",
        "environment": "production",
        "version": 1,
        "ttl_seconds": 600,
        "rules": [
            {
                "id": 1,
                "type": "user_attribute",
                "priority": 10,
                "enabled": True,
                "conditions": {"attribute": "code", "operator": "regex", "value": pattern},
                "variant": "enabled",
            }
        ],
    }


def _pattern_errors(pattern: object) -> list[str]:
    errors = validate_rule(
        flag_type="boolean",
        rule_type="user_attribute",
        conditions={"attribute": "code", "operator": "regex", "value": pattern},
    )
    return errors.get("conditions", [])


def _largest_accepted(template: str) -> str:
    """The template with the largest repetition count {K} that validation still accepts:
    the most expensive pattern of its family, whatever the caps are set to."""
    accepted = None
    for k in range(1, 1001):
        pattern = template.replace("K", str(k))
        if _pattern_errors(pattern):
            break
        accepted = pattern
    assert accepted is not None, template
    return accepted


def _median_evaluation_ns(pattern: str, alphabet: str) -> float:
    # Given the pattern compiled once, as a snapshot is, and values at the length cap
    flag = CompiledFlag(_flag(pattern))  # type: ignore[arg-type]
    assert flag.fixed is None, flag.compile_error
    rng = random.Random(f"{pattern}/{alphabet}")
    values = ["".join(rng.choice(alphabet) for _ in range(MAX_SUBJECT_LENGTH)) for _ in range(RUNS)]
    contexts = [{"code": value} for value in values]
    evaluate = flag.evaluate
    # When each value is evaluated once, timed alone
    timings = []
    for context in contexts:
        started = time.thread_time_ns()
        evaluate(VIN, context)
        timings.append(time.thread_time_ns() - started)
    return statistics.median(timings)


# Catastrophic for a backtracking engine (seconds to minutes on a few dozen characters)...
BACKTRACKING_CLASSICS = [
    r"(a+)+$",
    r"(a|a)*$",
    r"(a*)*b",
    r"(a|aa)+$",
    r"(x+x+)+y",
    r"(\w+\s?)*$",
    r"(.*a){20}",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",
]
# ...and, for RE2, the families whose cost per byte grows with the program (many threads
# alive at once, a new DFA state per byte), each at the largest size validation accepts.
LINEAR_WORST_FAMILIES = [
    "[ab]*a[ab]{K}",
    "a.{K}",
    "(?s).*a.{K}",
    "(?:[^a]|a)*a(?:[^a]|a){K}",
    "(?:a|\\x{1F600})*a(?:a|\\x{1F600}){K}",
    "(.*a){K}",
    "(?:a|.){K}z",
    "(?:(?:a{1,3}){1,3}){K}$",
    "a{K}",
]
ALPHABETS = {"a": "a", "ab": "ab", "a+emoji": "a" + EMOJI, "emoji": EMOJI, "a+é": "aé"}


@pytest.mark.parametrize("pattern", BACKTRACKING_CLASSICS)
def test_regex__backtracking_classic_at_length_cap__median_evaluation_under_1ms(pattern: str) -> None:
    # Given a pattern that would hang Python's re, accepted by validation (RE2 runs it in linear time)
    assert _pattern_errors(pattern) == []
    # Then on values at the length cap, of every alphabet, the median evaluation stays in budget
    medians = {name: _median_evaluation_ns(pattern, alphabet) for name, alphabet in ALPHABETS.items()}
    assert max(medians.values()) < BUDGET_NS, medians


@pytest.mark.parametrize("family", LINEAR_WORST_FAMILIES)
def test_regex__costliest_accepted_pattern_at_length_cap__median_evaluation_under_1ms(family: str) -> None:
    # Given the largest pattern of the family that validation accepts
    pattern = _largest_accepted(family)
    # Then on values at the length cap, of every alphabet, the median evaluation stays in budget
    medians = {name: _median_evaluation_ns(pattern, alphabet) for name, alphabet in ALPHABETS.items()}
    assert max(medians.values()) < BUDGET_NS, (pattern, medians)


def test_regex__classic_on_value_of_python_re_nightmare__matches_like_re_would() -> None:
    # Given (a+)+$ and "aaa...a!" (Python's re needs minutes for this), and "aaa...a"
    snapshot = Snapshot.from_dict({"version": 1, "flags": [_flag(r"^(a+)+$")]})  # type: ignore[typeddict-item]
    # Then the answers are the right ones, at once
    assert snapshot.evaluate("bounded.regex", VIN, {"code": "a" * 40 + "!"}).reason == "DEFAULT"
    assert snapshot.evaluate("bounded.regex", VIN, {"code": "a" * 40}).reason == "TARGETING_MATCH"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"(a)\1", "value is not a valid RE2 regular expression: invalid escape sequence: \\1"),
        (r"(?P<x>a)(?P=x)", "value is not a valid RE2 regular expression: invalid perl operator: (?P"),
        (r"EU(?=-)", "value is not a valid RE2 regular expression: invalid perl operator: (?="),
        (r"(?!US)..", "value is not a valid RE2 regular expression: invalid perl operator: (?!"),
        (r"(?<=EU-)\d", "value is not a valid RE2 regular expression: invalid perl operator: (?<="),
        (r"(?>a+)b", "value is not a valid RE2 regular expression: invalid perl operator: (?>"),
        (r"a++", "value is not a valid RE2 regular expression: bad repetition operator: ++"),
        (r"a{1000}{1000}", "value is not a valid RE2 regular expression: bad repetition operator: {1000}{1000}"),
        (r"a{1001}", "value is not a valid RE2 regular expression: invalid repetition size: {1001}"),
        (r"(a{100}){100}", "value is not a valid RE2 regular expression: invalid repetition size: {100}"),
        (r"EU\Z", "value is not a valid RE2 regular expression: invalid escape sequence: \\Z"),
        (r"\p{L}{100}", "value is too large: RE2 cannot compile it within its 1024 KiB memory limit"),
        (
            r"((a{1,10}){1,10}){1,10}",
            f"value is too complex: it compiles to 2003 RE2 instructions, at most {MAX_PROGRAM_SIZE} are allowed "
            "(use fewer or smaller counted repetitions {n,m} and narrower character classes)",
        ),
        (
            r"\p{L}",
            f"value is too complex: it compiles to 1206 RE2 instructions, at most {MAX_PROGRAM_SIZE} are allowed "
            "(use fewer or smaller counted repetitions {n,m} and narrower character classes)",
        ),
        (r"a\C*b", "value uses \\C (any byte), which is not allowed: use . (any character) instead"),
        (
            "x" * (MAX_PATTERN_LENGTH + 1),
            f"value is {MAX_PATTERN_LENGTH + 1} characters long; a pattern may have at most {MAX_PATTERN_LENGTH}",
        ),
    ],
)
def test_validate_rule__unbounded_or_unsupported_pattern__refused_naming_the_problem(
    pattern: str, message: str
) -> None:
    assert _pattern_errors(pattern) == [message]


@pytest.mark.parametrize(
    "pattern",
    [
        r"^EU-[A-Z]+-\d$",
        r"(?i)^(premium|n-line)$",
        r"\p{Greek}+",
        r"\\C",  # an escaped backslash, then C: a literal "\C", not the any-byte escape
        "x" * MAX_PATTERN_LENGTH,  # the longest literal: the program cap does not undercut the length cap
    ],
)
def test_validate_rule__bounded_pattern__accepted(pattern: str) -> None:
    assert _pattern_errors(pattern) == []


def test_compiled_flag__refused_pattern_in_snapshot__error_with_flag_default() -> None:
    # Given a snapshot (say, from an older server) whose rule has a pattern validation refuses
    flag = CompiledFlag(_flag(r"(a)\1"))  # type: ignore[arg-type]
    # Then the vehicle does not run it: the flag serves its default, as an error
    assert flag.evaluate(VIN, {"code": "aa"}) == ("bounded.regex", False, None, "ERROR", 1, "PARSE_ERROR")
    assert flag.compile_error is not None and "invalid escape sequence" in flag.compile_error


@pytest.mark.parametrize(
    ("length", "reason"),
    [(MAX_SUBJECT_LENGTH, "TARGETING_MATCH"), (MAX_SUBJECT_LENGTH + 1, "DEFAULT")],
)
def test_regex__value_longer_than_cap__does_not_match(length: int, reason: str) -> None:
    # Given a pattern that matches any value containing "a"
    flag = CompiledFlag(_flag("a"))  # type: ignore[arg-type]
    # Then a value at the cap matches and one character more does not, whatever it holds
    assert flag.evaluate(VIN, {"code": "a" * length}).reason == reason
    assert flag.evaluate(VIN, {"code": EMOJI * (length - 1) + "a"}).reason == reason


def test_regex__engine_missing__pattern_refused_naming_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a process where re2 could not be imported
    monkeypatch.setattr(regex, "_re2", None)
    # Then validation refuses what it cannot check, and a flag with a regex rule serves its default
    assert _pattern_errors("^EU-") == [f"value {regex.UNAVAILABLE}"]
    assert regex.available() is False
    flag = CompiledFlag(_flag("^EU-"))  # type: ignore[arg-type]
    assert flag.evaluate(VIN, {"code": "EU-WEST-1"}) == ("bounded.regex", False, None, "ERROR", 1, "PARSE_ERROR")


# A fresh interpreter where ``import re2`` fails, as on a vehicle image built without the
# google-re2 wheel: agent_client must import, evaluate every other flag, serve the default
# for a flag with a regex rule, keep a kill switch killed, and never fall back to ``re``.
_WITHOUT_RE2 = """
import json, sys
sys.modules["re2"] = None  # makes "import re2" raise ImportError
from agent_client import LocalFlags, Snapshot, regex
from agent_client.rules import validate_rule

def flag(key, *rules):
    return {"key": key, "type": "boolean", "default_value": False, "enabled": True, "safety_level": "ASIL_B",
            "environment": "production", "version": 2, "ttl_seconds": 600, "rules": list(rules)}

regex_rule = {"id": 1, "type": "user_attribute", "priority": 10, "enabled": True, "variant": "eu",
              "conditions": {"attribute": "market", "operator": "regex", "value": "^EU-"}}
whitelist = {"id": 2, "type": "vehicle_whitelist", "priority": 5, "enabled": True, "variant": "pilot",
             "conditions": {"vins": [VIN]}}
kill = {"id": 3, "type": "kill_switch", "priority": 1, "enabled": True, "variant": "enabled",
        "conditions": {"force_disabled": True, "reason": "FSR-7"}}
snapshot = Snapshot.from_dict({"version": 9, "flags": [
    flag("market.eu", regex_rule, whitelist), flag("market.killed", regex_rule, kill), flag("fleet.pilot", whitelist)]})
local = LocalFlags(snapshot, vin=VIN, context={"market": "EU-WEST-1"}, synced_at=0.0, clock=lambda: 1.0)
print(json.dumps({
    "available": regex.available(),
    "re_loaded_by_regex": "re" in vars(regex),
    "validation": validate_rule(flag_type="boolean", rule_type="user_attribute",
                                conditions=regex_rule["conditions"]),
    "evaluations": {key: local.evaluate(key).as_dict() for key in snapshot.flags},
    "compile_error": snapshot.flags["market.eu"].compile_error,
    "is_enabled": {key: local.is_enabled(key, True) for key in snapshot.flags},
}))
"""


def test_agent_client__re2_not_importable__regex_flag_serves_its_default_and_nothing_else_changes() -> None:
    repo_root = Path(regex.__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # Given a fresh interpreter in which re2 cannot be imported
    completed = subprocess.run(
        [sys.executable, "-E", "-c", f"VIN = {VIN!r}\n" + _WITHOUT_RE2],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then agent_client imports and evaluates without raising
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["available"] is False
    assert report["re_loaded_by_regex"] is False  # no fallback to the backtracking engine
    # the server-side check refuses what it cannot check
    assert report["validation"] == {"conditions": [f"value {regex.UNAVAILABLE}"]}
    # the flag with a regex rule serves its default, as an error, even for a whitelisted VIN
    assert report["evaluations"]["market.eu"] == {
        "flag_key": "market.eu",
        "value": False,
        "variant": None,
        "reason": "ERROR",
        "version": 2,
        "error_code": "PARSE_ERROR",
    }
    assert regex.UNAVAILABLE in report["compile_error"]
    # a kill switch still holds, and flags without regex rules are untouched
    assert report["evaluations"]["market.killed"]["reason"] == "KILL_SWITCH"
    assert report["evaluations"]["fleet.pilot"]["reason"] == "TARGETING_MATCH"
    assert report["is_enabled"] == {"market.eu": False, "market.killed": False, "fleet.pilot": True}


def test_regex__value_with_lone_surrogate__does_not_match_and_does_not_raise() -> None:
    # Given a context value JSON can carry but UTF-8 cannot encode
    value = json.loads('"EU-\\ud800"')
    flag = CompiledFlag(_flag("^EU-"))  # type: ignore[arg-type]
    # Then the rule does not match, and the evaluation does not raise
    assert flag.evaluate(VIN, {"code": value}).reason == "DEFAULT"


def test_validate_rule__pattern_with_lone_surrogate__refused() -> None:
    assert _pattern_errors(json.loads('"^EU-\\ud800"')) == [
        "value holds a character that is not valid Unicode (a lone surrogate)"
    ]
