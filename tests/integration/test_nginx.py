"""Blobs served by nginx (issue 20), with Debian's real nginx and the very files in
``contrib/nginx/`` (only the lines marked CHANGE are set for the test):

- OMEGA behind nginx (``--blob-offload nginx``): OMEGA checks each license and answers
  ``X-Accel-Redirect``; nginx sends the bytes (sendfile, Range); the internal location is
  not reachable from outside;
- signed URLs on a mirror (``--blob-mirror``, nginx ``secure_link``): a licensed download
  is redirected there; an altered, re-bound or expired URL is refused;
- a site cache (``--blob-cache``, nginx ``proxy_cache``): the mainframes behind it cost
  OMEGA one answer per blob.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.agent.config import BlobMirror
from ashat.demo import free_port
from ashat.fleet.blob_links import blob_path, signed_url
from support import answers_by_status, deploy, downloads_by, wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import nginx_run  # noqa: E402  (bench/ is not a package; the benchmark starts nginx the same way)
from nginx_run import Nginx  # noqa: E402

NGINX = nginx_run.nginx_binary()
SECRET = "test-mirror-secret-0123456789"

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light; .ci/run does)"
)


def https(n: Nginx) -> str:
    return f"https://127.0.0.1:{n.port}"


def adapt(name: str, port: int, tls: tuple[Path, Path], changes: dict[str, str]) -> str:
    """``contrib/nginx/NAME`` with each line marked CHANGE set for the test (it listens on
    ``port`` with the test's certificate)."""
    stem = name.split("-")[-1].removesuffix(".conf").replace("mirror", "blobs")
    return nginx_run.adapt(
        name,
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            f"/etc/ashat/tls/{stem}.crt": str(tls[0]),
            f"/etc/ashat/tls/{stem}.key": str(tls[1]),
            **changes,
        },
    )


def site_cache(
    omega: Any,
    port: int,
    tls: tuple[Path, Path],
    changes: dict[str, str] | None = None,
    cache_dir: Path | None = None,
) -> str:
    """contrib/nginx/site-cache.conf in front of ``omega``, listening on ``port``, its
    cache under the test's directory (``cache_dir``, or beside OMEGA's data)."""
    where = cache_dir or Path(str(omega.data)).parent / "site-cache"
    return adapt(
        "site-cache.conf",
        port,
        tls,
        {
            "/var/cache/nginx/ashat": str(where),
            "max_size=50g": "max_size=1g",
            "proxy_pass https://omega.example.com;": f"proxy_pass {omega.url};",
            **(changes or {}),
        },
    )


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[str, str, int], Nginx]]:
    """``nginx(name, server_blocks, port)``: a real nginx serving those blocks on loopback."""
    started: list[Nginx] = []

    def start(name: str, servers: str, port: int) -> Nginx:
        n = nginx_run.start(tmp_path / f"nginx-{name}", servers, port)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    from process_fixtures import _tls_files

    d = tmp_path / "nginx-tls"
    d.mkdir()
    return _tls_files(d)


def _ship(fleet: Any, update_id: str = "v1") -> None:
    (fleet.root / "VERSION").write_text("2.0.0\n")
    for args in (("push", update_id, "through nginx"), ("verify", update_id)):
        res = deploy(*args)
        assert res.exit_code == 0, res.output
    res = deploy("approve", update_id, "--as", "bob")
    assert res.exit_code == 0, res.output
    assert fleet.currents() == [update_id] * len(fleet.mainframes)


def _manifest_blobs(fleet: Any, update_id: str) -> dict[str, int]:
    import json

    m = json.loads((fleet.root / ".ashat" / "manifests" / f"{update_id}.json").read_bytes())
    return {f["sha256"]: f["size"] for f in m["files"] if f["kind"] == "file"}


def _last(n: Nginx, uri: str) -> dict[str, str]:
    """The last request for ``uri`` in the access log, once logged (nginx logs a request
    as it ends, which may be after its client has the answer; the polls go on beside)."""
    wait_for(lambda: any(r["uri"] == uri for r in n.access()), 5, f"{uri} in the access log")
    return [r for r in n.access() if r["uri"] == uri][-1]


