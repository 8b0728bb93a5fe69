"""The layering is a contract (issue 16): ``lint-imports`` (import-linter) checks the
contracts in pyproject.toml, and a planted violation is caught."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("lint-imports") is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        ["lint-imports", "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_every_contract_is_kept() -> None:
    done = lint_imports(REPO / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 7 kept, 0 broken." in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("agent/core.py", "import ashat.fleet.omega", "roles > fleet > agent"),
        ("workflow/states.py", "import ashat.store.db", "The workflow core does no I/O"),
        ("bundle/manifest.py", "import httpx", "The bundle has no store and no network"),
        ("ops/push.py", "import ashat.cli.output", "Nothing below the front ends"),
        ("agent/server.py", "import click", "Click commands live in cli/"),
        ("http/serve.py", "import ashat.agent.core", "The server plumbing (http) knows no role"),
        ("api/app.py", "import ashat.agent.server", "The control server's front end (api)"),
    ],
)
def test_a_planted_violation_breaks_its_contract(
    tmp_path: Path, module: str, planted: str, contract: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "ashat", src / "ashat", ignore=shutil.ignore_patterns("*.pyc"))
    target = src / "ashat" / module
    text = target.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    target.write_text(head + sep + planted + "  # planted\n" + rest)
    done = lint_imports(src)
    assert done.returncode != 0, done.stdout
    broken = done.stdout.split("Broken contracts")[-1]
    assert contract in broken, done.stdout


def test_every_outgoing_http_client_is_built_by_the_seam() -> None:
    """One outgoing HTTP seam (issue 16): TLS, timeouts and limits are set in
    ``transport/outgoing.py`` only; no other module builds an httpx client or calls httpx's
    one-shot functions (each did its own, seven times over)."""
    import re

    built = re.compile(r"httpx\.(Client|AsyncClient)\(|httpx\.(get|post|put|request|stream)\(")
    seam = REPO / "src" / "ashat" / "transport" / "outgoing.py"
    offenders = [
        f"{p.relative_to(REPO)}:{n}"
        for p in sorted((REPO / "src" / "ashat").rglob("*.py"))
        if p != seam
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if built.search(line)
    ]
    assert offenders == [], offenders
    assert built.search(seam.read_text())
