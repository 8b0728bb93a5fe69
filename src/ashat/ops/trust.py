"""The project's root of trust on disk: ``trust/`` beside ``ashat.toml`` (``ashat trust``).

::

    trust/1.root.json  2.root.json …   every version, as TUF names them (public; commit them)
    trust/root.json                    the newest fully signed version
    trust/draft.json                   the next version while it collects signatures

A change (``add-key``, ``remove-key``, ``edit``) goes into the draft, version N+1 with no
signature; ``ashat trust sign --key`` adds signatures, and once a threshold of version N's
root keys and of its own signed it, the draft becomes ``N+1.root.json`` and ``root.json``.
Every file is written atomically. The chain of trust itself is :mod:`ashat.trust`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ashat.clock import now as clock_now
from ashat.errors import InvalidInput
from ashat.project import write_private
from ashat.trust.keys import TrustKey
from ashat.trust.root import (
    ROLES,
    ROOT_NAMESPACE,
    RoleKeys,
    Root,
    TrustRefused,
    iso,
    load_trusted,
    parse_root,
    update,
    update_chain,
)

TRUST_DIR = "trust"
ROLE_ALIASES = {
    "root": "root",
    "releaser": "releasers",
    "releasers": "releasers",
    "verifier": "verifiers",
    "verifiers": "verifiers",
    "approver": "approvers",
    "approvers": "approvers",
    "omega": "omega",
    "license-issuer": "license_issuers",
    "license_issuers": "license_issuers",
    "license-issuers": "license_issuers",
}
DEFAULT_LIFETIME_DAYS = 365
_VERSION_FILE_RE = re.compile(r"(\d+)\.root\.json")


def role_name(text: str) -> str:
    try:
        return ROLE_ALIASES[text]
    except KeyError:
        raise InvalidInput(
            f"unknown role {text[:40]!r}: expected one of {', '.join(ROLES)}"
        ) from None


now = clock_now


def read_key(path: Path, name: str | None) -> TrustKey:
    """A public key file: an ashat ``.pub`` or an OpenSSH ``.pub``, named ``name`` (default:
    the comment of the line, else the file's stem). Raises InvalidInput."""
    from ashat.bundle.errors import KeyFileError
    from ashat.bundle.keys import PUB_PREFIX, PublicKey

    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read public key {path}") from e
    parts = text.split()
    default = parts[2] if len(parts) >= 3 else path.stem
    if text.startswith(PUB_PREFIX + " "):
        try:
            return TrustKey.ed25519(PublicKey.from_text(text), name or default)
        except KeyFileError as e:
            raise InvalidInput(f"{path}: {e.message}") from e
    if text.startswith("-----BEGIN"):
        raise InvalidInput(f"{path} is a private key: give the public key (.pub)")
    if text.startswith("webauthn "):  # a passkey, as the dashboard shows it
        return TrustKey.webauthn(text, name or path.stem)
    return TrustKey.ssh(text, name or default)


@dataclass(frozen=True)
class Progress:
    """How far a root version is from being accepted."""

    version: int
    old_have: int  # valid signatures by the previous version's root keys
    old_need: int
    own_have: int
    own_need: int

    @property
    def complete(self) -> bool:
        return self.old_have >= self.old_need and self.own_have >= self.own_need

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "complete": self.complete}