def _omega_blob_answers(fleet: Any, route: str = "/v1/blobs/{sha256}") -> int:
    """How many ``GET`` of ``route`` (a blob's, or a pack's) OMEGA answered 200 (its own
    metrics)."""
    return answers_by_status(fleet.omega.url, "GET", route).get(200, 0)


def test_omega_behind_nginx_lets_nginx_send_the_blobs(
    hello_fleet: Any, nginx: Callable[..., Nginx], tls: tuple[Path, Path]
) -> None:
    cert = tls[0]
    port = free_port()
    box: dict[str, Nginx] = {}

    def front(omega: Any) -> tuple[str, Path | None]:
        conf = adapt(
            "omega.conf",
            port,
            tls,
            {
                "server 127.0.0.1:8701;": f"server {omega.url.removeprefix('http://')};",
                "/var/lib/ashat/omega/data/blobs/": f"{omega.data / 'blobs'}/",
            },
        )
        box["n"] = nginx("omega", conf, port)
        return https(box["n"]), cert

    fleet = hello_fleet(n=2, omega_args=("--blob-offload", "nginx"), front=front)
    _ship(fleet)
    n = box["n"]
    blobs = _manifest_blobs(fleet, "v1")
    # each mainframe took the release's blobs in one ranged request for its pack
    served = [
        r for r in n.access() if r["uri"].startswith("/v1/packs/v1/") and r["status"] == "206"
    ]
    assert len(served) == 2, n.access()
    for r in served:
        # nginx sent every byte; OMEGA's own answer had no body (X-Accel-Redirect)
        assert int(r["sent"]) == sum(blobs.values()), r
        assert r["upstream"] == "0_", r
    pack = served[0]["uri"]

    sha, size = max(blobs.items(), key=lambda kv: kv[1])
    lic = fleet.mainframes[0].data.parent / "license"
    token = lic.read_text().strip()
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as http:
        # a blob alone is nginx's to send too, once OMEGA checked the license
        r = http.get(f"{https(n)}/v1/blobs/{sha}", headers={"Authorization": f"License {token}"})
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha
        assert _last(n, f"/v1/blobs/{sha}")["upstream"] == "0_"
        assert _omega_blob_answers(fleet) >= 1
        # a pack's range, and its directory reachable by the redirect alone
        r = http.get(
            f"{https(n)}{pack}", headers={"Authorization": f"License {token}", "Range": "bytes=3-9"}
        )
        assert r.status_code == 206 and len(r.content) == 7
        assert r.headers["content-range"] == f"bytes 3-9/{sum(blobs.values())}"
        digest = pack.rsplit("/", 1)[1]
        assert http.get(f"{https(n)}/_ashat_blobs/packs/{digest}").status_code == 404
        assert http.get(f"{https(n)}{pack}").status_code == 401
        # Range through nginx: resumes are nginx's too
        r = http.get(
            f"{https(n)}/v1/blobs/{sha}",
            headers={"Authorization": f"License {token}", "Range": f"bytes={size - 5}-"},
        )
        assert r.status_code == 206 and len(r.content) == 5
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        # the internal location is nginx's alone
        inside = http.get(f"{https(n)}/_ashat_blobs/{blob_path(sha)}")
        assert inside.status_code == 404 and len(inside.content) < 1000
        # no license, no bytes (the offload header from a client changes nothing)
        r = http.get(f"{https(n)}/v1/blobs/{sha}", headers={"X-Ashat-Offload": "nginx"})
        assert r.status_code == 401 and "License" in r.json()["error"]


