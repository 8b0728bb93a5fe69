"""The agent's OSV advisory snapshot: what the Security Scan checks pinned requirements
against (issue 18).

``ashat advisories update`` takes OSV's published data for PyPI — a zip with one OSV JSON
record per member, at :data:`OSV_PYPI_URL` — fetched on demand or from a copy on disk (an
air-gapped PUBLIC), checks every record, and puts the result in place of the previous
snapshot with one rename: ``DATA/advisories/`` beside the agent's other state, one
``<id>.json`` per record and a ``SOURCE`` file saying where and when it came from. A record
that is not OSV is skipped and counted; a zip with no record at all is refused, and the
previous snapshot stays. Member names are never used as paths.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ashat.agent.checks.osv import MAX_ADVISORY_BYTES, MalformedAdvisory, parse_advisories
from ashat.agent.checks.security import SOURCE_FILE
from ashat.clock import iso_seconds
from ashat.errors import InvalidInput, OperationFailed

OSV_PYPI_URL = "https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip"
MAX_ZIP_BYTES = 1 << 30  # OSV's PyPI zip is tens of MB
MAX_TOTAL_BYTES = 4 << 30  # unpacked
MAX_RECORDS = 1_000_000
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")


@dataclass(frozen=True)
class Snapshot:
    directory: Path
    records: int
    skipped: int
    source: str
    fetched_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "records": self.records,
            "skipped": self.skipped,
            "source": self.source,
            "fetched_at": self.fetched_at,
        }


def update(target: Path, source: str, now: dt.datetime, ca_file: str | None = None) -> Snapshot:
    """Replace the snapshot at ``target`` with the records of ``source`` (an http(s) URL or
    a zip file on disk). Raises InvalidInput (not a zip, no OSV record), a transport error
    (cannot fetch: exit 4) or OperationFailed (cannot write ``target``)."""
    target = target.absolute()
    if not target.parent.is_dir():
        raise InvalidInput(f"{target.parent} is not a directory (the agent's --data?)")
    try:
        work = Path(tempfile.mkdtemp(prefix=".advisories-", dir=target.parent))
    except OSError as e:
        raise OperationFailed(f"cannot write in {target.parent}: {e.strerror or e}") from e
    try:
        if re.match(r"https?://", source):
            from ashat.transport.errors import TransportError
            from ashat.transport.fetch import download

            archive = work / "all.zip"
            try:
                download(source, archive, max_bytes=MAX_ZIP_BYTES, ca_file=ca_file)
            except TransportError as e:
                raise type(e)(
                    f"{e.message}; without a route to it, fetch the file elsewhere and give "
                    "it: ashat advisories update --from all.zip"
                ) from e
        else:
            archive = Path(source)
            if not archive.is_file():
                raise InvalidInput(f"--from {source}: no such file (a zip of OSV records)")
        staging = work / "advisories"
        staging.mkdir()
        records, skipped = _unpack(archive, staging, source)
        fetched_at = iso_seconds(now)
        meta = {"source": source, "fetched_at": fetched_at, "records": records, "skipped": skipped}
        (staging / SOURCE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        staging.chmod(0o755)  # the agent may run as another user than whoever updates it
        old = work / "previous"
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
    except OSError as e:
        raise OperationFailed(f"cannot write {target}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Snapshot(target, records, skipped, source, fetched_at)


def _unpack(archive: Path, staging: Path, source: str) -> tuple[int, int]:
    """Each OSV record of ``archive`` as ``staging/<id>.json``: (records, skipped)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise InvalidInput(f"{source} is not a zip of OSV records: {e}") from e
    records = skipped = total = 0
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > MAX_RECORDS:
            raise InvalidInput(f"{source} holds {len(members)} files, more than {MAX_RECORDS}")
        for m in members:
            total += m.file_size
            if total > MAX_TOTAL_BYTES or m.file_size > MAX_ADVISORY_BYTES:
                raise InvalidInput(f"{source} unpacks to more than we accept ({m.filename})")
            if not m.filename.endswith(".json"):
                skipped += 1
                continue
            try:
                data = json.loads(zf.read(m))
                parsed = parse_advisories(data)
            except (ValueError, MalformedAdvisory):
                skipped += 1
                continue
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise InvalidInput(f"{source} is damaged ({m.filename}: {e})") from e
            ident = str(data.get("id", "")) if isinstance(data, dict) else ""
            if not parsed or not ID_RE.fullmatch(ident):
                skipped += 1
                continue
            out = staging / f"{ident}.json"
            out.write_bytes(json.dumps(data, separators=(",", ":")).encode())
            out.chmod(0o644)
            records += 1
    if records == 0:
        raise InvalidInput(
            f"{source} holds no OSV record ({skipped} files skipped): is it OSV's all.zip?"
        )
    return records, skipped