class TrustDir:
    """``trust/`` of a project (or any directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read: tuple[list[bytes], Root] | None = None  # the chain and its root, checked

    @classmethod
    def of_project(cls, root: Path) -> TrustDir:
        return cls(root / TRUST_DIR)

    @property
    def root_file(self) -> Path:
        return self.path / "root.json"

    @property
    def draft_file(self) -> Path:
        return self.path / "draft.json"

    def exists(self) -> bool:
        return self.root_file.is_file()

    def versions(self) -> list[Path]:
        """Every ``N.root.json``, in version order."""
        if not self.path.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.path.iterdir()
            if (m := _VERSION_FILE_RE.fullmatch(p.name))
        ]
        return [p for _, p in sorted(found)]

    def current(self) -> Root:
        """The newest root, checked from version 1 up (every link of the chain). Raises
        InvalidInput (no root here) or TrustRefused."""
        if self._read is None:
            files = self.versions()
            if not files:
                raise InvalidInput(
                    f"no root of trust in {self.path} (create one with 'ashat trust init')"
                )
            chain = [p.read_bytes() for p in files]
            self._read = chain, verify_chain(chain, now())
        return self._read[1]

    def chain(self) -> list[bytes]:
        """Every version's bytes, oldest first (what OMEGA and mainframes are handed), as
        :meth:`current` checked them."""
        self.current()
        assert self._read is not None
        return list(self._read[0])

    def draft(self) -> Root | None:
        if not self.draft_file.is_file():
            return None
        return parse_root(self.draft_file.read_bytes(), draft=True)

    def editable(self) -> Root:
        """The draft, or a new draft of the next version made from the current root."""
        draft = self.draft()
        return draft if draft is not None else self.current().next_version()

    def save_draft(self, draft: Root) -> None:
        write_private(self.draft_file, draft.to_bytes(), 0o644)

    def publish(self, root: Root) -> None:
        self._read = None
        data = root.to_bytes()
        write_private(self.path / f"{root.version}.root.json", data, 0o644)
        write_private(self.root_file, data, 0o644)
        if self.draft_file.exists():
            self.draft_file.unlink()


def verify_chain(versions: list[bytes], when: dt.datetime) -> Root:
    """The first version taken on trust (signed by its own threshold), every later one
    chained to it; the last must be unexpired at ``when``."""
    return update_chain(load_trusted(versions[0]), versions[1:], when)


def progress(previous: Root | None, root: Root) -> Progress:
    sigs = [{"keyid": k, "sig": s} for k, s in root.signatures]
    msg = root.signed_bytes()
    own = root.signers(ROOT_NAMESPACE, msg, "root", sigs)
    old = previous.signers(ROOT_NAMESPACE, msg, "root", sigs) if previous else own
    old_need = previous.threshold("root") if previous else root.threshold("root")
    return Progress(root.version, len(old), old_need, len(own), root.threshold("root"))


def parse_lifetime(text: str | None) -> dt.datetime:
    from ashat.fleet.license import parse_expiry

    if text is None:
        return (now() + dt.timedelta(days=DEFAULT_LIFETIME_DAYS)).replace(microsecond=0)
    return parse_expiry(text, now())


def init(
    trust: TrustDir,
    *,
    root_keys: Iterable[Path],
    root_pubs: Iterable[Path] = (),
    root_threshold: int = 1,
    releasers: Iterable[tuple[str | None, Path]],
    verifiers: Iterable[Path],
    approvers: Iterable[tuple[str | None, Path]],
    approvals: int,
    omega: Iterable[Path],
    license_issuers: Iterable[Path] = (),
    expires: str | None = None,
    allow_self_approval: bool = False,
    required_checks: Iterable[str] | None = None,
    max_passkey_approvals: int | None = None,
) -> tuple[Root, Progress]:
    """Write version 1, signed by ``root_keys`` (private key files). Raises InvalidInput
    (a root here already, a bad key, thresholds that cannot be met) or TrustRefused."""
    from ashat.trust.root import SIX_CHECKS
    from ashat.trust.signers import signer_for, ssh_public_line

    if trust.versions() or trust.exists():
        raise InvalidInput(
            f"{trust.path} already holds a root of trust: change it with 'ashat trust "
            "add-key', 'remove-key' or 'edit', then 'ashat trust sign'"
        )
    keys: dict[str, TrustKey] = {}
    roles: dict[str, list[str]] = {r: [] for r in ROLES}

    def add(role: str, key: TrustKey) -> None:
        keys.setdefault(key.keyid, key)
        if key.keyid not in roles[role]:
            roles[role].append(key.keyid)

    signers = []
    for path in root_keys:
        signer, _ = signer_for(path)
        signers.append(signer)
        if path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----"):
            from ashat.bundle.keys import load_private_key

            add("root", TrustKey.ed25519(load_private_key(path).public, path.stem))
        else:
            add("root", TrustKey.ssh(ssh_public_line(path), path.stem))
    for path in root_pubs:
        add("root", read_key(path, None))
    for name, path in releasers:
        add("releasers", read_key(path, name))
    for path in verifiers:
        add("verifiers", read_key(path, None))
    for name, path in approvers:
        add("approvers", read_key(path, name))
    for path in omega:
        add("omega", read_key(path, None))
    for path in license_issuers:
        add("license_issuers", read_key(path, None))
    one_name_per_person(keys.values())
    missing = [r for r in ROLES if not roles[r] and r != "license_issuers"]
    if missing:
        raise InvalidInput(f"a root needs at least one key for {', '.join(missing)}")
    thresholds = {r: 1 for r in ROLES}
    thresholds["root"] = root_threshold
    thresholds["approvers"] = approvals
    if not roles["license_issuers"]:
        roles["license_issuers"] = list(roles["omega"])
    draft_doc = Root(
        version=1,
        expires=parse_lifetime(expires),
        keys=keys,
        roles={r: RoleKeys(tuple(roles[r]), thresholds[r]) for r in ROLES},
        required_checks=tuple(required_checks) if required_checks is not None else SIX_CHECKS,
        allow_self_approval=allow_self_approval,
        max_passkey_approvals=max_passkey_approvals,
    )
    root = _reparse(draft_doc)  # every rule of a root file, thresholds included
    for signer in signers:
        root = sign_root(root, signer)
    done = progress(None, root)
    if not done.complete:
        raise InvalidInput(
            f"version 1 needs {done.own_need} root signature(s) and --root-key gave "
            f"{done.own_have}: give enough root private keys to sign it"
        )
    trust.publish(root)
    return root, done


def one_name_per_person(keys: Iterable[TrustKey]) -> None:
    """Refuse names that differ only in case: the chain compares them ignoring case
    (:func:`~ashat.ids.same_person`), so "Bob" and "bob" are one approver, and the root
    would say otherwise. Raises InvalidInput."""
    from ashat.ids import same_person

    seen: dict[str, str] = {}
    for key in keys:
        first = seen.setdefault(same_person(key.name), key.name)
        if first != key.name:
            raise InvalidInput(
                f"key names {first!r} and {key.name!r} differ only in case; a root compares "
                "names ignoring case (one person's keys count once): give both the same name"
            )


def _reparse(root: Root, draft: bool = False) -> Root:
    try:
        return parse_root(root.to_bytes(), draft=draft)
    except TrustRefused as e:
        raise InvalidInput(e.message.replace("root.json refused: ", "")) from e


def sign_root(root: Root, signer: Any) -> Root:
    keyid, sig = signer(ROOT_NAMESPACE, root.signed_bytes())
    return root.with_signature(keyid, sig)


def add_key(trust: TrustDir, role: str, key: TrustKey, threshold: int | None) -> Root:
    draft = trust.editable()
    keys = dict(draft.keys)
    existing = keys.get(key.keyid)
    if existing is not None and existing.name != key.name:
        raise InvalidInput(
            f"key {key.keyid} is in root already as {existing.name!r}, not {key.name!r}"
        )
    keys[key.keyid] = key
    one_name_per_person(keys.values())
    spec = draft.roles[role]
    ids = spec.keyids if key.keyid in spec.keyids else (*spec.keyids, key.keyid)
    retired = {k: d for k, d in draft.retired.items() if k != key.keyid}
    roles = {**draft.roles, role: RoleKeys(ids, threshold or spec.threshold)}
    new = _reparse(dataclasses.replace(draft, keys=keys, roles=roles, retired=retired), True)
    trust.save_draft(new)
    return new


def approved_manifests(
    project: Any, keyids: Iterable[str], through_sequence: int
) -> dict[str, tuple[str, ...]]:
    """The manifest digests each key's signed approvals in the project's store approve,
    for releases up to ``through_sequence``: what a retired key keeps counting for."""
    wanted = set(keyids)
    found: dict[str, list[str]] = {k: [] for k in wanted}
    for statement in project.reader().store.signed_approvals():
        signed = statement.get("signed") or {}
        sequence, digest = signed.get("sequence"), signed.get("manifest_digest")
        if not isinstance(sequence, int) or sequence > through_sequence:
            continue
        for sig in statement.get("signatures") or []:
            kid = sig.get("keyid") if isinstance(sig, dict) else None
            if kid in wanted and isinstance(digest, str) and digest not in found[kid]:
                found[kid].append(digest)
    return {k: tuple(sorted(v)) for k, v in found.items()}


def keys_named(trust: TrustDir, role: str, who: str) -> list[str]:
    """The key ids of ``role`` in the draft that ``who`` (a name or a key id) names."""
    draft = trust.editable()
    return [k for k in draft.roles[role].keyids if who in (k, draft.keys[k].name)]


def remove_key(
    trust: TrustDir,
    role: str,
    who: str,
    threshold: int | None,
    retire: dict[str, tuple[str, ...]] | None = None,
) -> tuple[Root, list[str]]:
    """Take the keys of ``who`` (a name or key id) out of ``role``. With ``retire``
    (approvers only; key id -> manifest digests), their approvals still count for those
    releases and no other. A key already retired is revoked: it counts for nothing."""
    draft = trust.editable()
    spec = draft.roles[role]
    gone = [k for k in spec.keyids if who in (k, draft.keys[k].name)]
    retired = dict(draft.retired)
    if not gone:
        revoked = [k for k in retired if who in (k, draft.keys[k].name)]
        if role == "approvers" and revoked and retire is None:
            for k in revoked:
                del retired[k]
            keys = {k: v for k, v in draft.keys.items() if k not in revoked}
            new = _reparse(dataclasses.replace(draft, keys=keys, retired=retired), True)
            trust.save_draft(new)
            return new, revoked
        raise InvalidInput(
            f"no key of role {role} is named or has the id {who!r} (see 'ashat trust show')"
        )
    if retire is not None and role != "approvers":
        raise InvalidInput("--retire-through applies to approvers only")
    ids = tuple(k for k in spec.keyids if k not in gone)
    if not ids:
        raise InvalidInput(f"role {role} would have no key left: add its new key first")
    if retire is not None:
        retired.update({k: retire.get(k, ()) for k in gone})
    roles = {**draft.roles, role: RoleKeys(ids, threshold or spec.threshold)}
    used = {k for r in roles.values() for k in r.keyids} | set(retired)
    keys = {k: v for k, v in draft.keys.items() if k in used}
    new = _reparse(dataclasses.replace(draft, keys=keys, roles=roles, retired=retired), True)
    trust.save_draft(new)
    return new, gone


def edit(
    trust: TrustDir,
    *,
    thresholds: dict[str, int],
    expires: str | None,
    allow_self_approval: bool | None,
    required_checks: list[str] | None,
    max_passkey_approvals: int | None = None,
) -> Root:
    draft = trust.editable()
    roles = dict(draft.roles)
    for role, n in thresholds.items():
        roles[role] = RoleKeys(roles[role].keyids, n)
    changes: dict[str, Any] = {"roles": roles}
    if expires is not None:
        changes["expires"] = parse_lifetime(expires)
    if allow_self_approval is not None:
        changes["allow_self_approval"] = allow_self_approval
    if required_checks is not None:
        changes["required_checks"] = tuple(required_checks)
    if max_passkey_approvals is not None:
        changes["max_passkey_approvals"] = max_passkey_approvals
    new = _reparse(dataclasses.replace(draft, **changes), True)
    trust.save_draft(new)
    return new


def sign(trust: TrustDir, key_paths: Iterable[Path]) -> tuple[Root, Progress, bool]:
    """Sign the draft (or, with none, the current root) with each key; publish a draft
    that is complete. Returns the root, its progress, and whether it was published."""
    from ashat.trust.signers import signer_for

    draft = trust.draft()
    current = trust.current()
    target, previous = (draft, current) if draft is not None else (current, None)
    if draft is None and current.version > 1:
        files = trust.versions()
        previous = parse_root(files[-2].read_bytes()) if len(files) > 1 else None
    for path in key_paths:
        signer, keyid = signer_for(path)
        if keyid not in target.roles["root"].keyids and (
            previous is None or keyid not in previous.roles["root"].keyids
        ):
            raise InvalidInput(
                f"{path} (key {keyid}) is not a root key of version {target.version} "
                f"nor of the version before"
            )
        target = sign_root(target, signer)
    done = progress(previous, target)
    if draft is None:
        trust.publish(target)
        return target, done, True
    if done.complete:
        try:  # the same rules every client applies, thresholds included
            update(current, target.to_bytes(), now())
        except TrustRefused as e:
            raise InvalidInput(
                f"draft version {target.version} cannot be published: {e.message}"
            ) from e
        trust.publish(target)
        return target, done, True
    trust.save_draft(target)
    return target, done, False


def describe(root: Root) -> dict[str, Any]:
    return {
        "version": root.version,
        "expires": iso(root.expires),
        "digest": root.digest(),
        "roles": {
            r: {
                "threshold": root.threshold(r),
                "keys": [
                    {"keyid": k, "type": root.keys[k].type, "name": root.keys[k].name}
                    for k in root.roles[r].keyids
                ],
            }
            for r in ROLES
        },
        "retired": [
            {"keyid": k, "name": root.keys[k].name, "manifests": list(d)}
            for k, d in sorted(root.retired.items())
        ],
        "required_checks": list(root.required_checks),
        "allow_self_approval": root.allow_self_approval,
        "max_passkey_approvals": root.passkey_cap(),
        "signatures": [k for k, _ in root.signatures],
    }


def push(trust: TrustDir, omega: Any) -> tuple[int, int]:
    """Hand OMEGA (an agent client) the project's root chain; it keeps the versions that
    chain from the one it holds and gives them to every mainframe in its next answer.
    Returns (the version here, the version OMEGA holds). Raises TrustRefused when OMEGA
    did not take the version in force here, or the client's errors."""
    import json

    current = trust.current()
    answer = omega.hand_roots([json.loads(b) for b in trust.chain()])
    held = answer.get("version")
    if not isinstance(held, int) or held < current.version:
        raise TrustRefused(
            "version",
            f"OMEGA holds root version {held} and did not take version {current.version}: "
            "it does not chain from OMEGA's (see OMEGA's log)",
        )
    return current.version, held
