"""FleetFlag's vehicle-side package: the one flag evaluator, shared with the server.

Standard library only, and no Django anywhere: the same code runs in the server
(fed by ``flags.snapshots``) and on the vehicle (fed by the sync snapshot).
"""

from agent_client.evaluator import Resolution, Snapshot, evaluate
from agent_client.local import LocalFlags

__all__ = ["LocalFlags", "Resolution", "Snapshot", "evaluate"]
