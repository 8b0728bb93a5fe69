"""Licenses issued from a project: issue, revoke (on OMEGA), and list with their status.

Issued licenses are recorded, without the token, in ``.ashat/licenses.jsonl`` and in the
audit trail; a revocation goes to OMEGA first (which refuses the license from its next poll
on) and is then recorded. The CLI's ``ashat license`` verbs only print what these return.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ashat.clock import iso_seconds
from ashat.clock import now as clock_now
from ashat.errors import InvalidInput, OperationFailed
from ashat.ops.project import Project, client_for


def registry_path(project: Project) -> Path:
    return project.state_dir / "licenses.jsonl"


def read_registry(project: Project) -> list[dict[str, Any]]:
    path = registry_path(project)
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise InvalidInput(f"{path}:{n} is not JSON; fix or remove that line") from e
    return out


def issue_license(
    project: Project,
    *,
    mainframe_id: str,
    customer: str,
    expires: str,
    channels: Sequence[str],
    key_path: Path,
    out: Path,
    region: str | None = None,
    labels: Sequence[str] = (),
) -> dict[str, Any]:
    """Sign a license, write the token to ``out`` (0600) and record it; return the record.

    Everything is checked before anything is written; should recording fail, the token
    file is removed again, so a refused issue leaves nothing behind.
    """
    from ashat.bundle import load_private_key
    from ashat.fleet.license import issue, parse_expiry
    from ashat.project import write_private

    now = dt.datetime.now(dt.UTC)
    when = parse_expiry(expires, now)
    key = load_private_key(key_path)
    if out.exists():
        raise InvalidInput(f"{out} exists; refusing to overwrite a license file")
    if not out.parent.is_dir():  # a mistyped directory is not made: a license is a secret
        raise InvalidInput(f"--out {out}: directory {out.parent} does not exist")
    from ashat.labels import LabelError, parse_assignments

    try:
        given, removed = parse_assignments(labels)
    except LabelError as e:
        raise InvalidInput(f"--label: {e}") from e
    if removed:
        raise InvalidInput(f"--label {removed[0]}-: a license sets labels (KEY=VALUE)")
    token, lic = issue(
        key, mainframe_id, customer, when, channels, now=now, region=region, labels=given
    )
    record = {**lic.to_json(), "file": str(out.resolve())}
    write_private(out, token.encode("ascii") + b"\n")
    try:
        path = registry_path(project)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        project.workflow().note(None, "license.issued", lic.to_json())
    except BaseException as e:
        with contextlib.suppress(OSError):
            out.unlink()
        if isinstance(e, OSError):
            raise OperationFailed(
                f"cannot record the license in {registry_path(project)}: {e.strerror or e}; "
                f"nothing was issued"
            ) from e
        raise
    return record


def revoke_license(
    project: Project, license_id: str, reason: str | None, *, issued_elsewhere: bool = False
) -> str:
    """Revoke ``license_id`` on OMEGA, then record it; return OMEGA's name. An id neither
    this project issued nor any mainframe OMEGA knows holds is refused (InvalidInput), unless
    ``issued_elsewhere``: OMEGA takes any id, and a typo in an incident would leave the real
    license working while the operator read "revoked"."""
    if not license_id or len(license_id) > 100 or not license_id.isprintable():
        raise InvalidInput(f"invalid license id {license_id!r}")
    server = project.require_server("omega")
    with client_for(server) as omega:
        if not issued_elsewhere:
            known = {str(r.get("license_id")) for r in read_registry(project)}
            if license_id not in known:
                known |= {str(m.get("license_id")) for m in omega.mainframes()}
            if license_id not in known:
                raise InvalidInput(
                    f"no license {license_id!r}: this project did not issue it ('ashat "
                    "license list') and no mainframe OMEGA knows holds it; check the id, or "
                    "revoke a license issued elsewhere with --issued-elsewhere",
                    license_id=license_id,
                )
        omega.revoke_license(license_id)
    project.workflow().note(None, "license.revoked", {"license_id": license_id, "reason": reason})
    return server.name


@dataclass(frozen=True)
class LicenseList:
    licenses: list[dict[str, Any]]  # registry records, each with its "status"
    note: str  # where the revocations came from, or why they were not checked


def list_licenses(project: Project) -> LicenseList:
    """The registry, each record with ``ok`` | ``expired`` | ``revoked`` (OMEGA asked)."""
    records = read_registry(project)
    revoked: set[str] = set()
    note = "OMEGA not configured: revocations not checked"
    server = project.store.server("omega")
    if server is not None:
        from ashat.transport.errors import TransportError

        try:
            with client_for(server, timeout_s=5) as omega:
                revoked = {str(r.get("license_id")) for r in omega.revocations()}
            note = f"revocations from {server.name}"
        except TransportError as e:
            note = f"OMEGA unreachable ({e.message}): revocations not checked"
    now = iso_seconds(clock_now())
    for r in records:
        r["status"] = (
            "revoked" if r["license_id"] in revoked
            else "expired" if r["expires_at"] <= now
            else "ok"
        )  # fmt: skip
    return LicenseList(records, note)
