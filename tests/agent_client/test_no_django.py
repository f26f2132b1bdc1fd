"""``agent_client`` runs on the vehicle: no Django, no server app, the standard library and
two dependencies, each behind one file (RE2 for the ``regex`` operator in ``agent_client/regex.py``,
cryptography for Ed25519 in ``agent_client/signing.py``)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import agent_client

PACKAGE_DIR = Path(agent_client.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SERVER_PACKAGES = ("flags", "audit", "vehicles", "experiments", "accounts", "fleetflag")
# Third-party modules an agent_client module may import, and the one file that may import
# each. Adding one is a decision about what every vehicle must install, to be taken here,
# in review. re2 (PyPI google-re2): the linear-time engine of the regex operator, kept
# behind agent_client/regex.py so that nothing else depends on it (the package still
# imports and evaluates every other rule without it). cryptography (PyPI): Ed25519, to verify
# the signed payloads (SPEC §4), behind agent_client/signing.py.
ALLOWED_THIRD_PARTY: dict[str, str] = {"re2": "regex.py", "cryptography": "signing.py"}

# Imports every agent_client module in a fresh interpreter (so nothing this test process
# already loaded, such as Django for the other tests, can hide a leak) and reports what
# else got imported.
_PROBE = """
import importlib, json, pkgutil, sys
import agent_client
names = ["agent_client"] + [m.name for m in pkgutil.walk_packages(agent_client.__path__, "agent_client.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def _source_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def test_agent_client__imported_in_fresh_interpreter__loads_no_django_or_server_app() -> None:
    # Given a fresh interpreter without Django settings in its environment
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # When it imports agent_client and every one of its modules
    completed = subprocess.run(
        [sys.executable, "-E", "-c", _PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    # Then every module was imported, and no Django or server module came with them
    expected = {f"agent_client.{path.stem}" for path in _source_files() if path.parent == PACKAGE_DIR} - {
        "agent_client.__init__"
    }
    assert expected <= set(report["imported"])
    leaked = [name for name in report["loaded"] if name.startswith("django") or name.split(".")[0] in SERVER_PACKAGES]
    assert leaked == []


def test_agent_client__source_files__import_only_stdlib_itself_or_the_allowed_module() -> None:
    # Given every source file of agent_client, parsed (not imported: this also sees
    # imports inside functions and branches that a run would not reach)
    outside: list[str] = []
    for path in _source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
                names = [node.module]
            else:
                continue  # relative imports stay inside agent_client
            for name in names:
                top = name.split(".")[0]
                if top == "agent_client" or top in sys.stdlib_module_names:
                    continue
                if ALLOWED_THIRD_PARTY.get(top) == str(path.relative_to(PACKAGE_DIR)):
                    continue
                outside.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name}")
    # Then each imported top-level module is the standard library, agent_client, or an
    # allowed dependency imported from its one file
    assert outside == []


def test_agent_client__source_files__found() -> None:
    # Guards the two tests above against passing vacuously on an empty file list
    names = {path.name for path in _source_files()}
    assert {"__init__.py", "rules.py", "semver.py", "bucketing.py", "evaluator.py", "local.py", "regex.py"} <= names