def test_with_offload_the_blob_store_is_open_to_the_agents_group_whatever_the_umask(
    agent_factory: Any, tmp_path: Path
) -> None:
    """A review ran one OMEGA with ``--blob-offload nginx`` as documented (nginx's user in
    the group that owns the blob directory) and every install failed: the agent made
    ``DATA/blobs`` 0700 at each start, and under the systemd unit's ``UMask=0077`` every
    directory below it too, so nginx answered 403 (which the mainframe blamed on OMEGA).
    nginx runs as root in these tests, so the modes themselves are what is checked."""
    import os
    import stat

    from ashat.transport.client import BlobRef

    old = os.umask(0o077)  # the unit's, inherited by the agent
    try:
        omega = agent_factory(role="omega", args=("--blob-offload", "nginx"))
    finally:
        os.umask(old)
    content = b"a blob nginx will send\n"
    sha = hashlib.sha256(content).hexdigest()
    (tmp_path / "b").write_bytes(content)
    with omega.client() as c:
        c.upload([BlobRef(sha, len(content), tmp_path / "b")])
    blobs = omega.data / "blobs"
    for d in (blobs, *(blobs / blob_path(sha)).parents):
        if d == blobs.parent:
            break
        assert stat.S_IMODE(d.stat().st_mode) & 0o050 == 0o050, f"{d}: {d.stat().st_mode:o}"
    assert stat.S_IMODE((blobs / blob_path(sha)).stat().st_mode) & 0o040
    # a store made closed (before, or without offload) is opened when the agent starts so
    omega.stop()
    for d in (blobs / "sha256", (blobs / blob_path(sha)).parent):
        d.chmod(0o700)
    again = agent_factory(role="omega", like=omega, args=("--blob-offload", "nginx"))
    assert stat.S_IMODE((again.data / "blobs" / blob_path(sha)).parent.stat().st_mode) == 0o750


