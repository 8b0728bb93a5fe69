"""Module Load Test, agent side: import each module in a fresh interpreter inside the release.

Each module gets its own ``python -c`` child (the agent's interpreter, ``sys.executable``)
with the release as its working directory and first on ``PYTHONPATH``, and the app's
environment — not ``-I``, since the app's site-packages must be importable. The module name
is validated as a dotted identifier and passed as an argument, never spliced into code.
Children run a few at a time, each in its own process group so a module that spawns
processes and hangs is killed whole when the check's time is up; stderr goes to a temporary
file, so a chatty import cannot fill the agent's memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from ashat.agent.checks.base import (
    BadBody,
    Deadline,
    elapsed_ms,
    env_secrets,
    guarded,
    release_root,
    result,
    scrub,
    timeout_of,
)
from ashat.agent.confine import Jail
from ashat.agent.processes import kill_group

CONCURRENCY = 4  # interpreters started at once
MAX_MODULES = 200
MAX_NAME_CHARS = 200
TRACEBACK_LINES = 30  # lines of a failing import's stderr kept
TRACEBACK_BYTES = 64 * 1024  # bytes read from the end of that stderr
KILL_WAIT_S = 2.0  # seconds to reap a killed child

# argv[1] is the module name: data, not code.
_IMPORT = "import importlib, sys; importlib.import_module(sys.argv[1])"


def valid_module_name(name: str) -> bool:
    """A dotted identifier such as ``pkg.sub_mod`` (nothing else reaches an interpreter)."""
    return (
        0 < len(name) <= MAX_NAME_CHARS
        and name.isascii()
        and all(part.isidentifier() for part in name.split("."))
    )


def module_names(body: Mapping[str, Any]) -> list[str]:
    """The ``modules`` of the body, validated and de-duplicated; raises :class:`BadBody`."""
    value = body.get("modules")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise BadBody("modules must be a list of module names")
    if len(value) > MAX_MODULES:
        raise BadBody(f"modules has {len(value)} entries, more than {MAX_MODULES}")
    bad = [m for m in value if not valid_module_name(m)]
    if bad:
        raise BadBody(f"modules: {bad[0]!r} is not a dotted module name")
    return list(dict.fromkeys(value))


def child_env(root: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The app's environment with the release first on ``PYTHONPATH``; no bytecode written,
    so a check leaves the release tree as it found it."""
    out = dict(env)
    rest = out.get("PYTHONPATH", "")
    out["PYTHONPATH"] = os.pathsep.join([str(root), rest]) if rest else str(root)
    out.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return out


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - TRACEBACK_BYTES))
    text = stream.read().decode("utf-8", errors="replace")
    lines = text.rstrip().splitlines()
    return "\n".join(lines[-TRACEBACK_LINES:])


def _kill(proc: subprocess.Popen[bytes], jail: Jail) -> None:
    kill_group(proc.pid, reaper=jail.reaps)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_WAIT_S)


PYTHON_NAME_RE = re.compile(r"python[0-9.]*")


def app_interpreter(app: Mapping[str, Any], root: Path, env: Mapping[str, str]) -> str:
    """The interpreter the app runs with, so that the modules are imported as the app
    will import them (its own environment, not the agent's packages): ``[app] python``
    (relative to the release, e.g. a ``.venv`` its ``prepare`` builds), or the environment
    the agent built from the release's wheels (``[app] requirements``), else the first word
    of ``[app] run`` when it names a Python, else the agent's. A bare name (``python3``)
    stays one. Raises ``FileNotFoundError`` naming it when it cannot be found."""
    venv = env.get("VIRTUAL_ENV")
    if venv and app.get("environment"):  # built by the agent from the release's wheels
        python = Path(venv) / "bin" / "python"
        if not python.exists():
            raise FileNotFoundError(
                "the release's Python environment is not built on this server yet (the "
                "agent builds it from the shipped wheels when the release is activated)"
            )
        return str(python)
    given = app.get("python")
    if not isinstance(given, str) or not given:
        run = app.get("run")
        first = shlex.split(run)[0] if isinstance(run, str) and run.strip() else ""
        if not PYTHON_NAME_RE.fullmatch(os.path.basename(first)):
            return sys.executable
        given = first
    if "/" not in given:
        # Run by name, as the app's command is: looked up on the app's PATH where the app
        # runs (in a sandbox, among the directories it shows), not here.
        if shutil.which(given, path=env.get("PATH") or os.defpath) is None:
            raise FileNotFoundError(f"the app's interpreter {given!r} is not on its PATH")
        return given
    path = Path(given) if given.startswith("/") else root / given
    if not path.exists():
        raise FileNotFoundError(f"the app's interpreter {given} does not exist in the release")
    return str(path)


