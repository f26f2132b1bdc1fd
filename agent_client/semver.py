"""Semantic versions and version ranges, as vehicles report them.

Versions are ``MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]`` with an optional leading
``v``; missing components count as 0. Ordering follows SemVer 2.0.0: a pre-release
sorts before its release, build metadata is ignored.

A range is comparators joined by commas (all must hold): ``">= 2.5.0, < 3"``.
Comparators: ``>= > <= < == !=``; a bare version means ``==``.

Bounded on purpose, since a version may come from a caller's context: a string longer
than ``MAX_VERSION_LENGTH`` characters is not a version (parsing it would cost time, and
``int`` refuses numbers of more than 4300 digits with a ValueError), and a range holds at
most ``MAX_RANGE_COMPARATORS`` comparators.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_VERSION_RE = re.compile(
    r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$",
    re.ASCII,  # SemVer digits are ASCII: without it \d also accepts other scripts' digits (fullwidth, Arabic-Indic)
)
_COMPARATOR_RE = re.compile(r"^(>=|<=|==|!=|>|<)?\s*(\S+)$")
MAX_VERSION_LENGTH = 128
MAX_RANGE_COMPARATORS = 8

# A sortable key: (major, minor, patch, prerelease) where a release sorts after every
# pre-release of the same version, numeric identifiers before alphanumeric ones.
VersionKey = tuple[int, int, int, tuple[object, ...]]
_RELEASE: tuple[object, ...] = (1,)

_OPERATORS: dict[str, Callable[[VersionKey, VersionKey], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class SemverError(ValueError):
    """A version or a range that cannot be parsed."""


def parse_version(text: str) -> VersionKey:
    if not isinstance(text, str):
        raise SemverError(f"a version must be a string, not {type(text).__name__}")
    if len(text) > MAX_VERSION_LENGTH:
        raise SemverError(f"a version may have at most {MAX_VERSION_LENGTH} characters, not {len(text)}")
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise SemverError(f"{text!r} is not a semantic version (like 2.5.0 or 3.0.0-rc.1)")
    major, minor, patch, pre = match.groups()
    if pre is None:
        pre_key = _RELEASE
    else:
        ids: list[tuple[int, int | str]] = []
        for part in pre.split("."):
            ids.append((0, int(part)) if part.isdigit() else (1, part))
        pre_key = (0, tuple(ids))
    return (int(major), int(minor or 0), int(patch or 0), pre_key)


def try_parse_version(text: object) -> VersionKey | None:
    """The key of ``text``, or None when it is not a version (never raises)."""
    if not isinstance(text, str):
        return None
    try:
        return parse_version(text)
    except SemverError:
        return None


def parse_range(text: str) -> Callable[[VersionKey], bool]:
    """A predicate over version keys; raises SemverError naming the bad part."""
    if not isinstance(text, str) or not text.strip():
        raise SemverError("a version range must be a non-empty string like '>= 2.5.0, < 3'")
    if text.count(",") >= MAX_RANGE_COMPARATORS:
        raise SemverError(f"a version range may have at most {MAX_RANGE_COMPARATORS} comparators")
    checks: list[tuple[Callable[[VersionKey, VersionKey], bool], VersionKey]] = []
    for part in text.split(","):
        part = part.strip()
        match = _COMPARATOR_RE.match(part)
        if match is None:
            raise SemverError(f"{part!r} is not a comparator (use >= > <= < == != and a version)")
        op, version = match.groups()
        checks.append((_OPERATORS[op or "=="], parse_version(version)))
    if len(checks) == 1:
        compare, bound = checks[0]
        return lambda key: compare(key, bound)
    frozen = tuple(checks)
    return lambda key: all(compare(key, bound) for compare, bound in frozen)