@pytest.mark.parametrize("copy", ["whole", "without packs", "on no --blob-host"])
def test_a_mirror_serves_signed_urls_bound_to_blob_license_and_time(
    hello_fleet: Any,
    nginx: Callable[..., Nginx],
    tls: tuple[Path, Path],
    tmp_path: Path,
    copy: str,
) -> None:
    """The mirror sends every byte: the release's pack, each mainframe in one request,
    or, where its copy lacks the pack (an rsync before the approval built it), the
    blobs one by one. Mainframes whose ``--blob-host`` list does not name the mirror's host
    never ask it: OMEGA sends them every byte itself."""
    cert = tls[0]
    port = free_port()
    secret_file = tmp_path / "mirror.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    mirror_url = f"https://127.0.0.1:{port}/ashat"
    box: dict[str, Nginx] = {}

    def front(omega: Any) -> tuple[str, Path | None]:
        root = omega.data / "blobs"
        if copy == "without packs":  # the blobs, as OMEGA has them, and no pack
            root = tmp_path / "mirror-copy"
            root.mkdir()
            (root / "sha256").symlink_to(omega.data / "blobs" / "sha256")
        conf = adapt(
            "blob-mirror.conf",
            port,
            tls,
            {"CHANGE-this-secret-16+chars": SECRET, "/srv/ashat-blobs/": f"{root}/"},
        )
        box["n"] = nginx("mirror", conf, port)
        return omega.url, cert  # the mirror's certificate is checked as OMEGA's would be

    fleet = hello_fleet(
        n=2,
        omega_args=(
            "--blob-mirror", mirror_url, "--blob-mirror-secret-file", str(secret_file),
            "--blob-url-ttl", "60",
        ),
        front=front,
        mainframe_args=("--blob-host", "mirror.example.com") if copy.startswith("on no") else (),
    )  # fmt: skip
    _ship(fleet)
    n = box["n"]
    blobs = _manifest_blobs(fleet, "v1")
    if copy.startswith("on no"):
        assert n.access() == []  # not a request: only OMEGA answered the mainframes
        assert _omega_blob_answers(fleet) == 2 * len(blobs)
        assert "which no --blob-host lists: not followed" in fleet.mainframes[0].output()
        return
    (digest,) = [  # the pack OMEGA built at approval, named by the manifest's digest
        p.name for p in (fleet.omega.data / "blobs" / "packs").iterdir() if p.name[0] != "."
    ]
    sent = [r for r in n.access() if r["status"] in ("200", "206")]
    taken = [r["uri"].split("?")[0].removeprefix("/ashat/") for r in sent]
    # OMEGA sent no byte itself: it signed each mainframe a URL, and the mirror sent them
    assert _omega_blob_answers(fleet) == 0
    assert _omega_blob_answers(fleet, "/v1/packs/{update_id}/{digest}") == 0
    assert downloads_by(fleet.omega.url, "pack") == {"omega": 0, "mirror": 2}
    if copy == "whole":
        assert taken == [f"packs/{digest}"] * 2  # the release: one request a mainframe
    else:
        refused = [r["uri"].split("?")[0] for r in n.access() if r["status"] == "404"]
        assert refused == [f"/ashat/packs/{digest}"] * 2
        assert sorted(taken) == sorted(blob_path(sha) for sha in blobs for _ in range(2))
        return

    sha = next(iter(blobs))
    token = (fleet.mainframes[0].data.parent / "license").read_text().strip()
    licensed = {"Authorization": f"License {token}"}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as http:
        answer = http.get(f"{fleet.omega.url}/v1/blobs/{sha}", headers=licensed)
        assert answer.status_code == 307
        url = answer.headers["location"]
        assert url.startswith(f"{mirror_url}/{blob_path(sha)}?lic=")
        assert http.get(url).status_code == 200
        other = next(s for s in blobs if s != sha)
        assert http.get(url.replace(sha, other)).status_code == 403  # another blob
        assert http.get(url.replace("lic=", "lic=x")).status_code == 403  # another license
        mirror = BlobMirror(mirror_url, SECRET, 60)
        lic_id = re.search(r"lic=([^&]+)", url)
        assert lic_id is not None
        stale = signed_url(mirror, blob_path(sha), lic_id.group(1), time.time() - 3600)
        assert http.get(stale).status_code == 410  # expired

        # the pack: bound to it, resumable, and nothing else in the directory is served
        answer = http.get(f"{fleet.omega.url}/v1/packs/v1/{digest}", headers=licensed)
        assert answer.status_code == 307 and answer.headers["cache-control"] == "no-store"
        pack_url = answer.headers["location"]
        assert pack_url.startswith(f"{mirror_url}/packs/{digest}?lic=")
        whole = http.get(pack_url)
        assert whole.status_code == 200 and len(whole.content) == sum(blobs.values())
        part = http.get(pack_url, headers={"Range": "bytes=5-"})
        assert part.status_code == 206 and part.content == whole.content[5:]
        assert http.get(pack_url.replace(digest, sha)).status_code in (403, 404)
        as_blob = url.replace(f"sha256/{sha[:2]}/{sha}", f"packs/{digest}")
        assert http.get(as_blob).status_code == 403  # a blob's signature opens no pack
        inside = signed_url(mirror, "fleet.db", lic_id.group(1), time.time())
        assert http.get(inside).status_code == 404
        # no license, no URL; an unknown pack, none either
        assert http.get(f"{fleet.omega.url}/v1/packs/v1/{digest}").status_code == 401
        unknown = http.get(f"{fleet.omega.url}/v1/packs/v1/{sha}", headers=licensed)
        assert unknown.status_code == 404


# What a site cache's access log says of each request's Authorization: its scheme only.
SCHEMES_LOG = """
map $http_authorization $ashat_scheme { "~^(?<ashat_auth>[^ ]+)" $ashat_auth; default "-"; }
log_format ashat_schemes '$request_uri $ashat_scheme';
access_log %s ashat_schemes;
"""


def _schemes(log: Path) -> list[str]:
    return [line.split()[-1] for line in log.read_text().splitlines()] if log.exists() else []


