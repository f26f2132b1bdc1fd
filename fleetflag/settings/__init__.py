"""Settings: ``base`` reads the environment; ``FLEETFLAG_SETTINGS=test`` adds the test overrides."""

import os

from fleetflag.settings.base import *  # noqa: F403

if os.environ.get("FLEETFLAG_SETTINGS") == "test":
    from fleetflag.settings.test import *  # noqa: F403
