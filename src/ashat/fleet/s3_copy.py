"""OMEGA keeps an S3 mirror in step with what it approved (``--blob-mirror s3://…``, issue 20).

Every blob of an approved release is copied into the bucket under the blob directory's own
layout (``[prefix/]sha256/ab/<sha256>``, :func:`~.blob_links.s3_key`) by botocore, the AWS
SDK's core, which signs each request (SigV4) and retries what S3 asks to be retried. A
blob is recorded in ``mirrored_blobs`` once the bucket holds it, and only then are licensed
downloads of it redirected there (:func:`~.blob_links.presigned_url`); until then OMEGA
sends it itself. So an approval never waits for the bucket, a bucket that is down costs
OMEGA the bytes and not the rollout, and nothing is redirected to a copy that is not there.

OMEGA copies after each approval and every :data:`COPY_EVERY_S` seconds (a failed copy is
tried again then; one blob failing does not stop the others); replicas sharing a database
share the record. Each blob is checked against its name before it leaves (the blob store's
own check, which quarantines an altered one) and sent with its SHA-256 as
``x-amz-checksum-sha256``, which S3 checks. A mainframe that could not take a blob from the
bucket (refused, or the wrong bytes: someone else wrote it, or it was deleted) asks OMEGA
again with ``X-Ashat-Direct``; OMEGA sends that blob itself and forgets it was copied, so
the next pass copies it again. The credentials need ``s3:PutObject`` (the copies) and
``s3:GetObject`` (the presigned URLs act with them) on the prefix; nothing is ever deleted.

After the blobs, each pass copies the *packs* OMEGA built (:mod:`.packs`: a release's blobs
in one file, for the releases approved last) to ``[prefix/]packs/<manifest digest>``,
recorded in ``mirrored_packs``; a mainframe then takes a whole release from the bucket with
one redirect. A pack over :data:`MAX_PUT` (one ``PUT``'s limit) is not copied: its blobs go
one by one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ashat.agent.blobs import BlobStore
from ashat.agent.config import S3Mirror
from ashat.errors import InvalidInput
from ashat.fleet import packs
from ashat.fleet.blob_links import blob_path, s3_key
from ashat.fleet.omega_store import FleetStore

log = logging.getLogger("ashat.omega")

COPY_EVERY_S = 30.0  # seconds between passes when no approval wakes the copier
BATCH = 200  # blobs asked of the store, and recorded, at a time
CACHE_CONTROL = "public, max-age=31536000, immutable"  # a blob's bytes never change
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
MAX_PUT = 5 << 30  # S3's limit for one PUT: a bigger pack is not copied (no multipart here)
HASH_CHUNK = 1 << 20


def s3_client(mirror: S3Mirror) -> Any:
    """A botocore S3 client for the mirror (path-style addressing, SigV4). Raises
    :class:`InvalidInput` where botocore is not installed."""
    try:
        import botocore.session
        from botocore.config import Config
    except ImportError as e:
        raise InvalidInput(
            "--blob-mirror s3://…: OMEGA copies blobs there with botocore; install it "
            "(pip install 'ashat[s3]')"
        ) from e
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        request_checksum_calculation="when_required",  # S3-compatibles differ on the rest
        response_checksum_validation="when_required",
    )
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        region_name=mirror.region,
        endpoint_url=mirror.endpoint,
        aws_access_key_id=mirror.access_key_id,
        aws_secret_access_key=mirror.secret_access_key,
        config=config,
    )


class CopyFailed(Exception):
    """Some blobs or packs could not be copied this pass (the others were): the first error
    says why."""


class S3Copy:
    """Copies approved blobs, and the packs OMEGA built, to the mirror and answers which
    ones it holds."""

    def __init__(
        self,
        mirror: S3Mirror,
        store: FleetStore,
        blobs: BlobStore,
        client: Callable[[S3Mirror], Any] = s3_client,
        built_packs: Callable[[], Iterable[tuple[str, Path]]] = lambda: (),
    ) -> None:
        self.mirror = mirror
        self.store = store
        self.blobs = blobs  # OMEGA's blob store: what is copied is checked against its name
        self._client: Any = client(mirror)  # botocore is imported here, at OMEGA's start
        self.built_packs = built_packs  # (manifest digest, file) of each pack to copy
        # paths (blob_path, packs.relative) recorded as in the bucket (forget() takes a
        # blob back): known without a query, on the event loop
        self.held: set[str] = set()
        self.stop = threading.Event()  # OMEGA is stopping: a pass ends after its blob
        # each pack's SHA-256 (for S3's check), by digest, with the (inode, size) it was of
        self._pack_sums: dict[str, tuple[tuple[int, int], bytes]] = {}

    def holds(self, path: str) -> bool:
        """Whether the bucket has the blob or pack at ``path`` (its path in the blob
        directory), so a download of it may be redirected."""
        if path in self.held:
            return True
        kind, _, name = path.partition("/")
        if kind == packs.DIRECTORY:
            copied = self.store.pack_mirrored(self.mirror.name, name)
        else:
            copied = self.store.blob_mirrored(self.mirror.name, path.rsplit("/", 1)[-1])
        if copied:
            self.held.add(path)
        return copied

    def forget(self, path: str) -> None:
        """A mainframe (or its site cache) could not take the blob or pack at ``path`` from
        the bucket (refused, or the wrong bytes): not redirected there until the next pass
        has copied it again."""
        self.held.discard(path)
        kind, _, name = path.partition("/")
        if kind == packs.DIRECTORY:
            self.store.forget_mirrored_pack(self.mirror.name, name)
        else:
            self.store.forget_mirrored_blob(self.mirror.name, path.rsplit("/", 1)[-1])

    def copy_pending(self) -> int:
        """Copy every approved blob the record says the bucket lacks, then each pack not
        copied yet; return how many were recorded. A blob this OMEGA does not hold (a
        replica's own blob directory) is left for one that does. Raises
        :class:`CopyFailed` once the pass is over if any could not be copied; the others
        are recorded."""
        recorded, failed = 0, 0
        first: BaseException | None = None
        after = ""
        while not self.stop.is_set():
            pending = self.store.unmirrored_blobs(self.mirror.name, after, BATCH)
            if not pending:
                break
            after = pending[-1]
            done = []
            for sha in pending:
                if self.stop.is_set():
                    break
                try:
                    if self._put(sha):
                        done.append(sha)
                except Exception as e:  # the next blob may go: a pass is not all or nothing
                    failed += 1
                    first = first or e
            self.store.add_mirrored_blobs(self.mirror.name, done)
            self.held.update(blob_path(sha) for sha in done)
            recorded += len(done)
        for digest, path in self.built_packs():
            if self.stop.is_set() or self.holds(packs.relative(digest)):
                continue
            try:
                if self._put_pack(digest, path):
                    self.store.add_mirrored_pack(self.mirror.name, digest)
                    self.held.add(packs.relative(digest))
                    recorded += 1
            except Exception as e:
                failed += 1
                first = first or e
        if first is not None:
            raise CopyFailed(f"{failed} object(s) not copied; the first: {describe(first)}")
        return recorded

    def _put(self, sha256: str) -> bool:
        """Upload one blob after checking it hashes to its name (False: not held here).
        S3 checks the body against its SHA-256 too (``x-amz-checksum-sha256``), and an
        object already there is replaced by the same bytes."""
        size = self.blobs.size(sha256)  # hashes it unless hashed before; altered: quarantined
        if size is None:
            return False
        fd = os.open(self.blobs.file(sha256), os.O_RDONLY | NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as body:
            self._send(blob_path(sha256), body, size, bytes.fromhex(sha256))
        return True

    def _put_pack(self, digest: str, path: Path) -> bool:
        """Upload one pack (False: too big for one PUT, or gone: pruned since). Its blobs
        were checked as it was built, and each is checked again by every mainframe; S3
        checks the body against the SHA-256 computed here."""
        try:
            fd = os.open(path, os.O_RDONLY | NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "rb") as body:
            size = os.fstat(body.fileno()).st_size
            if size > MAX_PUT:
                return False
            known = (os.fstat(body.fileno()).st_ino, size)
            checksum = self._pack_sums.get(digest)
            if checksum is None or checksum[0] != known:  # hashed once, not at every try
                sha = hashlib.sha256()
                while chunk := body.read(HASH_CHUNK):
                    if self.stop.is_set():
                        return False
                    sha.update(chunk)
                checksum = self._pack_sums[digest] = (known, sha.digest())
                body.seek(0)
            self._send(packs.relative(digest), body, size, checksum[1])
        return True

    def _send(self, path: str, body: Any, size: int, sha256: bytes) -> None:
        self._client.put_object(
            Bucket=self.mirror.bucket,
            Key=s3_key(self.mirror, path),
            Body=body,
            ContentLength=size,
            ChecksumSHA256=base64.b64encode(sha256).decode("ascii"),
            ContentType="application/octet-stream",
            CacheControl=CACHE_CONTROL,
        )


def describe(e: BaseException) -> str:
    """One line for the log: S3's error code and message, or the connection failure (never a
    credential: botocore's messages carry none)."""
    response = getattr(e, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return str(e).splitlines()[0][:300] if str(e) else type(e).__name__
