"""The pure parts of the agent's checks: requirement pins, OSV matching, secret patterns."""

from __future__ import annotations

from typing import Any

import pytest

from ashat.agent.checks.osv import (
    MalformedAdvisory,
    Pin,
    canonical_name,
    parse_advisories,
    parse_requirements,
    vulnerabilities,
)
from ashat.agent.checks.secrets import is_placeholder, scan_text


def test_pins_are_exact_versions_with_pep503_names() -> None:
    text = (
        "Flask_Login==0.6.3  # auth\n"
        "zope.interface===6.0\n"
        "numpy==1.*\n"
        "django>=4,<5\n"
        "pkg @ https://example.org/pkg-1.0.tar.gz\n"
        "attrs==23.1.0 \\\n"
        "    --hash=sha256:abc \\\n"
        "    --hash=sha256:def\n"
        "-e .\n"
        "not a requirement ==\n"
    )
    pins = parse_requirements(text, "requirements.txt")
    assert [(p.name, p.version, p.line) for p in pins] == [
        ("flask-login", "0.6.3", 1),
        ("zope-interface", "6.0", 2),
        ("attrs", "23.1.0", 6),
    ]
    assert canonical_name("Zope.Interface__x") == "zope-interface-x"


def advisory(events: list[dict[str, str]], versions: list[str] | None = None) -> dict[str, Any]:
    affected: dict[str, Any] = {
        "package": {"ecosystem": "PyPI", "name": "Demo_Pkg"},
        "ranges": [{"type": "ECOSYSTEM", "events": events}],
    }
    if versions is not None:
        affected["versions"] = versions
    return {"id": "OSV-1", "affected": [affected]}


@pytest.mark.parametrize(
    ("events", "version", "hit"),
    [
        ([{"introduced": "0"}, {"fixed": "1.2"}], "1.1.9", True),
        ([{"introduced": "0"}, {"fixed": "1.2"}], "1.2", False),
        ([{"introduced": "1.0"}, {"last_affected": "1.4"}], "1.4", True),
        ([{"introduced": "1.0"}, {"last_affected": "1.4"}], "1.4.1", False),
        ([{"introduced": "1.0"}], "0.9", False),
        ([{"introduced": "1.0"}], "99", True),
        # two ranges in one list, unsorted in the record
        (
            [{"fixed": "3.0"}, {"introduced": "2.5"}, {"fixed": "2.0"}, {"introduced": "1.0"}],
            "2.2",
            False,
        ),
        (
            [{"fixed": "3.0"}, {"introduced": "2.5"}, {"fixed": "2.0"}, {"introduced": "1.0"}],
            "2.7",
            True,
        ),
        ([{"introduced": "1.0rc1"}, {"fixed": "1.0"}], "1.0rc2", True),
    ],
)
def test_osv_ranges(events: list[dict[str, str]], version: str, hit: bool) -> None:
    advisories = parse_advisories(advisory(events))
    found = vulnerabilities([Pin("demo-pkg", version, "r.txt", 1)], advisories)
    assert bool(found) is hit


def test_osv_versions_list_compares_as_versions() -> None:
    advisories = parse_advisories(advisory([], versions=["2.0", "weird-legacy"]))
    assert vulnerabilities([Pin("demo-pkg", "2.0.0", "r.txt", 1)], advisories)
    assert not vulnerabilities([Pin("demo-pkg", "2.0.1", "r.txt", 1)], advisories)


def test_withdrawn_and_other_ecosystems_do_not_match() -> None:
    npm = advisory([{"introduced": "0"}])
    npm["affected"][0]["package"]["ecosystem"] = "npm"
    withdrawn = {**advisory([{"introduced": "0"}]), "withdrawn": "2024-01-01T00:00:00Z"}
    advisories = parse_advisories([npm, withdrawn])
    assert not vulnerabilities([Pin("demo-pkg", "1.0", "r.txt", 1)], advisories)


@pytest.mark.parametrize(
    "record",
    [
        [],
        {"id": 7},
        {"id": "X", "affected": {}},
        {"id": "X", "affected": [{"versions": [1]}]},
        {"id": "X", "affected": [{"ranges": [{"type": "ECOSYSTEM", "events": [{"bad": "1"}]}]}]},
    ],
)
def test_malformed_advisories(record: Any) -> None:
    data = record if record != [] else "just a string"
    with pytest.raises(MalformedAdvisory):
        parse_advisories(data)


@pytest.mark.parametrize(
    ("value", "placeholder"),
    [
        ("hunter2hunter2", False),
        ("sk_live_51HxQ2", False),
        ("short", True),
        ("configured", True),
        ("DATABASE_PASSWORD", True),
        ("${DB_PASSWORD}", True),
        ("<your-token>", True),
        ("changeme123", True),
        ("xxxxxxxxxxxx", True),
        ("two words 123", True),
    ],
)
def test_placeholders(value: str, placeholder: bool) -> None:
    assert is_placeholder(value) is placeholder


def test_bare_values_count_only_in_config_files() -> None:
    line = "PASSWORD=Sup3r-Secret-99\n"
    assert [f.kind for f in scan_text(line, "prod.env")] == ["assignment"]
    assert [f.kind for f in scan_text(line, "conf/app.ini")] == ["assignment"]
    assert scan_text("password = make_password()\n", "app.py") == []
    assert scan_text(line, "notes.md") == []
