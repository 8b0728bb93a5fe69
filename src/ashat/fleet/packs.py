"""A release's blobs in one file: one request brings a mainframe a whole release.

A *pack* is the release's distinct file blobs, each once, in the order their first entry
has in the manifest's ``files``, concatenated, with nothing between them. Nothing in it
says where a blob starts: a mainframe computes that (:func:`layout`) from the manifest it
has already verified, and checks each blob against its digest as it ends, exactly as one
fetched alone. So a pack adds nothing to trust; it only moves bytes with fewer requests
(docs/fleet-protocol.md, "Packs").

OMEGA answers ``GET /v1/packs/{update_id}/{manifest_digest}`` for an approved release,
``Range`` included, from ``packs/<manifest_digest>`` in its blob directory, built here
(:func:`build`) at approval or on first request, for the :data:`KEPT` releases approved
last only (so no request makes it build old ones over and over). Behind
nginx (``--blob-offload nginx``) nginx sends it with sendfile. A mainframe takes a run of
consecutive missing blobs (at least :data:`MIN_RUN`) from the pack with one ranged request,
and the rest one by one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from ashat.agent.blobs import BLOB_MODE, BlobStore, fsync_paths
from ashat.agent.errors import NoSuchBlob
from ashat.bundle.manifest import Manifest
from ashat.faults import crash_point

DIRECTORY = "packs"  # in the blob directory, so nginx's internal location reaches it
KEPT = 4  # OMEGA packs the releases approved last, this many; older ones go blob by blob
MIN_RUN = 8  # consecutive missing blobs a mainframe takes from the pack in one request
COPY_CHUNK = 1 << 20
STALE_TEMP_S = 3600  # a temporary pack file this old is a crashed build's


@dataclass(frozen=True)
class Piece:
    sha256: str
    size: int
    offset: int  # of its first byte in the pack


def layout(m: Manifest) -> list[Piece]:
    """Where each blob of ``m`` is in its pack."""
    pieces: list[Piece] = []
    seen: set[str] = set()
    offset = 0
    for e in m.files:
        if e.kind != "file" or e.sha256 in seen:
            continue
        seen.add(e.sha256)
        pieces.append(Piece(e.sha256, e.size, offset))
        offset += e.size
    return pieces


def runs(pieces: Sequence[Piece], wanted: set[str], min_run: int = MIN_RUN) -> list[list[Piece]]:
    """The runs of at least ``min_run`` consecutive pieces that are all ``wanted`` (empty
    ones left out)."""
    out: list[list[Piece]] = []
    current: list[Piece] = []
    for p in [*pieces, None]:
        if p is not None and p.size == 0:
            continue  # no bytes in the pack: fetched alone, which needs no request
        if p is not None and p.sha256 in wanted:
            current.append(p)
            continue
        if len(current) >= min_run:
            out.append(current)
        current = []
    return out


def relative(digest: str) -> str:
    """Where the pack of the manifest ``digest`` is in a blob directory (a mirror's too)."""
    return f"{DIRECTORY}/{digest}"


def pack_path(store: BlobStore, digest: str) -> Path:
    return store.root / relative(digest)


_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}  # one build of a pack at a time in this process


def build(store: BlobStore, m: Manifest, keep: Collection[str] = ()) -> Path:
    """The pack of ``m`` (approved; its blobs stored), built now unless it is there.

    Written under a temporary name, made durable and renamed, so a pack present is whole
    (and a mainframe checks every blob of it anyway); replicas sharing the directory may
    both build it, and the second rename changes nothing. Building one drops every other
    pack but those of ``keep`` (manifest digests). Raises :class:`NoSuchBlob` if a blob is
    missing, OSError.
    """
    pieces = layout(m)
    total = sum(p.size for p in pieces)
    digest = m.digest()
    dest = pack_path(store, digest)
    with _locks_guard:
        lock = _locks.setdefault(digest, threading.Lock())
    with lock:
        with contextlib.suppress(FileNotFoundError):
            if dest.stat().st_size == total:
                return dest
        for p in pieces:
            if store.size(p.sha256) != p.size:
                raise NoSuchBlob(f"blob {p.sha256} is not stored here", sha256=p.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{digest}.", suffix=".tmp", dir=dest.parent)
        temp = Path(name)
        try:
            with open(fd, "wb") as out:
                for p in pieces:
                    with open(store.file(p.sha256), "rb") as blob:
                        _copy(blob.fileno(), out.fileno(), p.size)
                os.fchmod(out.fileno(), BLOB_MODE)
            crash_point("pack.built")
            fsync_paths([temp])
            os.replace(temp, dest)
            fsync_paths([dest.parent])
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    _prune(dest.parent, {digest, *keep})
    return dest


def _copy(src: int, dst: int, size: int) -> None:
    """``size`` bytes from ``src`` to ``dst``, in the kernel where it can (copy_file_range)."""
    left = size
    while left:
        try:
            n = os.copy_file_range(src, dst, min(left, COPY_CHUNK))
        except OSError:  # not between these filesystems on this kernel: through memory
            chunk = os.read(src, min(left, COPY_CHUNK))
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view) :]
            n = len(chunk)
        if n == 0:
            raise OSError(f"a blob ended {left} bytes early while packing")
        left -= n


def _prune(directory: Path, keep: Collection[str]) -> None:
    """Drop every pack but those of ``keep``, and any temporary file a crashed build left
    over an hour ago."""
    now = time.time()
    for entry in os.scandir(directory):
        with contextlib.suppress(FileNotFoundError):
            if not entry.is_file(follow_symlinks=False):
                continue
            if not entry.name.startswith("."):
                if entry.name not in keep:
                    os.unlink(entry.path)
            elif now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S:
                os.unlink(entry.path)
