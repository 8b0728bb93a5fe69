"""``ashat trust``: the project's root of trust (``trust/root.json``), TUF-style.

The work is in :mod:`ashat.ops.trust`; these verbs parse and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ashat.cli.output import OK, WARN, AshatGroup, emit, json_option
from ashat.clock import valid_through

if TYPE_CHECKING:
    from ashat.ops.trust import Progress, TrustDir
    from ashat.trust.root import Root

KEY_FILE = click.Path(dir_okay=False, exists=True)


def _dir(path: str | None) -> TrustDir:
    from ashat.ops.trust import TrustDir
    from ashat.project import find_project_root

    if path is not None:
        return TrustDir(Path(path))
    return TrustDir.of_project(find_project_root())


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it is below it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _named(values: tuple[str, ...], option: str) -> list[tuple[str | None, Path]]:
    """``NAME=FILE`` or ``FILE`` (the name then comes from the key's comment)."""
    out: list[tuple[str | None, Path]] = []
    for v in values:
        name, sep, path = v.partition("=")
        if sep and name and "/" not in name:
            out.append((name, Path(path)))
        else:
            out.append((None, Path(v)))
        if not out[-1][1].is_file():
            raise click.BadParameter(f"{out[-1][1]} is not a file", param_hint=option)
    return out


def _print_root(root: Root, heading: str) -> None:
    from ashat.ops.trust import describe

    d = describe(root)
    click.echo(f"{heading}: version {d['version']}, valid {valid_through(d['expires'])}")
    for role, spec in d["roles"].items():
        who = ", ".join(f"{k['name']} ({k['type']} {k['keyid']})" for k in spec["keys"])
        click.echo(f"  {role:<16} {spec['threshold']} of: {who or '-'}")
    for r in d["retired"]:
        click.echo(
            f"  retired          {r['name']} ({r['keyid']}): approvals count for "
            f"{len(r['manifests'])} release(s) approved before"
        )
    click.echo(f"  required checks  {', '.join(d['required_checks'])}")
    click.echo(f"  self-approval    {'allowed' if d['allow_self_approval'] else 'refused'}")
    click.echo(f"  passkeys         at most {d['max_passkey_approvals']} of the approvals")


def _print_progress(p: Progress, published: bool, trust: TrustDir) -> None:
    if published:
        click.echo(
            f"{OK} root version {p.version} is signed and in force ({_shown(trust.root_file)})"
        )
        click.echo("   OMEGA takes it at the next 'deploy approve'; mainframes from OMEGA")
    else:
        click.echo(
            f"{WARN} root version {p.version} has {p.old_have} of {p.old_need} signature(s) by "
            f"the previous root keys and {p.own_have} of {p.own_need} by its own: "
            f"more root key holders must run 'ashat trust sign --key …'"
        )


dir_option = click.option(
    "--dir",
    "trust_dir",
    type=click.Path(file_okay=False),
    help="The trust directory (default: trust/ beside ashat.toml).",
)


@click.group("trust", cls=AshatGroup)
def trust_group() -> None:
    """The root of trust: who releases, verifies, approves (k of whom) and distributes."""


@trust_group.command("init")
@click.option(
    "--root-key",
    "root_keys",
    multiple=True,
    type=KEY_FILE,
    required=True,
    help="A root private key (ashat or OpenSSH) that signs version 1 (repeatable).",
)
@click.option(
    "--root-pub",
    "root_pubs",
    multiple=True,
    type=KEY_FILE,
    help="Another root key's public half, to sign later versions (repeatable).",
)
@click.option("--root-threshold", type=click.IntRange(1, 50), default=1, show_default=True)
@click.option(
    "--releaser",
    "releasers",
    multiple=True,
    required=True,
    metavar="[NAME=]PUB",
    help="A key that signs releases (ALPHA's, CI's, ashat serve's).",
)
@click.option(
    "--verifier",
    "verifiers",
    multiple=True,
    required=True,
    type=KEY_FILE,
    help="PUBLIC's verifier public key.",
)
@click.option(
    "--approver",
    "approvers",
    multiple=True,
    required=True,
    metavar="NAME=PUB",
    help="An approver's public key: ashat or OpenSSH (repeatable).",
)
@click.option(
    "--approvals",
    type=click.IntRange(1, 50),
    default=1,
    show_default=True,
    help="k: approvals from distinct approvers a release needs.",
)
@click.option(
    "--omega",
    "omega",
    multiple=True,
    required=True,
    type=KEY_FILE,
    help="OMEGA's public key (omega.pub).",
)
@click.option(
    "--license-issuer",
    "license_issuers",
    multiple=True,
    type=KEY_FILE,
    help="A license-issuing public key (default: the OMEGA keys).",
)
@click.option("--expires", help="YYYY-MM-DD or ISO time (default: a year from now).")
@click.option(
    "--allow-self-approval", is_flag=True, help="Let whoever released a release approve it too."
)
@click.option(
    "--require-checks", help="Checks every release must pass, comma-separated (default: the six)."
)
@click.option(
    "--max-passkey-approvals",
    type=click.IntRange(0, 50),
    help="How many of the k approvals may be passkey signatures (default k - 1).",
)
@dir_option
@json_option
def init_cmd(
    root_keys: tuple[str, ...],
    root_pubs: tuple[str, ...],
    root_threshold: int,
    releasers: tuple[str, ...],
    verifiers: tuple[str, ...],
    approvers: tuple[str, ...],
    approvals: int,
    omega: tuple[str, ...],
    license_issuers: tuple[str, ...],
    expires: str | None,
    allow_self_approval: bool,
    require_checks: str | None,
    max_passkey_approvals: int | None,
    trust_dir: str | None,
) -> None:  # fmt: skip
    """Write version 1 of the root of trust, signed by the --root-key keys."""
    from ashat.ops import trust as ops

    trust = _dir(trust_dir)
    root, _ = ops.init(
        trust,
        root_keys=[Path(p) for p in root_keys],
        root_pubs=[Path(p) for p in root_pubs],
        root_threshold=root_threshold,
        releasers=_named(releasers, "--releaser"),
        verifiers=[Path(p) for p in verifiers],
        approvers=_named(approvers, "--approver"),
        approvals=approvals,
        omega=[Path(p) for p in omega],
        license_issuers=[Path(p) for p in license_issuers],
        expires=expires,
        allow_self_approval=allow_self_approval,
        required_checks=[c.strip() for c in require_checks.split(",")] if require_checks else None,
        max_passkey_approvals=max_passkey_approvals,
    )

    def human() -> None:
        _print_root(root, f"{OK} root of trust written to {_shown(trust.root_file)}")
        click.echo("   start OMEGA and mainframes with --root pointing at this file")

    emit(ops.describe(root), human)


def _role(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ashat.ops.trust import role_name

    return role_name(value)


@trust_group.command("add-key")
@click.argument("role", callback=_role)
@click.argument("public_key", type=KEY_FILE)
@click.option("--name", help="Who holds it (approvers: the name that approves).")
@click.option("--threshold", type=click.IntRange(1, 50), help="The role's new threshold.")
@dir_option
@json_option
def add_key_cmd(
    role: str, public_key: str, name: str | None, threshold: int | None, trust_dir: str | None
) -> None:
    """Add a key to ROLE in the next version (a draft until signed)."""
    from ashat.ops import trust as ops

    trust = _dir(trust_dir)
    key = ops.read_key(Path(public_key), name)
    draft = ops.add_key(trust, role, key, threshold)

    def human() -> None:
        click.echo(f"{OK} draft version {draft.version}: {key.name} ({key.keyid}) in {role}")
        click.echo("   root key holders now run: ashat trust sign --key ROOT.key")

    emit(ops.describe(draft), human)


@trust_group.command("remove-key")
@click.argument("role", callback=_role)
@click.argument("who")
@click.option("--threshold", type=click.IntRange(1, 50), help="The role's new threshold.")
@click.option(
    "--retire-through",
    type=click.IntRange(0),
    metavar="SEQUENCE",
    help="Approvers: keep their approvals of releases up to this sequence valid (someone "
    "who left: the manifests they approved, as the project's store holds them, are named in "
    "root); without it, or for a key retired already, the key counts for nothing (a lost key).",
)
@dir_option
@json_option
def remove_key_cmd(
    role: str, who: str, threshold: int | None, retire_through: int | None,
    trust_dir: str | None,
) -> None:  # fmt: skip
    """Take WHO's keys (a name or key id) out of ROLE in the next version."""
    from ashat.ops import trust as ops

    trust = _dir(trust_dir)
    retire = None
    if retire_through is not None:
        from ashat.ops.project import Project

        retire = ops.approved_manifests(
            Project.find(), ops.keys_named(trust, role, who), retire_through
        )
    draft, gone = ops.remove_key(trust, role, who, threshold, retire)

    def human() -> None:
        kept = sum(len(d) for d in (retire or {}).values())
        how = (
            f"retired (their approvals of {kept} release(s) up to sequence "
            f"{retire_through} keep counting)"
            if retire is not None
            else "revoked"
        )
        click.echo(f"{OK} draft version {draft.version}: {', '.join(gone)} {how} from {role}")
        click.echo("   root key holders now run: ashat trust sign --key ROOT.key")

    emit({**ops.describe(draft), "removed": gone}, human)


@trust_group.command("edit")
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="ROLE=N",
    help="A role's threshold (approvers: k).",
)
@click.option("--expires", help="YYYY-MM-DD or ISO time.")
@click.option("--allow-self-approval/--refuse-self-approval", default=None)
@click.option("--require-checks", help="Checks every release must pass, comma-separated.")
@click.option(
    "--max-passkey-approvals",
    type=click.IntRange(0, 50),
    help="How many of the k approvals may be passkey signatures.",
)
@dir_option
@json_option
def edit_cmd(
    thresholds: tuple[str, ...], expires: str | None, allow_self_approval: bool | None,
    require_checks: str | None, max_passkey_approvals: int | None, trust_dir: str | None,
) -> None:  # fmt: skip
    """Change thresholds, expiry or policy in the next version."""
    from ashat.errors import InvalidInput
    from ashat.ops import trust as ops

    parsed: dict[str, int] = {}
    for t in thresholds:
        role, _, n = t.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise InvalidInput(f"--threshold {t!r}: expected ROLE=N with N ≥ 1")
        parsed[ops.role_name(role)] = int(n)
    trust = _dir(trust_dir)
    checks = [c.strip() for c in require_checks.split(",")] if require_checks else None
    draft = ops.edit(
        trust,
        thresholds=parsed,
        expires=expires,
        allow_self_approval=allow_self_approval,
        required_checks=checks,
        max_passkey_approvals=max_passkey_approvals,
    )
    emit(ops.describe(draft), lambda: _print_root(draft, f"{OK} draft"))


@trust_group.command("sign")
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    type=KEY_FILE,
    help="A root private key (ashat or OpenSSH; repeatable).",
)
@dir_option
@json_option
def sign_cmd(keys: tuple[str, ...], trust_dir: str | None) -> None:
    """Sign the draft (or the current root); publish it once enough root keys signed."""
    from ashat.ops import trust as ops

    trust = _dir(trust_dir)
    root, progress, published = ops.sign(trust, [Path(k) for k in keys])
    emit(
        {**ops.describe(root), "progress": progress.to_json(), "published": published},
        lambda: _print_progress(progress, published, trust),
    )


