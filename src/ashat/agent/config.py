"""What an agent is started with: :class:`AgentConfig`, and the parsing of its option values.

``ashat agent`` (:mod:`.command`) turns its options into an :class:`AgentConfig` with the
helpers here, each raising :class:`~ashat.errors.InvalidInput` with one line that names the
option or file at fault — never the token or an app-env value.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ashat.bundle.keys import PublicKey, SigningKey
from ashat.bundle.manifest import MAX_MANIFEST_BYTES
from ashat.errors import InvalidInput
from ashat.http.limits import DEFAULT_MIN_UPLOAD_RATE, DEFAULT_UPLOAD_GRACE_S, MAX_UPLOAD_GRACE_S
from ashat.ids import HTTP_URL_RE, validate_app_name
from ashat.transport.hosts import HostList, HostListError

if TYPE_CHECKING:
    from ashat.agent.upstream import Upstream

DEFAULT_LISTEN = "127.0.0.1:8700"
DEFAULT_KEEP = 5
DEFAULT_MAX_FILES = 50_000  # a manifest's entries: 100,000 cost an agent ~150 MB of memory
DEFAULT_BLOB_GRACE_S = 600.0  # seconds: blobs uploaded for a push not staged yet
DEFAULT_MAX_PATH_DEPTH = 64  # a path's directories (a release is materialized level by level)
DEFAULT_MAX_BLOB_BYTES = 2 * 1024**3  # bytes
DEFAULT_POLL_TIMEOUT_S = 30.0  # seconds OMEGA holds a long poll
MAX_POLL_TIMEOUT_S = 60.0  # the protocol's limit
MAX_APP_ENV_BYTES = 1024 * 1024  # bytes of dotenv file
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class AgentRole(enum.StrEnum):
    PUBLIC = "public"
    OMEGA = "omega"
    MAINFRAME = "mainframe"


BLOB_OFFLOADS = ("nginx",)  # --blob-offload: who sends OMEGA's blob bytes for it
MAX_BLOB_URL_TTL_S = 86_400


@dataclass(frozen=True)
class BlobMirror:
    """A copy of OMEGA's blob directory served elsewhere (nginx with ``secure_link``, or a
    CDN in front of one): OMEGA answers a licensed blob download with a redirect to a URL
    on it, signed with ``secret`` and good for ``ttl_s`` seconds (``fleet/blob_links.py``)."""

    url: str  # the mirror's base URL; a blob is at URL/sha256/ab/<sha256>
    secret: str = field(repr=False)
    ttl_s: int = 300

    def __post_init__(self) -> None:
        if not HTTP_URL_RE.fullmatch(self.url):
            raise InvalidInput(f"--blob-mirror {self.url!r}: expected an http(s) URL")
        if len(self.secret) < 16 or not self.secret.isprintable() or " " in self.secret:
            raise InvalidInput(
                "--blob-mirror-secret-file: the secret must be one word of 16 or more "
                "printable characters (nginx's secure_link_md5 reads it after a space)"
            )
        if not 10 <= self.ttl_s <= MAX_BLOB_URL_TTL_S:
            raise InvalidInput(f"--blob-url-ttl must be 10-{MAX_BLOB_URL_TTL_S} seconds")


S3_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rules
S3_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")  # 'ashat', 'fleet/blobs'
S3_REGION_RE = re.compile(r"[a-z0-9-]{1,40}")  # 'eu-west-1'; R2 says 'auto'
S3_KEY_ID_RE = re.compile(r"[A-Za-z0-9_.+=/-]{3,128}")


@dataclass(frozen=True)
class S3Mirror:
    """An S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, Ceph RGW, SeaweedFS) that
    OMEGA copies approved blobs into and sends mainframes to with presigned URLs (SigV4),
    good for ``ttl_s`` seconds (``fleet/blob_links.py``, ``fleet/s3_copy.py``)."""

    bucket: str
    prefix: str  # '' or 'a/b': a blob is at [prefix/]sha256/ab/<sha256>
    endpoint: str  # path-style base URL: https://s3.REGION.amazonaws.com, R2's, MinIO's...
    region: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    ttl_s: int = 300

    def __post_init__(self) -> None:
        where = f"--blob-mirror s3://{self.bucket}/{self.prefix}"
        if not S3_BUCKET_RE.fullmatch(self.bucket) or ".." in self.bucket:
            raise InvalidInput(
                f"{where}: {self.bucket!r} is not an S3 bucket name (3-63 lower-case "
                "letters, digits, '.' and '-')"
            )
        if self.prefix and not S3_PREFIX_RE.fullmatch(self.prefix):
            raise InvalidInput(
                f"{where}: the prefix must be '/'-separated names of letters, digits, "
                "'.', '_' and '-'"
            )
        if not S3_REGION_RE.fullmatch(self.region):
            raise InvalidInput(f"--blob-mirror-region {self.region!r}: not a region name")
        split = urlsplit(self.endpoint)
        if "@" in split.netloc:  # not echoed: it may hold a password
            raise InvalidInput(
                "--blob-mirror-endpoint: no user or password in the URL (every mainframe "
                "is sent it); OMEGA's key goes in --blob-mirror-secret-file"
            )
        if not HTTP_URL_RE.fullmatch(self.endpoint) or split.path not in ("", "/"):
            raise InvalidInput(
                f"--blob-mirror-endpoint {self.endpoint!r}: expected the service's "
                "http(s) URL, without a path"
            )
        if not S3_KEY_ID_RE.fullmatch(self.access_key_id) or not self.secret_access_key:
            raise InvalidInput(
                "--blob-mirror-secret-file: expected aws_access_key_id and "
                "aws_secret_access_key (an AWS credentials file)"
            )
        if not 10 <= self.ttl_s <= MAX_BLOB_URL_TTL_S:
            raise InvalidInput(f"--blob-url-ttl must be 10-{MAX_BLOB_URL_TTL_S} seconds")

    @property
    def name(self) -> str:
        """The copy's identity (another bucket, prefix or service is another copy)."""
        return f"{self.endpoint.rstrip('/')}/{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class AgentConfig:
    """Everything the server needs; the token and app env never appear in ``repr``."""

    role: AgentRole
    data: Path
    host: str
    port: int  # 0: let the OS pick (the ready line names the real one)
    token: str = field(repr=False)
    trusted: Mapping[str, PublicKey]  # key id -> key trusted for the ``release`` role
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keep: int = DEFAULT_KEEP  # releases kept on disk, besides current and previous
    app_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    app_env_file: Path | None = None  # re-read on SIGHUP (ashat agent reload) and activation
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES  # bytes per blob
    max_manifest_bytes: int = MAX_MANIFEST_BYTES  # bytes
    max_files: int = DEFAULT_MAX_FILES  # entries in one release's manifest
    max_path_depth: int = DEFAULT_MAX_PATH_DEPTH  # directories above a release's file
    blob_grace_s: float = DEFAULT_BLOB_GRACE_S  # an unused blob younger than this is kept
    min_upload_rate: int = DEFAULT_MIN_UPLOAD_RATE  # bytes/s a request body keeps up; 0: any
    upload_grace_s: float = DEFAULT_UPLOAD_GRACE_S  # before the rate is asked of a body
    stop_timeout_s: float = 10.0  # SIGTERM to SIGKILL for a supervised app
    mainframe: MainframeConfig | None = None  # role mainframe only: how to pull from OMEGA
    omega_key: SigningKey | None = field(default=None, repr=False)  # role omega: approvals
    license_trusted: Mapping[str, PublicKey] = field(default_factory=dict)  # role omega
    poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S  # role omega: longest a poll is held
    fleet_db: str | None = field(default=None, repr=False)  # role omega: URL; DIR/fleet.db
    blob_dir: Path | None = None  # role omega: a blob store shared by replicas; DIR/blobs
    verifier_key: SigningKey | None = field(default=None, repr=False)  # role public: attests
    root_file: Path | None = None  # roles omega, mainframe: the root of trust to start from
    app_user: str | None = None  # the user the app runs as (an agent running as root)
    sandbox: str = "auto"  # "auto", "bwrap" or "none" (confine.py)
    sandbox_binds: tuple[Path, ...] = ()  # more read-only directories in the app's sandbox
    advisories: Path | None = None  # role public: the OSV snapshot; None: DATA/advisories
    secret_files: tuple[Path, ...] = field(default=(), repr=False)  # hidden from the app
    upstream: Upstream | None = None  # a proxy's upstream file kept on the app's port
    app_listen: tuple[str, int] | None = None  # the agent's own stable address for the app
    switch_drain_s: float = 2.0  # the old app serves this long after traffic moved
    blob_offload: str | None = None  # role omega: "nginx" sends blob bytes (X-Accel-Redirect)
    blob_mirror: BlobMirror | S3Mirror | None = None  # role omega: downloads redirected there
    region: str | None = None  # role omega: the region it serves (licenses naming another: no)
    app_name: str | None = None  # one app of a host agent (--apps): its releases only
    host_data: Path | None = None  # that host's data directory: all of it hidden from the app

    def __post_init__(self) -> None:
        if self.app_name is not None:
            validate_app_name(self.app_name)
        if not self.token:
            raise InvalidInput("the agent needs a bearer token")
        if (self.role is AgentRole.MAINFRAME) != (self.mainframe is not None):
            raise InvalidInput("a mainframe, and only a mainframe, pulls from OMEGA (--omega)")
        if not self.trusted:
            raise InvalidInput("the agent needs at least one trusted public key (--trust)")
        if self.role is AgentRole.OMEGA and (self.omega_key is None or not self.license_trusted):
            raise InvalidInput("OMEGA needs --omega-key and at least one --license-trust")
        if self.role is not AgentRole.OMEGA and (self.fleet_db or self.blob_dir):
            raise InvalidInput("--db and --blob-dir are for --role omega only")
        if self.fleet_db is not None and not self.fleet_db.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):
            raise InvalidInput("--db: expected sqlite:///PATH or postgresql://…")
        if not 0 < self.poll_timeout_s <= MAX_POLL_TIMEOUT_S:
            raise InvalidInput(f"--poll-timeout must be 1-{MAX_POLL_TIMEOUT_S:g} seconds")
        if self.keep < 2:
            raise InvalidInput(f"--keep must be at least 2, got {self.keep}")
        if self.max_blob_bytes < 1:
            raise InvalidInput("--max-blob-bytes must be positive")
        if self.blob_grace_s < 0:
            raise InvalidInput("--blob-grace must be 0 or more seconds")
        if self.max_files < 1 or self.max_path_depth < 1:
            raise InvalidInput("--max-files and --max-path-depth must be positive")
        if self.min_upload_rate < 0 or not 0 < self.upload_grace_s <= MAX_UPLOAD_GRACE_S:
            raise InvalidInput(
                f"--min-upload-rate must be >= 0 and --upload-grace 0-{MAX_UPLOAD_GRACE_S:g} s"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInput("--tls-cert and --tls-key go together: give both or neither")
        if self.verifier_key is not None and self.role is not AgentRole.PUBLIC:
            raise InvalidInput("--verifier-key is for --role public only")
        if self.role is not AgentRole.OMEGA and (self.blob_offload or self.blob_mirror):
            raise InvalidInput("--blob-offload and --blob-mirror are for --role omega only")
        if self.blob_offload is not None and self.blob_offload not in BLOB_OFFLOADS:
            raise InvalidInput(f"--blob-offload must be one of {', '.join(BLOB_OFFLOADS)}")
        if self.blob_offload is not None and self.blob_mirror is not None:
            raise InvalidInput("--blob-offload and --blob-mirror: choose one way to send blobs")
        if self.upstream is not None and self.upstream.file.is_relative_to(self.data):
            raise InvalidInput(
                "--upstream-file must be outside --data: the app writes there "
                "($ASHAT_SHARED_DIR), and must not steer its own traffic"
            )
        if self.upstream is not None and self.app_listen is not None:
            raise InvalidInput("--upstream-file and --app-listen: choose one stable address")
        if self.root_file is not None and self.role is AgentRole.PUBLIC:
            raise InvalidInput("--root is for --role omega and --role mainframe")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"


@dataclass(frozen=True)
class MainframeConfig:
    """How a Licensed Mainframe pulls from OMEGA (docs/fleet-protocol.md); the license
    token never appears in ``repr``."""

    omega_url: str
    license: str = field(repr=False)  # the license token, sent as ``Authorization: License``
    mainframe_id: str  # from the license payload
    license_id: str
    trusted_omega: Mapping[str, PublicKey]  # key id -> key trusted for approvals, directives
    omega_ca_cert: Path | None = None
    poll_wait_s: int = 30  # seconds OMEGA may hold a poll (the protocol allows up to 60)
    blob_cache: str | None = None  # a site's caching proxy of OMEGA: blobs are fetched there
    blob_hosts: tuple[str, ...] = ()  # hosts a blob redirect may lead to; () = any
    windows: tuple[str, ...] = ()  # maintenance windows (fleet/windows.py), as given
    window_tz: str | None = None  # their time zone (IANA name); None: the system's
    update_lock_max_s: float = 3600.0  # longest an app's update.lock defers a switch

    def __post_init__(self) -> None:
        if not HTTP_URL_RE.fullmatch(self.omega_url):
            raise InvalidInput(f"--omega {self.omega_url!r}: expected an http(s) URL")
        if not self.license:
            raise InvalidInput("the mainframe needs a license (--license)")
        if not self.trusted_omega:
            raise InvalidInput("the mainframe needs OMEGA's public key (--trust-omega)")
        if self.blob_cache is not None and not HTTP_URL_RE.fullmatch(self.blob_cache):
            raise InvalidInput(f"--blob-cache {self.blob_cache!r}: expected an http(s) URL")
        try:
            self.redirect_hosts()
        except HostListError as e:
            raise InvalidInput(f"--blob-host {e}") from None
        if not 60 <= self.update_lock_max_s <= 7 * 86_400:
            raise InvalidInput("--update-lock-max must be 60-604800 seconds")
        if not 1 <= self.poll_wait_s <= 60:
            raise InvalidInput(f"--poll-wait must be 1-60 seconds, got {self.poll_wait_s}")

    def redirect_hosts(self) -> HostList | None:
        """Where OMEGA's redirects for blobs may lead: the ``--blob-host`` list, OMEGA's
        own address and the site cache's; None (anywhere) when no ``--blob-host`` is given.
        Raises :class:`HostListError`."""
        if not self.blob_hosts:
            return None
        origins = [self.omega_url, *([self.blob_cache] if self.blob_cache else [])]
        return HostList.parse(self.blob_hosts, *origins)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port)``; port 0 means any free one."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise InvalidInput(f"--listen {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidInput(f"--listen {value!r}: write an IPv6 address in brackets, [::1]:8700")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--listen {value!r}: port must be 0-65535")
    return host, port


def parse_dotenv(text: str, source: str = "app env") -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` optional, ``#`` comments, quotes stripped).

    Errors name the line number, never its value.
    """
    env: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _ENV_KEY_RE.fullmatch(key):
            raise InvalidInput(f"{source} line {n}: expected KEY=VALUE with KEY a shell name")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if "\0" in value:
            raise InvalidInput(f"{source} line {n}: the value of {key} contains a NUL byte")
        env[key] = value
    return env


def read_option_file(path: Path, option: str, limit: int) -> bytes:
    """The bytes of the file given as ``option``, at most ``limit`` of them. Raises
    :class:`InvalidInput` naming the option and the file."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InvalidInput(f"cannot read {option} file {path}: {e.strerror}") from e
    if len(data) > limit:
        raise InvalidInput(f"{option} file {path} is larger than {limit} bytes")
    return data


def read_app_env(path: Path) -> dict[str, str]:
    """Read the ``--app-env`` dotenv file. Raises :class:`InvalidInput`."""
    data = read_option_file(path, "--app-env", MAX_APP_ENV_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"--app-env file {path} is not UTF-8") from e
    return parse_dotenv(text, f"--app-env file {path}")


def read_aws_credentials(path: Path) -> tuple[str, str]:
    """The access key id and secret access key of an AWS credentials file (``aws configure``
    writes one): its ``[default]`` profile, or its only one. Raises :class:`InvalidInput`
    naming the file, never a value."""
    import configparser

    where = f"--blob-mirror-secret-file {path}"
    data = read_option_file(path, "--blob-mirror-secret-file", 64 * 1024)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(data.decode("utf-8"))
    except (UnicodeDecodeError, configparser.Error):
        # (configparser's message quotes the line: a key, perhaps; never shown)
        raise InvalidInput(
            f"{where}: not an AWS credentials file ([default], key = value)"
        ) from None
    sections = parser.sections()
    name = "default" if "default" in sections else sections[0] if len(sections) == 1 else None
    if name is None:
        raise InvalidInput(f"{where}: several profiles and no [default]: keep one")
    profile = parser[name]
    key_id = profile.get("aws_access_key_id", "").strip()
    secret = profile.get("aws_secret_access_key", "").strip()
    if not key_id or not secret:
        raise InvalidInput(
            f"{where}: profile [{name}] needs aws_access_key_id and aws_secret_access_key"
        )
    if "aws_session_token" in profile:
        raise InvalidInput(
            f"{where}: temporary credentials (aws_session_token) expire under a running "
            "OMEGA; give a long-lived key limited to the bucket's prefix"
        )
    return key_id, secret