def test_a_site_cache_costs_omega_one_answer_per_blob_or_pack(
    hello_fleet: Any, nginx: Callable[..., Nginx], tls: tuple[Path, Path]
) -> None:
    """And it never sees a mainframe's license: the mainframes show it blob tickets
    (fleet/tickets.py), which OMEGA takes for blobs and packs only."""
    cert = tls[0]
    port = free_port()
    box: dict[str, Any] = {}

    def front(omega: Any) -> tuple[str, Path | None]:
        box["schemes"] = Path(str(omega.data)).parent / "site-cache-schemes.log"
        conf = site_cache(omega, port, tls)
        box["n"] = nginx("cache", SCHEMES_LOG % box["schemes"] + conf, port)
        return omega.url, cert

    fleet = hello_fleet(
        n=3, front=front, mainframe_args=("--blob-cache", f"https://127.0.0.1:{port}")
    )
    _ship(fleet)
    n = box["n"]
    blobs = _manifest_blobs(fleet, "v1")
    # three mainframes took the release as a pack (its 9 blobs are a run): one answer
    assert _omega_blob_answers(fleet, "/v1/packs/{update_id}/{digest}") == 1
    assert _omega_blob_answers(fleet) == 0
    hits = [r for r in n.access() if r["cache"] == "HIT_" and r["uri"].startswith("/v1/packs/")]
    assert len(hits) == 2, n.access()  # the other mainframes got the cached copy
    wait_for(lambda: len(_schemes(box["schemes"])) >= 3, 5, "the packs in the access log")
    assert set(_schemes(box["schemes"])) == {"Ticket"}, _schemes(box["schemes"])
    # a blob alone through the cache, with a ticket as a mainframe asks OMEGA for one: one
    # answer from OMEGA, whoever asks after
    token = (fleet.mainframes[0].data.parent / "license").read_text().strip()
    sha = next(iter(blobs))
    verify = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=verify, timeout=10) as http:
        r = http.get(
            f"{fleet.omega.url}/v1/fleet/blob-ticket",
            headers={"Authorization": f"License {token}"},
        )
        assert r.status_code == 200, r.text
        ticket = r.json()["ticket"]
        for _ in range(2):
            r = http.get(
                f"https://127.0.0.1:{port}/v1/blobs/{sha}",
                headers={"Authorization": f"Ticket {ticket}"},
            )
            assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha
    assert _omega_blob_answers(fleet) == 1
    assert _last(n, f"/v1/blobs/{sha}")["cache"] == "HIT_"
    assert "License" not in _schemes(box["schemes"])


def test_an_omega_that_gives_no_blob_tickets_sends_the_blobs_itself_not_through_the_cache(
    hello_fleet: Any, nginx: Callable[..., Nginx], tls: tuple[Path, Path]
) -> None:
    """An OMEGA from before blob tickets (here: a real nginx in front of OMEGA answers its
    ``/v1/fleet/blob-ticket`` 404, as an older OMEGA or a proxy listing the older routes
    does): the mainframes fetch their blobs from OMEGA itself, with their license, as they
    would without a cache; the site's cache is sent nothing, least of all a license."""
    cert, key = tls
    front_port, cache_port = free_port(), free_port()
    box: dict[str, Any] = {}

    def front(omega: Any) -> tuple[str, Path | None]:
        proxy = f"""
        server {{
            listen 127.0.0.1:{front_port} ssl;
            ssl_certificate {cert};
            ssl_certificate_key {key};
            location = /v1/fleet/blob-ticket {{ return 404; }}
            location / {{
                proxy_pass {omega.url};
                proxy_buffering off;
                proxy_read_timeout 120s;
            }}
        }}
        """
        nginx("omega-front", proxy, front_port)
        box["schemes"] = Path(str(omega.data)).parent / "site-cache-schemes.log"
        conf = site_cache(omega, cache_port, tls)
        box["cache"] = nginx("cache", SCHEMES_LOG % box["schemes"] + conf, cache_port)
        return f"https://127.0.0.1:{front_port}", cert

    fleet = hello_fleet(
        n=2, front=front, mainframe_args=("--blob-cache", f"https://127.0.0.1:{cache_port}")
    )
    _ship(fleet)
    assert _schemes(box["schemes"]) == []  # not one request reached the cache
    assert box["cache"].access() == []
    sent = [  # OMEGA sent each mainframe its bytes: a pack's runs (206) or blobs
        answers_by_status(fleet.omega.url, "GET", route)
        for route in ("/v1/packs/{update_id}/{digest}", "/v1/blobs/{sha256}")
    ]
    assert sum(by.get(200, 0) + by.get(206, 0) for by in sent) >= 2, sent
    for mf in fleet.mainframes:
        assert mf.health()["fleet"]["blobs_from"] == "omega", mf.health()["fleet"]
        assert "gives no blob tickets" in mf.output()


