"""``ashat agent``: the server run on PUBLIC, OMEGA and Licensed Mainframes (DESIGN §5).

This module is imported by the ``ashat`` CLI on every invocation, so at the top it imports
only click and the standard library; the server (Starlette, uvicorn, cryptography) is
imported when the command runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ashat.http.limits import DEFAULT_MIN_UPLOAD_RATE, DEFAULT_UPLOAD_GRACE_S, MAX_UPLOAD_GRACE_S

ROLES = ("public", "omega", "mainframe")
if TYPE_CHECKING:
    from ashat.agent.config import AgentConfig, BlobMirror, MainframeConfig, S3Mirror
    from ashat.agent.upstream import Upstream
    from ashat.bundle.keys import PublicKey, SigningKey

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def upload_pace_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--min-upload-rate`` and ``--upload-grace`` (agents and ``ashat serve``; see
    :mod:`ashat.http.middleware`)."""
    f = click.option(
        "--upload-grace",
        type=click.FloatRange(min=0, max=MAX_UPLOAD_GRACE_S, min_open=True),
        default=DEFAULT_UPLOAD_GRACE_S,
        show_default=True,
        help="Seconds a request body may take before --min-upload-rate applies.",
    )(f)
    return click.option(
        "--min-upload-rate",
        type=click.IntRange(min=0),
        default=DEFAULT_MIN_UPLOAD_RATE,
        show_default=True,
        help="Bytes/s a request body must average after --upload-grace (0: any pace); a "
        "slower one is refused 408.",
    )(f)