def import_in_child(
    name: str,
    root: Path,
    env: Mapping[str, str],
    deadline: Deadline,
    jail: Jail | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Import ``name`` in a fresh interpreter; ``{"name", "ok", "ms"}`` plus, when it
    fails, ``error`` (the last stderr line, or why it did not finish) and ``traceback``."""
    if deadline.expired():
        return {"name": name, "ok": False, "ms": 0.0, "error": "not started: out of time"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        try:
            jail = jail or Jail("none")
            shared = Path(env.get("ASHAT_SHARED_DIR") or tempfile.gettempdir())
            venv = env.get("VIRTUAL_ENV")
            proc = jail.popen(
                [python, "-c", _IMPORT, name], root, shared, child_env(root, env),
                (Path(venv),) if venv else (),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        except OSError as e:
            return {"name": name, "ok": False, "ms": 0.0, "error": f"cannot start Python: {e}"}
        try:
            code = proc.wait(deadline.remaining())
        except subprocess.TimeoutExpired:
            _kill(proc, jail)
            return {
                "name": name,
                "ok": False,
                "ms": elapsed_ms(started),
                "error": f"import did not finish within {deadline.timeout_s:g} s",
                "traceback": _tail(stderr),
            }
        finally:
            # the child's children, if any, go with it
            kill_group(proc.pid, reaper=jail.reaps, ended=proc.returncode is not None)
        ms = elapsed_ms(started)
        if code == 0:
            return {"name": name, "ok": True, "ms": ms}
        tb = _tail(stderr)
        last = tb.splitlines()[-1] if tb else ""
        error = last or (f"killed by signal {-code}" if code < 0 else f"exit status {code}")
        return {"name": name, "ok": False, "ms": ms, "error": error, "traceback": tb}


@guarded("modules")
def check_modules(
    release_dir: Path,
    body: dict[str, Any],
    env: Mapping[str, str],
    jail: Jail | None = None,
    app: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Import each module of the release's signed ``[app] modules`` (``app``) in a fresh
    interpreter inside the release, the app's own (:func:`app_interpreter`). The caller
    cannot choose others: ``body["modules"]``, if given, must name the same (without
    ``app``, as in a unit test, they are the ones loaded).

    Details: ``{"interpreter", "modules": [{"name", "ok", "ms", ["error", "traceback"]},
    ...]}`` in the order declared; ``error`` and ``traceback`` only for modules that failed.
    """
    timeout_s = timeout_of(body)
    names = module_names(body)
    if app is not None:
        try:
            declared = module_names({"modules": app.get("modules")})
        except BadBody as e:
            raise BadBody(f"the release's signed [app] modules: {e}") from None
        if "modules" in body and names != declared:
            raise BadBody(
                f"modules {names} are not the release's signed [app] modules {declared}: "
                "PUBLIC loads those, and only those"
            )
        names = declared
    if not names:
        return result("skipped", "the release's [app] names no modules to load", modules=[])
    root = release_root(release_dir)
    try:
        python = app_interpreter(app or {}, root, env)
    except FileNotFoundError as e:
        return result("failed", str(e), modules=[])
    deadline = Deadline(timeout_s)
    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(names))) as pool:
        outcomes = list(
            pool.map(lambda n: import_in_child(n, root, env, deadline, jail, python), names)
        )
    secrets = env_secrets(env)
    for outcome in outcomes:
        for key in ("error", "traceback"):
            if key in outcome:
                outcome[key] = scrub(outcome[key], secrets)
    failing = [o for o in outcomes if not o["ok"]]
    if not failing:
        if len(names) == 1:
            summary = f"Module {names[0]} loaded successfully"
        else:
            summary = f"All {len(names)} modules loaded successfully"
        return result("passed", summary, modules=outcomes, interpreter=python)
    named = "; ".join(f"{o['name']} ({o['error']})" for o in failing)
    return result(
        "failed",
        f"{len(failing)} of {len(names)} modules failed to load: {named}",
        modules=outcomes,
        interpreter=python,
    )
