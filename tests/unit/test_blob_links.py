"""S3 presigned blob URLs (issue 20): ours are what botocore, the AWS SDK's core, makes for
the same request at the same second, byte for byte; the URL names the blob, the license and
the expiry. (That a real S3 server honours them and refuses altered ones is
``tests/integration/test_s3_mirror.py``, against SeaweedFS.)"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl, urlsplit

import pytest

from ashat.agent.config import S3Mirror
from ashat.errors import InvalidInput
from ashat.fleet import packs
from ashat.fleet.blob_links import blob_path, presigned_url, s3_key

botocore_auth = pytest.importorskip("botocore.auth", reason="botocore is in the [test] extra")
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

SHA = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
BLOB = blob_path(SHA)  # where it is in the blob directory, and in the bucket
NOW = 1_796_500_000.0  # 2026-12-05 19:46:40 UTC


def mirror(**kw: object) -> S3Mirror:
    fields: dict[str, object] = {
        "bucket": "fleet-blobs",
        "prefix": "ashat",
        "endpoint": "https://s3.eu-west-1.amazonaws.com",
        "region": "eu-west-1",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "ttl_s": 300,
    }
    return S3Mirror(**(fields | kw))  # type: ignore[arg-type]


def botocore_url(
    m: S3Mirror, license_id: str, monkeypatch: pytest.MonkeyPatch, path: str = BLOB
) -> str:
    monkeypatch.setattr(
        botocore_auth, "get_current_datetime", lambda: dt.datetime.fromtimestamp(NOW, dt.UTC)
    )
    url = f"{m.endpoint}/{m.bucket}/{s3_key(m, path)}"
    request = AWSRequest(method="GET", url=url, params={"x-ashat-license": license_id})
    auth = botocore_auth.S3SigV4QueryAuth(
        Credentials(m.access_key_id, m.secret_access_key), "s3", m.region, expires=m.ttl_s
    )
    auth.add_auth(request)
    return str(request.url)


@pytest.mark.parametrize(
    ("changes", "license_id"),
    [
        ({}, "lic-7"),
        ({"prefix": ""}, "lic-7"),
        ({"prefix": "a/b.c"}, "ACME mf 3/x"),  # a license id is any text: quoted, signed
        ({"endpoint": "http://127.0.0.1:9000", "region": "us-east-1"}, "lic-1"),  # MinIO
        ({"endpoint": "https://acct.r2.cloudflarestorage.com", "region": "auto"}, "l"),  # R2
        ({"endpoint": "https://rgw.example.com:443", "ttl_s": 60}, "lic-1"),  # default port
    ],
)
def test_presigned_urls_are_botocores(
    changes: dict[str, object], license_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = mirror(**changes)
    for path in (BLOB, packs.relative(SHA)):  # a blob, and a release's pack
        ours = presigned_url(m, path, license_id, NOW)
        theirs = botocore_url(m, license_id, monkeypatch, path)
        assert urlsplit(ours).path == urlsplit(theirs).path
        assert dict(parse_qsl(urlsplit(ours).query)) == dict(parse_qsl(urlsplit(theirs).query))


def test_a_url_names_the_blob_the_license_and_the_expiry() -> None:
    url = presigned_url(mirror(), BLOB, "lic-7", NOW)
    split = urlsplit(url)
    assert split.path == f"/fleet-blobs/ashat/sha256/ab/{SHA}"
    query = dict(parse_qsl(split.query))
    assert query["x-ashat-license"] == "lic-7"
    assert query["X-Amz-Expires"] == "300"
    assert query["X-Amz-Date"] == "20261205T194640Z"
    assert "wJalr" not in url  # the secret signs; it is never in the URL
    others = {
        presigned_url(mirror(), BLOB, "lic-8", NOW),
        presigned_url(mirror(), blob_path(SHA[::-1]), "lic-7", NOW),
        presigned_url(mirror(), BLOB, "lic-7", NOW + 1),
        presigned_url(mirror(), packs.relative(SHA), "lic-7", NOW),  # its name, as a pack
    }
    signatures = {dict(parse_qsl(urlsplit(u).query))["X-Amz-Signature"] for u in others}
    assert len(signatures | {query["X-Amz-Signature"]}) == 5


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"bucket": "ab"}, "is not an S3 bucket name"),
        ({"bucket": "a..b"}, "is not an S3 bucket name"),
        ({"prefix": "/x"}, "the prefix must be"),
        ({"endpoint": "https://s3.example.com/path"}, "without a path"),
        ({"region": "eu west"}, "not a region name"),
        ({"access_key_id": ""}, "expected aws_access_key_id"),
        ({"ttl_s": 5}, "--blob-url-ttl"),
    ],
)
def test_a_bad_mirror_is_refused(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle) as e:
        mirror(**changes)
    assert "wJalr" not in e.value.message
    assert "wJalr" not in repr(mirror())
