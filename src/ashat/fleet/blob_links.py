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
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote, unquote, urlsplit

from ashat.agent.blobs import blob_path
from ashat.agent.config import BlobMirror

__all__ = ["blob_path", "signed_url"]


def signed_url(mirror: BlobMirror, sha256: str, license_id: str, now: float) -> str:
    """The mirror's URL of ``sha256`` for ``license_id``, good until ``now + ttl``."""
    base = mirror.url.rstrip("/")
    uri = f"{unquote(urlsplit(base).path)}/{blob_path(sha256)}"  # nginx's $uri: decoded
    lic = quote(license_id, safe="")  # nginx's $arg_lic: as sent, not decoded
    expires = int(now) + mirror.ttl_s
    signed = f"{expires}{uri}{lic} {mirror.secret}".encode()
    md5 = hashlib.md5(signed, usedforsecurity=False).digest()  # nginx secure_link_md5
    signature = base64.urlsafe_b64encode(md5).rstrip(b"=").decode("ascii")
    return f"{base}/{blob_path(sha256)}?lic={lic}&expires={expires}&md5={signature}"
