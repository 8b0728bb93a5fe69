"""Each module of ashat imports first, alone: no import cycle hides behind the order the
other modules happen to be imported in.

``ashat advisories update`` in a new process imported ``ashat.agent.advisories`` first,
which imported the checks package, whose Security Scan imported ``advisories`` back,
half-made: ``ImportError: cannot import name 'source_of'``, an internal error. The test
suite had always imported the checks first."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import ashat
names = sorted(m.name for m in pkgutil.walk_packages(ashat.__path__, "ashat."))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "ashat" or m.startswith("ashat.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_on_its_own() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    count, *failed = done.stdout.strip().split("\n")
    assert int(count) > 150  # the whole package was walked
    assert not failed, "\n".join(failed)
