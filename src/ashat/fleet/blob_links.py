"""Signed blob URLs on a mirror: who may have a blob is OMEGA's to decide, and any static
server (or CDN) may send the bytes (issue 20).

Blobs are content-addressed and every mainframe checks each one against the signed manifest
as it arrives, so who serves the bytes matters for licensing only. With ``--blob-mirror``,
OMEGA answers a licensed ``GET /v1/blobs/{sha256}`` it allows with ``307 Temporary
Redirect`` to the blob's URL on the mirror, signed for nginx's ``secure_link`` module::

    {mirror}/sha256/ab/<sha256>?lic=<license id>&expires=<unix time>&md5=<signature>

    signature = base64url(MD5("<expires><path><license id> <secret>")), no padding

which the mirror checks with (``contrib/nginx/blob-mirror.conf``)::

    secure_link $arg_md5,$arg_expires;
    secure_link_md5 "$secure_link_expires$uri$arg_lic <secret>";

So a URL is bound to one blob, one license and an expiry (``--blob-url-ttl``, 300 s by
default): changing any of them, or using it later, is refused by the mirror (403, 410).
MD5 is what nginx's module offers; the URL lives minutes and opens only a blob whose
digest the mainframe checks anyway. A mainframe follows the redirect, resumes with
``Range`` there, and asks OMEGA again for a fresh URL on each try; its license token is
never sent to the mirror (httpx drops ``Authorization`` on a redirect to another origin).

With ``--blob-mirror s3://BUCKET/PREFIX`` the mirror is an S3-compatible bucket (AWS S3,
Cloudflare R2, MinIO, Ceph RGW, SeaweedFS) that OMEGA keeps in step itself
(:mod:`.s3_copy`), and the URL is an S3 presigned URL (Signature Version 4, query
authentication, path style)::

    {endpoint}/{bucket}/[prefix/]sha256/ab/<sha256>?X-Amz-Algorithm=AWS4-HMAC-SHA256
        &X-Amz-Credential=…&X-Amz-Date=…&X-Amz-Expires=<ttl>&X-Amz-SignedHeaders=host
        &x-ashat-license=<license id>&X-Amz-Signature=…

The license rides as a query parameter the signature covers (S3 ignores it, and its access
log keeps it): the URL is bound to the blob, the license and the expiry like nginx's.

A release's *pack* (:mod:`.packs`) is signed the same way, at ``packs/<manifest digest>``
beside the blobs (in the copy of the blob directory, or the bucket): the mainframe takes a
whole release from the mirror with one redirect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote, unquote, urlsplit

from ashat.agent.blobs import blob_path
from ashat.agent.config import BlobMirror, S3Mirror

__all__ = ["blob_path", "presigned_url", "s3_key", "signed_url"]

SIGV4 = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def signed_url(mirror: BlobMirror, path: str, license_id: str, now: float) -> str:
    """The mirror's URL of ``path`` (a blob's :func:`blob_path`, or a pack's
    :func:`~.packs.relative`) for ``license_id``, good until ``now + ttl``."""
    base = mirror.url.rstrip("/")
    uri = f"{unquote(urlsplit(base).path)}/{path}"  # nginx's $uri: decoded
    lic = quote(license_id, safe="")  # nginx's $arg_lic: as sent, not decoded
    expires = int(now) + mirror.ttl_s
    signed = f"{expires}{uri}{lic} {mirror.secret}".encode()
    md5 = hashlib.md5(signed, usedforsecurity=False).digest()  # nginx secure_link_md5
    signature = base64.urlsafe_b64encode(md5).rstrip(b"=").decode("ascii")
    return f"{base}/{path}?lic={lic}&expires={expires}&md5={signature}"


def s3_key(mirror: S3Mirror, path: str) -> str:
    """The object key of ``path`` (a blob's, or a pack's) in the bucket: the blob
    directory's own layout."""
    return f"{mirror.prefix}/{path}" if mirror.prefix else path


def presigned_url(mirror: S3Mirror, path: str, license_id: str, now: float) -> str:
    """An S3 presigned ``GET`` of ``path`` for ``license_id``, good until ``now + ttl``
    (AWS Signature Version 4, query authentication, as botocore's ``S3SigV4QueryAuth``
    makes it: ``tests/unit/test_blob_links.py`` compares the two)."""
    split = urlsplit(mirror.endpoint)
    host = split.netloc.lower().removesuffix(_DEFAULT_PORTS.get(split.scheme, "\0"))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(now)))
    scope = f"{stamp[:8]}/{mirror.region}/s3/aws4_request"
    target = quote(f"/{mirror.bucket}/{s3_key(mirror, path)}", safe="/-_.~")
    params = {
        "X-Amz-Algorithm": SIGV4,
        "X-Amz-Credential": f"{mirror.access_key_id}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": str(mirror.ttl_s),
        "X-Amz-SignedHeaders": "host",
        "x-ashat-license": license_id,
    }
    query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(params.items()))
    request = "\n".join(("GET", target, query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"))
    to_sign = "\n".join((SIGV4, stamp, scope, hashlib.sha256(request.encode()).hexdigest()))
    key = f"AWS4{mirror.secret_access_key}".encode()
    for part in (stamp[:8], mirror.region, "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    signature = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
    return f"{split.scheme}://{split.netloc}{target}?{query}&X-Amz-Signature={signature}"


def _q(text: str) -> str:
    """SigV4's URI encoding: everything but unreserved characters, '/' too."""
    return quote(text, safe="-_.~")