def test_a_site_cache_filling_for_longer_than_5_s_still_costs_omega_one_answer(
    hello_fleet: Any, nginx: Callable[..., Nginx], tls: tuple[Path, Path]
) -> None:
    """nginx lets one more request through to OMEGA when a cache fill has lasted
    proxy_cache_lock_age, 5 s by default: a big pack or blob over a slow link cost OMEGA
    a copy each 5 s. site-cache.conf sets it to the lock's own 600 s. Here the fill is
    slowed to 2 KB/s (a 14 KB blob: 7 s) and two clients ask at once."""
    cert = tls[0]
    port = free_port()
    box: dict[str, Nginx] = {}
    lock = "proxy_cache_lock_age 600s;              # a fill slower than 5 s: still one fetch"

    def front(omega: Any) -> tuple[str, Path | None]:
        conf = site_cache(omega, port, tls, {lock: f"{lock}\n        proxy_limit_rate 2k;"})
        box["n"] = nginx("cache", conf, port)
        return omega.url, cert

    fleet = hello_fleet(n=1, front=front)  # the mainframe asks OMEGA: the cache stays cold
    _ship(fleet)
    blobs = _manifest_blobs(fleet, "v1")
    sha = next(s for s, size in blobs.items() if size > 12_000)  # hello_service/app.py
    token = (fleet.mainframes[0].data.parent / "license").read_text().strip()
    before = _omega_blob_answers(fleet)

    def ask() -> bytes:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=60) as h:
            r = h.get(f"https://127.0.0.1:{port}/v1/blobs/{sha}",
                      headers={"Authorization": f"License {token}"})  # fmt: skip
            assert r.status_code == 200, r.text
            return r.content

    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda _: ask(), range(2)))
    assert time.monotonic() - t0 > 5  # the fill outlasted nginx's default lock age
    assert all(hashlib.sha256(g).hexdigest() == sha for g in got)
    assert _omega_blob_answers(fleet) - before == 1


