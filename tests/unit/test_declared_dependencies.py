"""Every package ashat's code imports is one pip installs with it.

``deploy approve`` drew its progress bar with Rich, which only the test extra brought (as a
dependency of schemathesis and import-linter): after ``pip install -e .`` alone, an
approval at a terminal ended in ``ModuleNotFoundError: No module named 'rich'``. The tests
never saw it, because they run with the test extra and without a terminal."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
# Imported only by the feature that needs them, which says how to install them when they
# are missing: an extra of their own, not a dependency of every installation.
OPTIONAL = {"psycopg": "postgres", "botocore": "s3"}


def imported_top_levels(root: Path) -> dict[str, str]:
    """Each top-level module imported anywhere under ``root`` (in a function too), with one
    file that imports it."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], path.name)
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras = {
        extra: {canonicalize_name(Requirement(r).name) for r in reqs}
        for extra, reqs in project["optional-dependencies"].items()
    }
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, where in imported_top_levels(REPO / "src" / "ashat").items():
        if module in sys.stdlib_module_names or module in ("ashat", "__future__"):
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [module])}
        if module in OPTIONAL:
            ok = bool(dists & extras[OPTIONAL[module]])
        else:
            ok = bool(dists & declared)
        if not ok:
            missing.append(f"{module} (imported by {where})")
    assert not missing, "imported but not in pyproject.toml's dependencies: " + ", ".join(missing)


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("def f():\n    from rich.progress import Progress\n")
    assert "rich" in imported_top_levels(pkg)