@click.group("agent", invoke_without_command=True)
@click.option("--role", type=click.Choice(ROLES), help="Which tier this agent is (required).")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory (blobs, releases, logs, state); created if missing (required).",
)
@click.option(
    "--listen", default="127.0.0.1:8700", show_default=True, help="HOST:PORT to serve on."
)
@click.option(
    "--token-file",
    type=_FILE,
    help="File holding the bearer token (required but on a mainframe, whose bearer "
    "routes are closed without one).",
)
@click.option(
    "--trust",
    type=_FILE,
    multiple=True,
    help="Public key (.pub) whose release signatures are accepted; repeatable (required).",
)
@click.option("--tls-cert", type=_FILE, help="PEM certificate: serve https (with --tls-key).")
@click.option("--tls-key", type=_FILE, help="PEM private key of --tls-cert.")
@click.option(
    "--keep",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Releases kept on disk (current and previous always are).",
)
@click.option(
    "--app-env",
    type=_FILE,
    help="dotenv file (KEY=VALUE) passed to the app's environment; never logged.",
)
@click.option(
    "--max-blob-bytes",
    type=click.IntRange(min=1),
    default=2 * 1024**3,
    show_default=True,
    help="Largest blob accepted, in bytes.",
)
@click.option(
    "--max-files",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Most files one release's manifest may list.",
)
@click.option(
    "--max-path-depth",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Most directories above a file of a release.",
)
@click.option(
    "--blob-grace",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="Seconds an unused blob is kept before it is deleted (a push in progress uploads "
    "blobs before it stages its release).",
)
@upload_pace_options
@click.option("--omega", "omega_url", help="Mainframe: OMEGA's URL, to pull releases from.")
@click.option("--license", "license_file", type=_FILE, help="Mainframe: its license file.")
@click.option(
    "--trust-omega",
    type=_FILE,
    multiple=True,
    help="Mainframe: OMEGA's public key (approvals, directives); repeatable.",
)
@click.option("--omega-ca-cert", type=_FILE, help="Mainframe: CA certificate for https --omega.")
@click.option(
    "--poll-wait",
    type=click.IntRange(1, 60),
    default=30,
    show_default=True,
    help="Mainframe: seconds OMEGA may hold each poll.",
)
@click.option(
    "--blob-cache",
    help="Mainframe: a caching proxy of OMEGA in its site (contrib/nginx/site-cache.conf); "
    "blobs are fetched through it, with short-lived blob tickets OMEGA gives (never the "
    "license; where OMEGA gives none, blobs come from OMEGA itself), everything else "
    "from --omega.",
)
@click.option(
    "--blob-host",
    "blob_hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Mainframe: a host OMEGA's redirects for blobs may lead to, its mirror's or CDN's "
    "(repeatable). Once one is given, a redirect to any other host is not followed: the "
    "blob is asked of OMEGA itself (its own address and --blob-cache always pass).",
)
@click.option(
    "--maintenance-window",
    "windows",
    multiple=True,
    help="Mainframe: switch releases only inside this weekly window, e.g. 'Sat 02:00-04:00', "
    "'Mon-Fri 22:00-06:00' or 'daily 01:00-03:00' (repeatable; outside them OMEGA waits "
    "for it).",
)
@click.option(
    "--maintenance-tz",
    "window_tz",
    help="Mainframe: the IANA time zone of its windows (e.g. Europe/Berlin)  "
    "[default: the system's]",
)
@click.option(
    "--update-lock-max",
    type=click.FloatRange(60, 7 * 86_400),
    default=3600,
    show_default=True,
    help="Mainframe: the longest its app's $ASHAT_SHARED_DIR/update.lock defers a switch, "
    "in seconds (counted from when the agent first saw it).",
)
@click.option("--omega-key", type=_FILE, help="OMEGA: its private key (approvals and directives).")
@click.option(
    "--license-trust",
    type=_FILE,
    multiple=True,
    help="OMEGA: public key whose licenses are accepted; repeatable.",
)
@click.option(
    "--poll-timeout",
    type=click.IntRange(1, 60),
    default=30,
    show_default=True,
    help="OMEGA: longest it holds a mainframe's poll, in seconds.",
)
@click.option(
    "--db",
    "fleet_db",
    help="OMEGA: its fleet database, sqlite:///PATH or postgresql://… that replicas share "
    "(keep the password in PGPASSWORD or ~/.pgpass)  [default: sqlite:///DATA/fleet.db]",
)
@click.option(
    "--blob-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="OMEGA: blob store directory shared by replicas  [default: DATA/blobs]",
)
@click.option(
    "--upstream-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file the agent keeps naming the port of the app that takes traffic "
    "('server 127.0.0.1:PORT;'), for a proxy's upstream (contrib/nginx/app.conf): a stable "
    "address, switched without dropping a request.",
)
@click.option(
    "--upstream-reload",
    help="The command that makes the proxy read --upstream-file again (e.g. "
    "'nginx -s reload'), run without a shell after each change.",
)
@click.option(
    "--app-listen",
    help="HOST:PORT where the agent itself serves the app at a stable address (a TCP proxy "
    "to the current release's app), where no --upstream-file proxy runs.",
)
@click.option(
    "--upstream-drain",
    type=click.FloatRange(0, 300),
    default=2.0,
    show_default=True,
    help="Seconds the old app keeps serving the requests in flight after the proxy (or "
    "--app-listen) moved to the new one.",
)
@click.option(
    "--region",
    help="OMEGA: the region it serves; a license naming another region is refused "
    "(wrong_region). Licenses naming none are served everywhere.",
)
@click.option(
    "--blob-offload",
    type=click.Choice(["nginx"]),
    help="OMEGA: the nginx in front of it sends blob bytes (X-Accel-Redirect to an internal "
    "location over the blob directory; contrib/nginx/omega.conf) once OMEGA has checked "
    "the license.",
)
@click.option(
    "--blob-mirror",
    help="OMEGA: answer licensed blob downloads with a redirect to a signed, short-lived URL "
    "on this copy of its blob directory (https://…: nginx secure_link, "
    "contrib/nginx/blob-mirror.conf), or on an S3-compatible bucket OMEGA copies approved "
    "blobs into (s3://BUCKET[/PREFIX]: presigned URLs).",
)
@click.option(
    "--blob-mirror-secret-file",
    type=_FILE,
    help="OMEGA: the secret the --blob-mirror URLs are signed with (the mirror's "
    "secure_link_md5 holds the same), or for s3:// an AWS credentials file "
    "(aws_access_key_id, aws_secret_access_key).",
)
@click.option(
    "--blob-mirror-endpoint",
    help="OMEGA, s3:// mirror: the service's URL (R2, MinIO, Ceph, SeaweedFS...); "
    "default https://s3.REGION.amazonaws.com.",
)
@click.option(
    "--blob-mirror-region",
    help="OMEGA, s3:// mirror: the bucket's region, as signatures name it (R2: auto); "
    "default us-east-1.",
)
@click.option(
    "--blob-url-ttl",
    type=click.IntRange(10, 86_400),
    default=300,
    show_default=True,
    help="OMEGA: seconds a signed --blob-mirror URL is good for.",
)
@click.option(
    "--verifier-key",
    type=_FILE,
    help="PUBLIC: its verifier private key; each verification run ends with a statement "
    "signed by it (ashat keys generate verifier).",
)
@click.option(
    "--root",
    "root_file",
    type=_FILE,
    help="OMEGA, mainframe: the root of trust (trust/root.json) to start from; then "
    "nothing is installed without its whole chain of signatures.",
)
@click.option(
    "--app-user",
    envvar="ASHAT_APP_USER",
    help="The unprivileged user the app runs as (required when the agent runs as root; "
    "or ASHAT_APP_USER).",
)
@click.option(
    "--sandbox",
    type=click.Choice(["auto", "bwrap", "none"]),
    default="auto",
    show_default=True,
    help="Confine the app with bubblewrap: auto uses bwrap where it works; bwrap insists "
    "on it; none never uses it.",
)
@click.option(
    "--sandbox-bind",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    multiple=True,
    help="A directory the sandboxed app may read besides /usr, /etc, /opt and Python "
    "(e.g. /srv/node); repeatable.",
)
@click.option(
    "--advisories",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="PUBLIC: the OSV advisories the Security Scan checks pins against (default "
    "DATA/advisories, which ashat advisories update --data DATA fills).",
)
@click.option(
    "--apps",
    "apps_file",
    type=_FILE,
    help="Serve several apps from this one agent: a TOML file with a table per app "
    "([notes], [polls]: its [app] name), each holding that app's own options (token-file, "
    "app-env, app-listen, omega, license, …); each app is served at /apps/NAME over "
    "DATA/apps/NAME.",
)
@click.pass_context
def agent(ctx: click.Context, **params: Any) -> None:
    """Run an agent: receive bundles, stage and activate releases, supervise the app.

    ``ashat agent fsck --data DIR`` checks a data directory instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    role, data, trust, apps_file = (params[k] for k in ("role", "data", "trust", "apps_file"))
    required = (("--role", role), ("--data", data))
    for name, value in required + ((("--trust", trust),) if apps_file is None else ()):
        if not value:
            raise click.MissingParameter(ctx=ctx, param_type="option", param_hint=f"'{name}'")
    assert role is not None and data is not None
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else a line per mainframe poll

    from ashat.roles import run_role

    def announce(line: str) -> None:
        click.echo(line, err=True)

    if apps_file is None:
        run_role(_agent_config(**params), announce)
        return
    from dataclasses import replace

    apps = _app_configs(ctx, apps_file)
    first = next(iter(apps.values()))
    run_role(replace(first, data=data.resolve(), app_name=None), announce, apps)


def _agent_config(
    role: str,
    data: Path,
    listen: str,
    token_file: Path | None,
    trust: tuple[Path, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    keep: int,
    app_env: Path | None,
    max_blob_bytes: int,
    max_files: int,
    max_path_depth: int,
    blob_grace: float,
    min_upload_rate: int,
    upload_grace: float,
    omega_url: str | None,
    license_file: Path | None,
    trust_omega: tuple[Path, ...],
    omega_ca_cert: Path | None,
    poll_wait: int,
    omega_key: Path | None,
    license_trust: tuple[Path, ...],
    poll_timeout: int,
    fleet_db: str | None,
    blob_dir: Path | None,
    blob_cache: str | None,
    blob_hosts: tuple[str, ...],
    windows: tuple[str, ...],
    window_tz: str | None,
    update_lock_max: float,
    region: str | None,
    blob_offload: str | None,
    blob_mirror: str | None,
    blob_mirror_secret_file: Path | None,
    blob_url_ttl: int,
    blob_mirror_endpoint: str | None,
    blob_mirror_region: str | None,
    upstream_file: Path | None,
    upstream_reload: str | None,
    app_listen: str | None,
    upstream_drain: float,
    verifier_key: Path | None,
    root_file: Path | None,
    app_user: str | None,
    sandbox: str,
    sandbox_bind: tuple[Path, ...],
    advisories: Path | None,
    apps_file: Path | None = None,
    app_name: str | None = None,
    hidden: tuple[Path, ...] = (),
) -> AgentConfig:
    """The agent's options as its config (a usage error names what is wrong); for one app
    of a host agent, ``app_name`` and the other apps' secret files (``hidden``)."""
    from ashat.agent.config import AgentConfig, AgentRole, parse_listen, read_app_env
    from ashat.bundle.keys import load_public_key
    from ashat.ids import validate_region
    from ashat.project import read_token_file

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together: give both or neither")
    mainframe = _mainframe_config(
        role, token_file, omega_url, license_file, trust_omega, omega_ca_cert, poll_wait,
        root_file, blob_cache, (windows, window_tz, update_lock_max), blob_hosts,
    )  # fmt: skip
    if token_file is None and mainframe is None:
        raise click.UsageError(f"--role {role} needs --token-file")
    omega = _omega_options(role, omega_key, license_trust)
    if role != "omega" and (fleet_db or blob_dir or blob_offload or blob_mirror or region):
        raise click.UsageError(
            "--db, --blob-dir, --region, --blob-offload, --blob-mirror: only for --role omega"
        )
    mirror = _blob_mirror(
        blob_mirror,
        blob_mirror_secret_file,
        blob_url_ttl,
        (blob_mirror_endpoint, blob_mirror_region),
    )
    upstream = _upstream(upstream_file, upstream_reload)
    host, port = parse_listen(listen)
    keys = [load_public_key(p) for p in trust]
    if not trust:
        raise click.UsageError("the agent needs --trust: a public key whose releases it takes")
    return AgentConfig(
        app_name=app_name,
        role=AgentRole(role),
        data=data.resolve(),
        host=host,
        port=port,
        # A mainframe without --token-file gets a random token it never shows: its bearer
        # routes answer 401 to everyone, leaving /v1/health and /metrics.
        token=read_token_file(token_file) if token_file else secrets.token_urlsafe(32),
        trusted={k.keyid: k for k in keys},
        tls_cert=tls_cert,
        tls_key=tls_key,
        keep=keep,
        app_env=read_app_env(app_env) if app_env is not None else {},
        app_env_file=app_env.resolve() if app_env is not None else None,
        max_blob_bytes=max_blob_bytes,
        max_files=max_files,
        max_path_depth=max_path_depth,
        blob_grace_s=blob_grace,
        min_upload_rate=min_upload_rate,
        upload_grace_s=upload_grace,
        mainframe=mainframe,
        omega_key=omega[0],
        license_trusted=omega[1],
        poll_timeout_s=float(poll_timeout),
        fleet_db=fleet_db or None,
        blob_dir=blob_dir.resolve() if blob_dir else None,
        verifier_key=_private_key(verifier_key),
        root_file=root_file.resolve() if root_file else None,
        app_user=app_user,
        sandbox=sandbox,
        sandbox_binds=tuple(p.resolve() for p in sandbox_bind),
        advisories=advisories.resolve() if advisories else None,
        secret_files=_secret_files(
            token_file,
            license_file,
            app_env,
            omega_key,
            verifier_key,
            tls_key,
            fleet_db,
            blob_mirror_secret_file,
        )
        + hidden,
        blob_offload=blob_offload,
        blob_mirror=mirror,
        region=validate_region(region) if region else None,
        upstream=upstream,
        app_listen=parse_listen(app_listen) if app_listen else None,
        switch_drain_s=upstream_drain,
    )


