"""FleetFlag's vehicle-side package: the one flag evaluator, shared with the server.

No Django anywhere: the same code runs in the server (fed by ``flags.snapshots``) and on
the vehicle (fed by the sync snapshot). The standard library plus one dependency, the
RE2 engine (PyPI ``google-re2``, module ``re2``, wheels for x86_64 and aarch64), which
only ``agent_client.regex`` imports, for the ``regex`` operator. Without it the package
still imports and evaluates, and a flag with a regex rule serves its default value
(see ``agent_client.regex``).
"""

from agent_client.evaluator import Resolution, Snapshot, evaluate
from agent_client.local import LocalFlags

__all__ = ["LocalFlags", "Resolution", "Snapshot", "evaluate"]