@pytest.mark.parametrize("copy", ["whole", "empty"])
def test_a_site_cache_follows_omegas_redirects_to_its_mirror(
    hello_fleet: Any,
    nginx: Callable[..., Nginx],
    tls: tuple[Path, Path],
    tmp_path: Path,
    copy: str,
) -> None:
    """OMEGA with --blob-mirror, mainframes behind a site cache: the cache follows OMEGA's
    redirect itself and keeps what the mirror sent, so the mirror sends the release's pack
    once for the site, OMEGA sends no byte, and no license token reaches the mirror. A
    mirror that has nothing yet: the cache asks OMEGA directly (X-Ashat-Direct), which
    sends the mainframes to the blobs and sends each blob itself, once for the site."""
    cert = tls[0]
    mirror_port, cache_port = free_port(), free_port()
    secret_file = tmp_path / "mirror.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    box: dict[str, Nginx] = {}
    seen = tmp_path / "mirror-authorization.log"

    def front(omega: Any) -> tuple[str, Path | None]:
        root = omega.data / "blobs" if copy == "whole" else tmp_path / "empty-copy"
        root.mkdir(exist_ok=True)
        mirror = adapt(
            "blob-mirror.conf",
            mirror_port,
            tls,
            {"CHANGE-this-secret-16+chars": SECRET, "/srv/ashat-blobs/": f"{root}/"},
        )
        mirror = "log_format authorization '[$http_authorization]';\n" + mirror.replace(
            "    location ~",
            f"    access_log {seen} authorization;\n"
            f"    access_log {tmp_path / 'nginx-mirror' / 'access.log'} ashat;\n    location ~",
            1,
        )
        box["mirror"] = nginx("mirror", mirror, mirror_port)
        cache = site_cache(
            omega,
            cache_port,
            tls,
            {
                "https://blobs\\.example\\.com/": f"https://127\\.0\\.0\\.1:{mirror_port}/",
                "/etc/ssl/certs/ca-certificates.crt": str(cert),
                # nginx checks a name, not an IP address: the test certificate's
                "set $signed": "proxy_ssl_name localhost;\n        set $signed",
            },
            cache_dir=tmp_path / "site-cache",
        )
        box["cache"] = nginx("cache", cache, cache_port)
        return omega.url, cert

    fleet = hello_fleet(
        n=3,
        omega_args=(
            "--blob-mirror", f"https://127.0.0.1:{mirror_port}/ashat",
            "--blob-mirror-secret-file", str(secret_file),
        ),
        mainframe_args=("--blob-cache", f"https://127.0.0.1:{cache_port}"),
        front=front,
    )  # fmt: skip
    _ship(fleet)
    mirror, cache = box["mirror"], box["cache"]
    sent = [r["uri"].split("?")[0] for r in mirror.access() if r["status"] in ("200", "206")]
    if copy == "empty":
        assert sent == []
        blobs = _manifest_blobs(fleet, "v1")
        assert _omega_blob_answers(fleet) == len(blobs)  # each once, for three mainframes
        refused = [r for r in mirror.access() if r["status"] == "404"]
        # the pack, for each mainframe (OMEGA's 404 is not kept), and each blob once
        assert len(refused) == 3 + len(blobs), mirror.access()
        assert downloads_by(fleet.omega.url, "pack")["omega"] == 0
        return
    assert len(sent) == 1 and sent[0].startswith("/ashat/packs/"), mirror.access()
    through = [r for r in cache.access() if r["uri"].startswith("/v1/packs/v1/")]
    assert len(through) == 3 and all(r["status"] == "206" for r in through), through
    assert sorted(r["cache"] for r in through) == ["HIT_", "HIT_", "MISS_"], through
    assert _omega_blob_answers(fleet) == 0
    assert _omega_blob_answers(fleet, "/v1/packs/{update_id}/{digest}") == 0
    assert downloads_by(fleet.omega.url, "pack")["mirror"] >= 1
    assert seen.read_text().split() == ["[-]"], seen.read_text()  # no license there


def test_omega_configured_by_a_balancers_address_says_so_and_stays_resumable(
    hello_fleet: Any,
    agent_factory: Any,
    nginx: Callable[..., Nginx],
    pg_url: str,
    tmp_path: Path,
) -> None:
    """A review configured the control side with the address of a balancer spreading
    requests over two OMEGA replicas (docs/team.md says: one replica's own address). The
    approval staged the release on one replica and asked the other to counter-sign it, which
    failed the deployment with "release … is not staged here". It now says what is wrong,
    the deployment stays releasing, and once one replica's address is configured the same
    approval resumes and completes."""
    shared = ("--db", pg_url, "--blob-dir", str(tmp_path / "shared-blobs"))
    fleet = hello_fleet(n=0, omega_args=shared)
    a = fleet.omega
    b = agent_factory(replica_of=a, args=shared)
    port = free_port()
    servers = f"""
    upstream omegas {{
        server {a.url.removeprefix("http://")};
        server {b.url.removeprefix("http://")};
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://omegas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 120s;
        }}
    }}
    """
    nginx("balancer", servers, port)  # round robin: each request to the next replica

    def configure_omega(url: str) -> None:
        res = deploy("configure", "omega", url, "Production", "--token-file", str(a.token_file))
        assert res.exit_code == 0, res.output

    configure_omega(f"http://127.0.0.1:{port}")
    fleet.ship("hello-001", "1.0.0")
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 4, res.output
    assert "looks like a load balancer over several OMEGA replicas" in res.output
    assert "hello-001 stays releasing: run 'deploy approve hello-001' again" in res.output
    assert "Traceback" not in res.output
    status = deploy("status", "hello-001", "--json")
    assert json.loads(status.stdout)["deployment"]["state"] == "releasing"

    configure_omega(a.url)  # one replica's own address, as docs/team.md says
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 0, res.output
    status = deploy("status", "hello-001", "--json")
    assert json.loads(status.stdout)["deployment"]["state"] == "completed"