@trust_group.command("push")
@dir_option
@json_option
def push_cmd(trust_dir: str | None) -> None:
    """Give OMEGA the root in force now; mainframes get it from OMEGA's next answers.

    (Each release carries the root chain too: this is for a change that must reach an idle
    fleet now, such as a key revoked.)
    """
    from ashat.ops import trust as ops
    from ashat.ops.project import Project, client_for

    trust = _dir(trust_dir)
    with client_for(Project.find().require_server("omega")) as omega:
        here, held = ops.push(trust, omega)
    emit(
        {"version": here, "omega_version": held},
        lambda: click.echo(f"{OK} OMEGA holds root version {held}; mainframes take it next"),
    )


@trust_group.command("show")
@click.option("--draft", is_flag=True, help="Show the draft instead of the root in force.")
@dir_option
@json_option
def show_cmd(draft: bool, trust_dir: str | None) -> None:
    """Who holds which role, the thresholds, and the expiry."""
    from ashat.errors import InvalidInput
    from ashat.ops import trust as ops

    trust = _dir(trust_dir)
    root = trust.draft() if draft else trust.current()
    if root is None:
        raise InvalidInput(f"no draft in {trust.path}")
    what = "draft" if draft else "root of trust"
    emit(ops.describe(root), lambda: _print_root(root, f"{what} ({_shown(trust.path)})"))


@trust_group.command("verify")
@click.argument("files", nargs=-1, type=KEY_FILE)
@dir_option
@json_option
def verify_cmd(files: tuple[str, ...], trust_dir: str | None) -> None:
    """Check the chain: version 1 by its own root keys, each next one by the one before.

    FILES (oldest first) are checked instead of the trust directory's versions.
    """
    from ashat.ops import trust as ops

    if files:
        chain = [Path(f).read_bytes() for f in files]
        root = ops.verify_chain(chain, ops.now())
    else:
        trust = _dir(trust_dir)
        chain = trust.chain()
        root = trust.current()
    out: dict[str, Any] = {"ok": True, "versions": len(chain), **ops.describe(root)}
    emit(
        out,
        lambda: click.echo(
            f"{OK} root of trust verified: {len(chain)} version(s), version {root.version} "
            f"in force {valid_through(out['expires'])}"
        ),
    )