# Options a host agent's app may set for itself in --apps (the rest are the host's alone:
# its address, TLS, limits, and blob offload over one blob directory).
APP_OPTIONS = (
    "token-file", "trust", "keep", "app-env", "omega", "license", "trust-omega",
    "omega-ca-cert", "poll-wait", "blob-cache", "blob-host", "maintenance-window",
    "maintenance-tz",
    "update-lock-max", "omega-key", "license-trust", "poll-timeout", "db", "blob-dir",
    "upstream-file", "upstream-reload", "app-listen", "upstream-drain", "region",
    "verifier-key", "root", "sandbox-bind", "advisories", "blob-mirror",
    "blob-mirror-secret-file", "blob-mirror-endpoint", "blob-mirror-region", "blob-url-ttl",
    "app-user",
)  # fmt: skip
# What each app must have of its own: given once on the command line, every app would
# share it (one token for all, one fleet database whose rollouts cancel each other's).
OWN_OPTIONS = (
    "token-file", "app-env", "omega", "license", "db", "blob-dir", "upstream-file",
    "app-listen",
)  # fmt: skip
MAX_APPS = 64


def _app_configs(ctx: click.Context, apps_file: Path) -> dict[str, AgentConfig]:
    """``--apps FILE``: a config per app, its options over the command line's, its data in
    DATA/apps/NAME. A usage error names the file, the app and the key at fault."""
    import tomllib
    from dataclasses import replace

    from ashat.errors import InvalidInput
    from ashat.ids import APP_NAME_RE, APP_NAME_RULE

    where = f"--apps {apps_file}"
    try:
        tables = tomllib.loads(apps_file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise click.UsageError(f"{where}: not a readable TOML file: {e}") from e
    if not tables:
        raise click.UsageError(f"{where}: no app in it (a table per app: [notes])")
    if len(tables) > MAX_APPS:
        raise click.UsageError(f"{where}: {len(tables)} apps, at most {MAX_APPS}")
    options = {
        opt.removeprefix("--"): p
        for p in ctx.command.params
        if isinstance(p, click.Option)
        for opt in p.opts
        if opt.removeprefix("--") in APP_OPTIONS + OWN_OPTIONS
    }
    shared = [f"--{o}" for o in OWN_OPTIONS if ctx.params.get(options[o].name or "") is not None]
    if shared:
        raise click.UsageError(
            f"{', '.join(shared)}: with --apps each app sets its own, in its table of {where}"
        )
    if ctx.params.get("blob_offload"):
        raise click.UsageError(
            f"{where}: --blob-offload serves one blob directory: one app per agent with it"
        )
    if ctx.params.get("blob_mirror"):
        raise click.UsageError(
            f"--blob-mirror: with --apps each app's blobs are its own: set blob-mirror (and "
            f"its secret file) in each app's table of {where}"
        )
    params: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not APP_NAME_RE.fullmatch(name):
            raise click.UsageError(f"{where}: [{name}] is not an app name ({APP_NAME_RULE})")
        if not isinstance(table, dict):
            raise click.UsageError(f"{where}: {name} must be a table ([{name}])")
        own = dict(ctx.params)
        for key, value in table.items():
            param = options.get(key.replace("_", "-"))
            if param is None:
                raise click.UsageError(
                    f"{where}: [{name}] {key}: not an option an app sets (one of "
                    f"{', '.join(APP_OPTIONS)})"
                )
            own[str(param.name)] = _app_option(ctx, param, value, apps_file.parent, where)
        params[name] = own | {"data": ctx.params["data"].resolve() / "apps" / name}
    _distinct(params, where)
    _apart(params, where)
    hidden = _secret_files(
        *(
            p.get(k)
            for p in params.values()
            for k in (
                "token_file", "license_file", "app_env", "omega_key", "verifier_key",
                "fleet_db", "blob_mirror_secret_file",
            )
        )
    )  # fmt: skip
    configs = {}
    for name, own in params.items():
        try:
            config = _agent_config(**own, app_name=name, hidden=hidden)
            configs[name] = replace(config, host_data=ctx.params["data"].resolve())
        except (click.UsageError, InvalidInput) as e:
            message = e.format_message() if isinstance(e, click.UsageError) else e.message
            raise click.UsageError(f"{where}: app {name}: {message}") from e
    return configs


def _apart(params: dict[str, dict[str, Any]], where: str) -> None:
    """No two apps run as one user outside bwrap: each could read the other's environment
    (its ``app-env`` secrets, in /proc) and write its ``shared/`` (a review)."""
    from ashat.agent.confine import choose_jail
    from ashat.errors import InvalidInput

    seen: dict[int, str] = {}
    for name, own in params.items():
        try:
            jail = choose_jail(own["sandbox"], own.get("app_user"), data=own["data"])
        except InvalidInput:
            continue  # said with the app's other options, naming it
        if jail.mode == "bwrap":
            continue
        uid = jail.user.uid if jail.user is not None else os.geteuid()
        other = seen.setdefault(uid, name)
        if other != name:
            user = jail.user.name if jail.user is not None else "the agent's user"
            raise click.UsageError(
                f"{where}: apps {other} and {name} would both run as {user} without bwrap "
                "(--sandbox none, or bubblewrap missing), so each could read the other's "
                "environment and write its files: give each its own app-user in its table, "
                "or run them in bwrap"
            )


def _distinct(params: dict[str, dict[str, Any]], where: str) -> None:
    """No two apps share a token, a fleet database or a blob directory."""
    from ashat.project import read_token_file

    seen: dict[tuple[str, str], str] = {}
    for name, own in params.items():
        values = {
            "token": read_token_file(own["token_file"]) if own.get("token_file") else None,
            "db": own.get("fleet_db"),
            "blob-dir": str(Path(own["blob_dir"]).resolve()) if own.get("blob_dir") else None,
        }
        for what, value in values.items():
            if value is None:
                continue
            other = seen.setdefault((what, str(value)), name)
            if other != name:
                raise click.UsageError(
                    f"{where}: apps {other} and {name} share a {what}: each app its own"
                )


def _app_option(
    ctx: click.Context, param: click.Parameter, value: Any, base: Path, where: str
) -> Any:
    """A value of the --apps file as the option would take it on the command line: paths
    relative to the file's directory, a list for a repeatable option."""
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
        raise click.UsageError(f"{where}: {param.opts[0].removeprefix('--')}: {value!r}")
    if isinstance(param.type, click.Path):
        values = [str(base / v) if not Path(str(v)).is_absolute() else v for v in values]
    if not getattr(param, "multiple", False):
        if len(values) != 1:
            raise click.UsageError(f"{where}: {param.opts[0].removeprefix('--')}: one value")
        values = values[0]
    try:
        return param.type_cast_value(ctx, values)
    except click.BadParameter as e:
        raise click.UsageError(
            f"{where}: {param.opts[0].removeprefix('--')}: {e.format_message()}"
        ) from e


def _secret_files(*paths: Path | str | None) -> tuple[Path, ...]:
    """The files (and systemd's credentials directory) the app must never see."""
    out = []
    for p in paths:
        if isinstance(p, str):  # --db: a SQLite file is the fleet's database
            p = Path(p.removeprefix("sqlite:///")) if p.startswith("sqlite:///") else None
        if p is not None:
            out.append(Path(p).resolve())
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        out.append(Path(os.environ["CREDENTIALS_DIRECTORY"]))
    return tuple(out)


def _mainframe_config(
    role: str,
    token_file: Path | None,
    omega_url: str | None,
    license_file: Path | None,
    trust_omega: tuple[Path, ...],
    omega_ca_cert: Path | None,
    poll_wait: int,
    root_file: Path | None = None,
    blob_cache: str | None = None,
    hold: tuple[tuple[str, ...], str | None, float] = ((), None, 3600.0),
    blob_hosts: tuple[str, ...] = (),
) -> MainframeConfig | None:
    """The mainframe's options as a config (None for other roles); a usage error names
    what is missing, or what only a mainframe takes."""
    from ashat.agent.config import MainframeConfig
    from ashat.bundle.keys import load_public_key
    from ashat.fleet.license import read_license_file

    given = {
        "--omega": omega_url is not None,
        "--license": license_file is not None,
        "--trust-omega": bool(trust_omega),
        "--omega-ca-cert": omega_ca_cert is not None,
        "--blob-cache": blob_cache is not None,
        "--blob-host": bool(blob_hosts),
        "--maintenance-window": bool(hold[0]),
        "--maintenance-tz": hold[1] is not None,
    }
    if role != "mainframe":
        extra = [name for name, present in given.items() if present]
        if extra:
            raise click.UsageError(f"{', '.join(extra)}: only for --role mainframe")
        return None
    # With --root, OMEGA's keys are the root's omega role: --trust-omega may be left out.
    needed = ("--omega", "--license") if root_file else ("--omega", "--license", "--trust-omega")
    missing = [n for n in needed if not given[n]]
    if missing:
        raise click.UsageError(f"--role mainframe needs {', '.join(missing)}")
    assert omega_url is not None and license_file is not None
    from ashat.fleet.windows import WindowError, parse_window, zone

    try:  # checked now, so a window that never opens stops the agent before it starts
        for window in hold[0]:
            parse_window(window)
        zone(hold[1])
    except WindowError as e:
        raise click.UsageError(str(e)) from e
    token, mainframe_id, license_id = read_license_file(license_file)
    keys = [load_public_key(p) for p in trust_omega]
    if root_file is not None and not keys:
        keys = list(_root_omega_keys(root_file))
    return MainframeConfig(
        omega_url=omega_url.rstrip("/"),
        license=token,
        mainframe_id=mainframe_id,
        license_id=license_id,
        trusted_omega={k.keyid: k for k in keys},
        omega_ca_cert=omega_ca_cert,
        poll_wait_s=poll_wait,
        blob_cache=blob_cache.rstrip("/") if blob_cache else None,
        blob_hosts=blob_hosts,
        windows=hold[0],
        window_tz=hold[1],
        update_lock_max_s=hold[2],
    )


def _upstream(file: Path | None, reload: str | None) -> Upstream | None:
    """``--upstream-file`` and ``--upstream-reload`` as one setting (both, or neither)."""
    if file is None and reload is None:
        return None
    if file is None or reload is None:
        raise click.UsageError("--upstream-file and --upstream-reload go together")
    if not file.resolve().parent.is_dir():
        raise click.UsageError(f"--upstream-file {file}: its directory does not exist")
    from ashat.agent.upstream import Upstream

    try:
        return Upstream.parse(file.resolve(), reload)
    except ValueError as e:
        raise click.UsageError(str(e)) from e


def _blob_mirror(
    url: str | None, secret_file: Path | None, ttl: int, s3: tuple[str | None, str | None]
) -> BlobMirror | S3Mirror | None:
    """``--blob-mirror`` and its secret as a config; a usage error if one comes alone.
    ``s3``: ``--blob-mirror-endpoint`` and ``--blob-mirror-region``, for an ``s3://`` one."""
    endpoint, region = s3
    if url is None and secret_file is None:
        if endpoint is not None or region is not None:
            raise click.UsageError(
                "--blob-mirror-endpoint and --blob-mirror-region are for --blob-mirror s3://…"
            )
        return None
    if url is None or secret_file is None:
        raise click.UsageError("--blob-mirror and --blob-mirror-secret-file go together")
    from ashat.agent.config import BlobMirror, S3Mirror, read_aws_credentials
    from ashat.project import read_token_file

    if not url.startswith("s3://"):
        if endpoint is not None or region is not None:
            raise click.UsageError(
                "--blob-mirror-endpoint and --blob-mirror-region are for --blob-mirror s3://…"
            )
        return BlobMirror(url.rstrip("/"), read_token_file(secret_file), ttl)
    region = region or "us-east-1"
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    key_id, secret = read_aws_credentials(secret_file)
    return S3Mirror(
        bucket=bucket,
        prefix=prefix.strip("/"),
        endpoint=(endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/"),
        region=region,
        access_key_id=key_id,
        secret_access_key=secret,
        ttl_s=ttl,
    )


def _root_omega_keys(root_file: Path) -> list[PublicKey]:
    """OMEGA's keys as the root of trust names them (what ``--trust-omega`` would give)."""
    from ashat.trust.chain import ed25519_keys
    from ashat.trust.root import TrustRefused, load_trusted

    try:
        return list(ed25519_keys(load_trusted(root_file.read_bytes()), "omega").values())
    except TrustRefused as e:
        raise click.UsageError(f"--root {root_file}: {e.message}") from e


def _private_key(path: Path | None) -> SigningKey | None:
    from ashat.bundle.keys import load_private_key

    return load_private_key(path) if path is not None else None


def _omega_options(
    role: str, omega_key: Path | None, license_trust: tuple[Path, ...]
) -> tuple[SigningKey | None, dict[str, PublicKey]]:
    """OMEGA's key and trusted license keys (none for other roles); a usage error names
    what is missing, or what only OMEGA takes."""
    from ashat.bundle.keys import load_private_key, load_public_key

    given = {"--omega-key": omega_key is not None, "--license-trust": bool(license_trust)}
    if role != "omega":
        extra = [name for name, present in given.items() if present]
        if extra:
            raise click.UsageError(f"{', '.join(extra)}: only for --role omega")
        return None, {}
    missing = [name for name, present in given.items() if not present]
    if missing:
        raise click.UsageError(f"--role omega needs {' and '.join(missing)}")
    assert omega_key is not None
    keys = [load_public_key(p) for p in license_trust]
    return load_private_key(omega_key), {k.keyid: k for k in keys}


@agent.command("fsck")
@click.option(
    "--data",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    help="The data directory to check (an agent may be running on it).",
)
@click.option(
    "--blob-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="OMEGA: the shared blob store, if not DATA/blobs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def fsck(data: Path, blob_dir: Path | None, as_json: bool) -> None:
    """Check a data directory: every blob hashes to its name, every release tree is
    exactly its signed manifest. Exit 1 if anything is not."""
    import json

    from ashat.agent.fsck import check_data_dir
    from ashat.cli.output import Verdict
    from ashat.errors import OperationFailed

    report = check_data_dir(data.resolve(), blob_dir.resolve() if blob_dir else None)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for line in report.findings:
            click.echo(f"❌ {line}")
        verdict = "clean" if report.clean else f"{len(report.findings)} finding(s)"
        click.echo(
            f"{'✅' if report.clean else '❌'} {data}: {report.blobs} blob file(s), "
            f"{report.releases} release(s) checked: {verdict}"
        )
    if not report.clean:
        raise Verdict(OperationFailed, "fsck found damage")


@agent.command("reload")
@click.option(
    "--data",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    help="The data directory of the running agent.",
)
def reload_cmd(data: Path) -> None:
    """Make a running agent read its --app-env file again and restart its app with it, the
    new app healthy before the old one stops (the same as kill -HUP); on a host agent
    (--apps), each app's."""
    import signal

    from ashat.agent.fsck import app_dirs
    from ashat.agent.layout import Layout
    from ashat.errors import InvalidInput

    # a host agent (--apps) holds each app's data directory, not its own
    holders = (Layout(d).holder() for d in [data.resolve(), *app_dirs(data.resolve())])
    pid = next((p for p in holders if p is not None), None)
    if pid is None:
        raise InvalidInput(f"no agent is running on {data}")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as e:
        raise InvalidInput(f"no agent is running on {data} (pid {pid} is gone)") from e
    except PermissionError as e:
        raise InvalidInput(f"not allowed to signal the agent (pid {pid}): run as its user") from e
    click.echo(
        f"✅ asked the agent (pid {pid}) to re-read --app-env: it restarts its app with it, "
        "healthy first (its log and /v1/health app_env.reloaded_at say when)"
    )
