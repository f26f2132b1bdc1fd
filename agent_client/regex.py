"""The ``regex`` operator's engine: RE2, linear in time, bounded in size, or nothing.

This is the only module that compiles a rule's pattern; the rest of the evaluator calls
``compile_search`` and ``pattern_problem`` and never imports ``re2`` (or ``re``) for
rule patterns. (``re`` still serves the rule language's own fixed patterns, such as the
VIN format: those are ours, not input.)

Why RE2: Python's ``re`` backtracks, so ``(a+)+$`` against a few dozen characters runs
for minutes, on the server's event loop and on the vehicle alike. RE2 never backtracks:
the time of a match grows with (value length) x (compiled program size), and both are
capped here, so every evaluation of a regex rule has a small fixed cost, whatever the
pattern (``tests/agent_client/test_regex_bounds.py`` measures the worst ones).

Bounds, checked when the rule is written (``agent_client.rules.validate_rule`` on the
server) and again whenever a snapshot is compiled (server and vehicle):

- a pattern is at most ``MAX_PATTERN_LENGTH`` (256) characters;
- it must be RE2 syntax: backreferences (``\\1``), lookahead and lookbehind, atomic
  groups and possessive repetition are refused by RE2 itself, and so is a counted
  repetition above 1000 (``a{1001}``, ``a{1000}{1000}``);
- ``\\C`` (any single byte) is refused: it splits UTF-8 characters and is the costliest
  construct per input byte;
- it compiles to at most ``MAX_PROGRAM_SIZE`` (300) RE2 instructions, forward and
  reverse (nested counted repetitions such as ``((a{1,10}){1,10}){1,10}``, or a large
  Unicode class such as ``\\p{L}``, exceed it);
- RE2 itself holds each compiled pattern, its program and its DFA cache, under
  ``MAX_MEMORY`` (1 MiB); a bigger program fails to compile. (A smaller cache also
  keeps the worst single evaluation short: when a big cache fills, RE2 frees it all at
  once, a pause that grows with its size.)

Matching: **search**, as before RE2 (``"WEST"`` matches ``"EU-WEST-1"``); anchor with
``^`` and ``$`` for a whole-value match. A value longer than ``MAX_SUBJECT_LENGTH``
(128 characters) does not match, whatever the pattern, and neither does one holding a
lone surrogate (JSON allows ``"\\ud800"``; it is not text RE2 can read). RE2 syntax
differs from ``re`` in small ways a rule author may meet: ``$`` matches only at the very
end (``re`` also before a final newline), ``\\d \\w \\s \\b`` are ASCII-only, and ``\\Z``
is written ``\\z``.

Without RE2 (a vehicle image built without the ``google-re2`` wheel): importing
``agent_client`` still works and every other operator is unaffected, but no pattern is
ever compiled, and nothing falls back to ``re``. ``pattern_problem`` names the missing
engine, so the server refuses to store a regex rule it cannot check, and the evaluator
cannot compile a flag that has one: that flag evaluates to ERROR / PARSE_ERROR with the
flag's default value (a kill switch on it still wins: it is applied before rules are
compiled). Serving the default is the safe state; guessing what the rule meant is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import re2 as _re2
except ImportError:  # the vehicle image lacks the wheel: see the module docstring
    _re2 = None

MAX_PATTERN_LENGTH = 256
MAX_PROGRAM_SIZE = 300
MAX_MEMORY = 1 << 20
MAX_SUBJECT_LENGTH = 128

UNAVAILABLE = "cannot be checked or evaluated here: the RE2 engine (package google-re2) is not installed"


class PatternError(ValueError):
    """A pattern that is refused; the message completes "value ..." for the rule's author."""


def available() -> bool:
    """Whether patterns can be compiled in this process (the re2 module imported)."""
    return _re2 is not None


def _options() -> Any:
    options = _re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.never_capture = True  # match / no match is all the evaluator needs: cheaper
    options.max_mem = MAX_MEMORY
    return options


def _any_byte_escape(pattern: str) -> bool:
    """Whether the pattern uses ``\\C`` (an escaped backslash followed by C does not count)."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            if pattern[i + 1 : i + 2] == "C":
                return True
            i += 2
        else:
            i += 1
    return False


def _engine_message(exc: BaseException) -> str:
    detail = exc.args[0] if exc.args else ""
    text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    if text.startswith("pattern too large"):
        return f"is too large: RE2 cannot compile it within its {MAX_MEMORY // 1024} KiB memory limit"
    return f"is not a valid RE2 regular expression: {text}"


def compile_search(pattern: object) -> Callable[[str], bool]:
    """``matches(value)``: whether ``pattern`` is found in ``value`` (bounded, never raises).

    Raises ``PatternError`` naming the problem when the pattern is refused (see the
    module docstring), including when RE2 is not installed.
    """
    if _re2 is None:
        raise PatternError(UNAVAILABLE)
    if not isinstance(pattern, str):
        raise PatternError("must be a regular expression string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"is {len(pattern)} characters long; a pattern may have at most {MAX_PATTERN_LENGTH}")
    if _any_byte_escape(pattern):
        raise PatternError("uses \\C (any byte), which is not allowed: use . (any character) instead")
    try:
        compiled = _re2.compile(pattern, _options())
    except _re2.error as exc:
        raise PatternError(_engine_message(exc)) from None
    except UnicodeEncodeError:  # RE2 takes UTF-8; JSON can carry a lone surrogate ("\ud800")
        raise PatternError("holds a character that is not valid Unicode (a lone surrogate)") from None
    size = max(compiled.programsize, compiled.reverseprogramsize)
    if size > MAX_PROGRAM_SIZE:
        raise PatternError(
            f"is too complex: it compiles to {size} RE2 instructions, at most {MAX_PROGRAM_SIZE} are allowed "
            "(use fewer or smaller counted repetitions {n,m} and narrower character classes)"
        )
    search = compiled.search
    limit = MAX_SUBJECT_LENGTH

    def matches(value: str) -> bool:
        if len(value) > limit:
            return False
        try:
            return search(value) is not None
        except UnicodeEncodeError:  # a lone surrogate, which JSON allows: not text, so no match
            return False

    return matches


def pattern_problem(pattern: object) -> str | None:
    """Why ``pattern`` is refused (to follow "value "), or None when it compiles within bounds."""
    try:
        compile_search(pattern)
    except PatternError as exc:
        return str(exc)
    return None
