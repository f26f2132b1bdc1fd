"""What an evaluation returns: the result tuple, its reasons and its error codes.

Its own module so that the rule kinds (``agent_client.rules``) can build the results
they serve without importing the evaluator that imports them; ``agent_client.evaluator``
re-exports every name here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# Reasons: OpenFeature's names, plus KILL_SWITCH and the agent's STALE.
KILL_SWITCH = "KILL_SWITCH"
DISABLED = "DISABLED"
TARGETING_MATCH = "TARGETING_MATCH"
SPLIT = "SPLIT"
DEFAULT = "DEFAULT"
ERROR = "ERROR"
STALE = "STALE"

# Error codes (reason ERROR).
FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
PARSE_ERROR = "PARSE_ERROR"
TYPE_MISMATCH = "TYPE_MISMATCH"


class Resolution(NamedTuple):
    flag_key: str
    value: Any
    variant: str | None
    reason: str
    version: int | None
    error_code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = {
            "flag_key": self.flag_key,
            "value": self.value,
            "variant": self.variant,
            "reason": self.reason,
            "version": self.version,
        }
        if self.error_code is not None:
            data["error_code"] = self.error_code
        return data
