"""OMEGA keeps an S3 mirror in step with what it approved (``--blob-mirror s3://…``, issue 20).

Every blob of an approved release is copied into the bucket under the blob directory's own
layout (``[prefix/]sha256/ab/<sha256>``, :func:`~.blob_links.s3_key`) by botocore, the AWS
SDK's core, which signs each request (SigV4) and retries what S3 asks to be retried. A
blob is recorded in ``mirrored_blobs`` once the bucket holds it, and only then are licensed
downloads of it redirected there (:func:`~.blob_links.presigned_url`); until then OMEGA
sends it itself. So an approval never waits for the bucket, a bucket that is down costs
OMEGA the bytes and not the rollout, and nothing is redirected to a copy that is not there.

OMEGA copies after each approval and every :data:`COPY_EVERY_S` seconds (a failed copy is
tried again then); replicas sharing a database share the record, and a blob already in the
bucket with the right size is not sent again. The credentials need ``s3:PutObject`` and
``s3:GetObject`` on the prefix (``HeadObject`` is a ``GetObject``); nothing is ever deleted
(a blob is immutable, and pruning the bucket is a lifecycle rule's job).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ashat.agent.blobs import blob_path
from ashat.agent.config import S3Mirror
from ashat.errors import InvalidInput
from ashat.fleet.blob_links import s3_key
from ashat.fleet.omega_store import FleetStore

log = logging.getLogger("ashat.omega")

COPY_EVERY_S = 30.0  # seconds between passes when no approval wakes the copier
BATCH = 200  # blobs asked of the store, and recorded, at a time
CACHE_CONTROL = "public, max-age=31536000, immutable"  # a blob's bytes never change


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


class S3Copy:
    """Copies approved blobs to the mirror and answers which ones it holds."""

    def __init__(
        self,
        mirror: S3Mirror,
        store: FleetStore,
        blobs: Path,
        client: Callable[[S3Mirror], Any] = s3_client,
    ) -> None:
        self.mirror = mirror
        self.store = store
        self.blobs = blobs  # OMEGA's blob directory (the sha256/ab/<digest> layout)
        self._client: Any = client(mirror)  # botocore is imported here, at OMEGA's start
        self.held: set[str] = set()  # known to be in the bucket: blobs never leave it

    def holds(self, sha256: str) -> bool:
        """Whether the bucket has the blob (so a download of it may be redirected)."""
        if sha256 in self.held:
            return True
        if self.store.blob_mirrored(self.mirror.name, sha256):
            self.held.add(sha256)
            return True
        return False

    def copy_pending(self) -> int:
        """Copy every approved blob the record says the bucket lacks; return how many were
        recorded. A blob this OMEGA does not hold (a replica's own blob directory) is left
        for one that does. Raises what botocore raises; what was copied before stays
        recorded."""
        recorded = 0
        skipped: set[str] = set()
        while True:
            pending = [
                sha
                for sha in self.store.unmirrored_blobs(self.mirror.name, BATCH + len(skipped))
                if sha not in skipped
            ]
            if not pending:
                return recorded
            done = []
            for sha in pending:
                path = self.blobs / blob_path(sha)
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    skipped.add(sha)
                    continue
                if not self._in_bucket(sha, size):
                    self._put(sha, path)
                done.append(sha)
            self.store.add_mirrored_blobs(self.mirror.name, done)
            self.held.update(done)
            recorded += len(done)

    def _in_bucket(self, sha256: str, size: int) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = self._client.head_object(
                Bucket=self.mirror.bucket, Key=s3_key(self.mirror, sha256)
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return int(head.get("ContentLength", -1)) == size

    def _put(self, sha256: str, path: Path) -> None:
        with path.open("rb") as body:
            self._client.put_object(
                Bucket=self.mirror.bucket,
                Key=s3_key(self.mirror, sha256),
                Body=body,
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
