"""The ``ashat`` command's own verbs: ``keys generate`` and ``license issue|list|revoke``,
the last against a real OMEGA that then refuses the revoked license."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner, Result

from ashat.bundle import load_private_key
from ashat.cli.ashat import cli as ashat_cli
from ashat.cli.deploy import cli as deploy_cli


def ashat(*args: str) -> Result:
    return CliRunner().invoke(ashat_cli, list(args), prog_name="ashat", catch_exceptions=False)


def deploy(*args: str) -> Result:
    return CliRunner().invoke(deploy_cli, list(args), prog_name="deploy", catch_exceptions=False)


def test_keys_generate_writes_a_private_key_0600_and_never_overwrites(project: Path) -> None:
    res = ashat("keys", "generate", "alpha", "--dir", "keys", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    key = Path(out["private_key"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Path(out["public_key"]).read_text().startswith("ashat-ed25519 ")
    assert load_private_key(key).keyid == out["keyid"]
    again = ashat("keys", "generate", "alpha", "--dir", "keys")
    assert again.exit_code == 2 and "refusing to overwrite" in again.stderr
    assert ashat("keys", "generate", "bad name!", "--dir", "keys").exit_code == 2


def test_keys_generate_says_where_each_public_half_goes(project: Path) -> None:
    """``license.pub`` goes to OMEGA's --license-trust and ``omega.pub`` to the mainframes'
    --trust-omega, not to agents' --trust (issue 18, 8)."""
    lic = ashat("keys", "generate", "license", "--dir", "keys")
    assert "--license-trust keys/license.pub" in lic.stdout, lic.stdout
    assert "--trust " not in lic.stdout
    omega = ashat("keys", "generate", "omega", "--dir", "keys")
    assert "--trust-omega keys/omega.pub" in omega.stdout and "--omega-key keys/omega.key" in (
        omega.stdout
    )
    alpha = ashat("keys", "generate", "alpha", "--dir", "keys")
    assert "--trust keys/alpha.pub" in alpha.stdout


def test_a_license_given_a_date_reads_valid_through_that_date(project: Path) -> None:
    assert ashat("keys", "generate", "license", "--dir", "keys").exit_code == 0
    args = ["license", "issue", "--mainframe", "mf-1", "--customer", "ACME",
            "--expires", "2099-12-31", "--key", "keys/license.key"]  # fmt: skip
    res = ashat(*args, "--out", "mf-1.license")
    assert res.exit_code == 0, res.output
    assert "valid through 2099-12-31" in res.stdout and "2100-01-01" not in res.stdout
    listed = ashat("license", "list")
    assert "through 2099-12-31" in listed.stdout and "2100-01-01" not in listed.stdout


def test_license_issue_writes_a_token_0600_and_records_it(project: Path) -> None:
    assert ashat("keys", "generate", "license", "--dir", "keys").exit_code == 0
    args = ["license", "issue", "--mainframe", "mf-1", "--customer", "ACME",
            "--expires", "2099-12-31", "--key", "keys/license.key"]  # fmt: skip
    res = ashat(*args, "--out", "mf-1.license", "--json")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    token = Path("mf-1.license").read_text().strip()
    assert stat.S_IMODE(Path("mf-1.license").stat().st_mode) == 0o600
    assert token.startswith("license.") and token not in res.stdout
    assert rec["mainframe_id"] == "mf-1" and rec["channels"] == ["stable"]
    assert ashat(*args, "--out", "mf-1.license").exit_code == 2  # never overwritten
    typo = ashat(*args, "--out", "no/such/dir/mf-1.license")  # a review: the dirs were made
    assert typo.exit_code == 2 and "directory no/such/dir does not exist" in typo.stderr
    assert not Path("no").exists()
    listed = json.loads(ashat("license", "list", "--json").stdout)
    assert [r["license_id"] for r in listed["licenses"]] == [rec["license_id"]]
    assert listed["licenses"][0]["status"] == "ok"
    bad = ashat(*args[:-2], "--key", "keys/license.key", "--expires", "2001-01-01", "--out", "x")
    assert bad.exit_code == 2 and "in the past" in bad.stderr
    assert not Path("x").exists()


def test_license_revoke_reaches_omega_which_then_refuses_it(
    project: Path, agent_factory: Any
) -> None:
    omega = agent_factory(role="omega")
    res = deploy("configure", "omega", omega.url, "Omega", "--token-file", str(omega.token_file))
    assert res.exit_code == 0
    from ashat.project import write_private

    write_private(Path("license.key"), omega.license_key.to_pem())
    issued = ashat("license", "issue", "--mainframe", "mf-9", "--customer", "ACME",
                   "--expires", "2099-01-01", "--key", "license.key", "--out", "mf-9.license",
                   "--json")  # fmt: skip
    assert issued.exit_code == 0, issued.output
    license_id = json.loads(issued.stdout)["license_id"]
    token = Path("mf-9.license").read_text().strip()
    poll = f"{omega.url}/v1/fleet/poll?wait=0"
    headers = {"Authorization": f"License {token}"}
    assert httpx.get(poll, headers=headers, timeout=10).status_code == 200
    # A review: a typo of the id was answered "revoked", exit 0, the real one still valid.
    typo = ashat("license", "revoke", license_id[:-1] + "x", "--reason", "incident")
    assert typo.exit_code == 2 and "this project did not issue it" in typo.stderr, typo.output
    assert httpx.get(poll, headers=headers, timeout=10).status_code == 200
    elsewhere = ashat("license", "revoke", "lic-from-another-desk", "--issued-elsewhere")
    assert elsewhere.exit_code == 0, elsewhere.output
    res = ashat("license", "revoke", license_id, "--reason", "contract ended")
    assert res.exit_code == 0, res.output
    refused = httpx.get(poll, headers=headers, timeout=10)
    assert refused.status_code == 403 and refused.json()["reason"] == "revoked"
    listed = json.loads(ashat("license", "list", "--json").stdout)
    assert listed["licenses"][0]["status"] == "revoked"


def test_license_revoke_without_omega_configured_exits_2(project: Path) -> None:
    res = ashat("license", "revoke", "lic-0123")
    assert res.exit_code == 2 and "deploy configure omega" in res.stderr


def test_a_license_that_cannot_be_recorded_leaves_no_token_file(project: Path) -> None:
    assert ashat("keys", "generate", "license", "--dir", "keys").exit_code == 0
    (project / ".ashat" / "licenses.jsonl").mkdir(parents=True)  # unwritable as a file
    res = ashat("license", "issue", "--mainframe", "mf-1", "--customer", "ACME",
                "--expires", "2099-12-31", "--key", "keys/license.key",
                "--out", "mf-1.license")  # fmt: skip
    assert res.exit_code == 1 and "nothing was issued" in res.stderr
    assert not (project / "mf-1.license").exists()
