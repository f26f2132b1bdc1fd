"""The REST API (``/api/v1/``) and OpenFeature's remote evaluation protocol (``/ofrep/v1/``).

Views validate input and call ``flags.services`` / ``accounts.services``; they hold no
business logic. The hot read paths (vehicle sync, evaluate, evaluate/batch) are plain
async Django views (``flags.api.hot``) that read only caches in the steady state.
"""
