"""``ashat agent fsck``: check a whole data directory against the digests that name it.

Every stored file (``blobs/sha256/``, ``blobs/mode-NNNN/``) must hash to its name, and every
release tree must be exactly its manifest (:meth:`~.releases.ReleaseStore.damaged`, by
hashing every file). Nothing is changed: an agent running on the directory quarantines what
it finds altered at its next activation, rollback or upload; this command only reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashat.agent.blobs import SHA256_RE, BlobStore
from ashat.agent.config import DEFAULT_MAX_BLOB_BYTES
from ashat.agent.layout import Layout
from ashat.agent.releases import ReleaseStore
from ashat.bundle.errors import BundleError


def app_dirs(data: Path) -> list[Path]:
    """The apps' data directories of a host agent's ``data`` (``DATA/apps/NAME``)."""
    apps = data / "apps"
    return sorted(p for p in apps.iterdir() if p.is_dir()) if apps.is_dir() else []


@dataclass
class FsckReport:
    blobs: int = 0  # stored files checked
    releases: int = 0
    findings: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "blobs": self.blobs,
            "releases": self.releases,
            "findings": self.findings,
            "clean": self.clean,
        }


def check_data_dir(data: Path, blob_root: Path | None = None) -> FsckReport:
    """Hash every stored file and release tree under ``data``; what is not as signed. A
    host agent's data directory (``--apps``): every app's, findings named by app."""
    apps = app_dirs(data)
    if apps and not (data / "blobs").exists():
        report = FsckReport()
        for app in apps:
            own = check_data_dir(app, blob_root)
            report.blobs += own.blobs
            report.releases += own.releases
            report.findings += [f"apps/{app.name}: {line}" for line in own.findings]
        return report
    layout = Layout(data, blob_root)
    store = BlobStore(layout.blobs, layout.blob_tmp, DEFAULT_MAX_BLOB_BYTES)
    report = FsckReport()
    for kind in store.kinds():
        for shard in sorted(Path(kind).iterdir()):
            for entry in sorted(shard.iterdir()) if shard.is_dir() else []:
                report.blobs += 1
                where = f"{Path(kind).name}/{shard.name}/{entry.name}"
                if not SHA256_RE.fullmatch(entry.name):
                    report.findings.append(f"blobs/{where}: not a digest")
                elif not store.holds(str(entry), entry.name, entry.lstat().st_size):
                    report.findings.append(f"blobs/{where}: does not hash to its name")
    releases = ReleaseStore(layout, store)
    for update_id in releases.ids():
        report.releases += 1
        try:
            m = releases.manifest(update_id)
        except (BundleError, OSError) as e:
            report.findings.append(f"{update_id}: its manifest cannot be read ({e})")
            continue
        for path in releases.damaged(m, by_hash=True):
            report.findings.append(f"{update_id}: {path} is not the signed bytes")
    return report
