"""``root.json``: who may sign what, how many must agree, and how that changes (TUF's root).

::

    {"signed": {"type": "ashat-root", "version": 1, "expires": "2027-12-05T00:00:00Z",
                "keys": {KEYID: {"type": "ed25519"|"ssh", "public": ..., "name": ...}},
                "roles": {ROLE: {"keyids": [KEYID, ...], "threshold": N}, ...},
                "retired": {KEYID: {"manifests": [DIGEST, ...]}},
                "required_checks": ["health", ...],
                "allow_self_approval": false,
                "max_passkey_approvals": null},
     "signatures": [{"keyid": KEYID, "sig": ...}]}

The roles are ``root`` (signs root.json), ``releasers`` (sign release manifests),
``verifiers`` (PUBLIC: sign verification statements), ``approvers`` (their threshold is k,
the approvals a release needs, each from a distinct name), ``omega`` (signs directives to
mainframes) and ``license_issuers``. ``required_checks`` are checks a verification statement
must show passed whatever a project's ``ashat.toml`` says. ``max_passkey_approvals`` caps
how many of the k approvals may be passkey (WebAuthn) signatures — null: k − 1 — because a
browser signs the challenge the dashboard's server gives it, and shows nothing of what it
signs: at least one approver should sign on their own machine, seeing the statement.
An approver who leaves is *retired*: their key still counts for the releases (manifest
digests) they approved before they left, and for nothing else — not even a new release
minted with an old sequence; a key removed outright counts for nothing.

Rotation follows TUF (the specification's 5.3): version N+1 is accepted only when a
threshold of version N's root keys *and* a threshold of its own root keys signed it; a
client never goes back to an older version, and refuses an expired one.

Pure: bytes, keys and a time in; a :class:`Root` or a :class:`TrustRefused` out.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ashat.canonical import canonical_json, sha256_hex
from ashat.clock import iso_seconds
from ashat.clock import now as clock_now
from ashat.errors import Refused
from ashat.trust.keys import TrustKey, TrustKeyError

ROOT_TYPE = "ashat-root"
ROOT_NAMESPACE = "ashat-root"
ROLES = ("root", "releasers", "verifiers", "approvers", "omega", "license_issuers")
SIX_CHECKS = ("health", "modules", "api", "database", "performance", "security")
MAX_ROOT_BYTES = 512 * 1024  # bytes; python-tuf's root_max_length
MAX_KEYS = 256
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


class TrustRefused(Refused):
    """A root or a statement that does not carry the trust it claims.

    ``reason`` is one word: ``malformed``, ``threshold`` (too few valid signatures),
    ``version`` (not the next version, or older than the one held), ``expired``, and the
    chain's own (:mod:`ashat.trust.chain`).
    """

    kind = "trust_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


def parse_time(value: Any, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO 8601 time")
    t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{what} {value[:40]!r} has no time zone")
    return t


def iso(t: dt.datetime) -> str:
    """As roots and statements write their times (:func:`ashat.clock.iso_seconds`)."""
    return iso_seconds(t)


def now_iso() -> str:
    """Now, as statements write their times (to the second, UTC)."""
    return iso_seconds(clock_now())


@dataclass(frozen=True)
class RoleKeys:
    keyids: tuple[str, ...]
    threshold: int

    def to_json(self) -> dict[str, Any]:
        return {"keyids": list(self.keyids), "threshold": self.threshold}


@dataclass(frozen=True)
class Root:
    """A parsed root; its signatures are checked by :func:`load_trusted` / :func:`update`."""

    version: int
    expires: dt.datetime
    keys: Mapping[str, TrustKey]
    roles: Mapping[str, RoleKeys]
    # key id -> the manifest digests its approvals still count for
    retired: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    required_checks: tuple[str, ...] = SIX_CHECKS
    allow_self_approval: bool = False
    max_passkey_approvals: int | None = None  # None: k - 1
    signatures: tuple[tuple[str, str], ...] = ()  # (key id, signature)

    # -- the signed form ----------------------------------------------------------------------

    def signed(self) -> dict[str, Any]:
        return {
            "type": ROOT_TYPE,
            "version": self.version,
            "expires": iso(self.expires),
            "keys": {k: v.to_json() for k, v in sorted(self.keys.items())},
            "roles": {r: self.roles[r].to_json() for r in ROLES},
            "retired": {k: {"manifests": list(d)} for k, d in sorted(self.retired.items())},
            "required_checks": list(self.required_checks),
            "allow_self_approval": self.allow_self_approval,
            "max_passkey_approvals": self.max_passkey_approvals,
        }

    def signed_bytes(self) -> bytes:
        return canonical_json(self.signed())

    def digest(self) -> str:
        return sha256_hex(self.signed_bytes())

    def to_json(self) -> dict[str, Any]:
        return {
            "signed": self.signed(),
            "signatures": [{"keyid": k, "sig": s} for k, s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        """The file's bytes: indented JSON, for people to read and diff."""
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")

    # -- questions ----------------------------------------------------------------------------

    def keys_of(self, role: str) -> dict[str, TrustKey]:
        return {k: self.keys[k] for k in self.roles[role].keyids}

    def threshold(self, role: str) -> int:
        return self.roles[role].threshold

    def passkey_cap(self) -> int:
        """How many of the k approvals may be passkey signatures."""
        cap = self.max_passkey_approvals
        return self.threshold("approvers") - 1 if cap is None else cap

    def names_of(self, role: str) -> list[str]:
        return sorted({self.keys[k].name for k in self.roles[role].keyids})

    def signers(self, namespace: str, message: bytes, role: str, sigs: Iterable[Any]) -> set[str]:
        """The key ids of ``role`` whose signature in ``sigs`` verifies (each counted once)."""
        keys = self.keys_of(role)
        good: set[str] = set()
        for s in sigs:
            if not isinstance(s, Mapping):
                continue
            kid = s.get("keyid")
            if (
                isinstance(kid, str)
                and kid in keys
                and kid not in good
                and keys[kid].verify(namespace, message, s.get("sig"))
            ):
                good.add(kid)
        return good

    def with_signature(self, keyid: str, sig: str) -> Root:
        others = tuple((k, s) for k, s in self.signatures if k != keyid)
        return _replace(self, signatures=(*others, (keyid, sig)))

    def next_version(self, **changes: Any) -> Root:
        """A draft of version N+1 with ``changes`` and no signature."""
        return _replace(self, version=self.version + 1, signatures=(), **changes)


def _replace(root: Root, **changes: Any) -> Root:
    import dataclasses

    return dataclasses.replace(root, **changes)


def _int(value: Any, what: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{what} must be an integer ≥ {low}")
    return value


def parse_root(data: bytes, *, draft: bool = False) -> Root:
    """Parse and validate ``root.json`` (its signatures are not checked here). A ``draft``
    (a version being edited) may have a threshold its keys cannot meet yet.

    Raises :class:`TrustRefused` (``malformed``) naming what is wrong.
    """
    if len(data) > MAX_ROOT_BYTES:
        raise TrustRefused("malformed", f"root.json is over {MAX_ROOT_BYTES} bytes")
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) != {"signed", "signatures"}:
            raise ValueError("expected exactly 'signed' and 'signatures'")
        s, sigs = doc["signed"], doc["signatures"]
        if not isinstance(s, dict) or s.get("type") != ROOT_TYPE:
            raise ValueError(f"'signed' must be an object of type {ROOT_TYPE!r}")
        if not isinstance(s.get("keys"), dict) or len(s["keys"]) > MAX_KEYS:
            raise ValueError(f"'keys' must be an object of at most {MAX_KEYS} keys")
        keys = {str(k): TrustKey.from_json(str(k), v) for k, v in s["keys"].items()}
        seen: dict[bytes, str] = {}
        for kid, key in keys.items():  # TUF: a threshold counts distinct keys
            other = seen.setdefault(key.material(), kid)
            if other != kid:
                raise ValueError(f"keys {other} and {kid} are one key under two encodings")
        roles_doc = s.get("roles")
        if not isinstance(roles_doc, dict) or set(roles_doc) != set(ROLES):
            raise ValueError(f"'roles' must name exactly {', '.join(ROLES)}")
        roles = {}
        for name in ROLES:
            r = roles_doc[name]
            if not isinstance(r, dict) or not isinstance(r.get("keyids"), list):
                raise ValueError(f"role {name!r} must have keyids and a threshold")
            ids = tuple(r["keyids"])
            if len(set(ids)) != len(ids) or not all(k in keys for k in ids):
                raise ValueError(f"role {name!r} lists a key twice or a key not in 'keys'")
            threshold = _int(r.get("threshold"), f"role {name!r}'s threshold", 1)
            distinct = len({keys[k].name for k in ids}) if name == "approvers" else len(ids)
            if threshold > distinct and not draft:
                raise ValueError(
                    f"role {name!r} needs {threshold} signatures but has only {distinct} "
                    + ("distinct approvers" if name == "approvers" else "keys")
                )
            roles[name] = RoleKeys(ids, threshold)
        root_types = {keys[k].type for k in roles["root"].keyids}
        if root_types - {"ed25519", "ssh"}:
            raise ValueError("root keys must be ed25519 or ssh keys")
        retired_doc = s.get("retired", {})
        if not isinstance(retired_doc, dict):
            raise ValueError("'retired' must be an object")
        retired = {}
        for k, v in retired_doc.items():
            if k not in keys or not isinstance(v, dict) or set(v) != {"manifests"}:
                raise ValueError(
                    f"retired key {str(k)[:20]!r} must be in 'keys', with its manifests"
                )
            digests = v["manifests"]
            if not isinstance(digests, list) or not all(
                isinstance(d, str) and _DIGEST_RE.fullmatch(d) for d in digests
            ):
                raise ValueError(f"retired key {k[:20]!r}: manifests must be sha256 digests")
            retired[k] = tuple(digests)
        checks = s.get("required_checks", list(SIX_CHECKS))
        if not isinstance(checks, list) or not all(isinstance(c, str) and c for c in checks):
            raise ValueError("'required_checks' must be a list of check names")
        if not checks:
            raise ValueError("'required_checks' must name at least one check")
        allow_self = s.get("allow_self_approval", False)
        if not isinstance(allow_self, bool):
            raise ValueError("'allow_self_approval' must be true or false")
        cap = s.get("max_passkey_approvals")
        if cap is not None:
            cap = _int(cap, "max_passkey_approvals", 0)
        if not isinstance(sigs, list) or len(sigs) > MAX_KEYS:
            raise ValueError("'signatures' must be a list")
        pairs = []
        for sig in sigs:
            if not isinstance(sig, dict) or not all(
                isinstance(sig.get(f), str) for f in ("keyid", "sig")
            ):
                raise ValueError("each signature must have a keyid and a sig")
            pairs.append((sig["keyid"], sig["sig"]))
        root = Root(
            version=_int(s.get("version"), "version", 1),
            expires=parse_time(s.get("expires"), "expires"),
            keys=keys,
            roles=roles,
            retired=retired,
            required_checks=tuple(checks),
            allow_self_approval=allow_self,
            max_passkey_approvals=cap,
            signatures=tuple(pairs),
        )
        if root.signed_bytes() != canonical_json(s):
            raise ValueError("'signed' has fields this version does not know")
    except TrustKeyError as e:
        raise TrustRefused("malformed", f"root.json refused: {e.message}") from e
    except (ValueError, TypeError, RecursionError) as e:
        raise TrustRefused("malformed", f"root.json refused: {e}") from e
    return root


def _threshold_of(signer: Root, root: Root, whose: str) -> None:
    good = signer.signers(ROOT_NAMESPACE, root.signed_bytes(), "root", _sig_docs(root))
    need = signer.threshold("root")
    if len(good) < need:
        raise TrustRefused(
            "threshold",
            f"root version {root.version} carries {len(good)} valid signature(s) of {whose} "
            f"root keys; {need} needed",
        )


def _sig_docs(root: Root) -> list[dict[str, str]]:
    return [{"keyid": k, "sig": s} for k, s in root.signatures]


def _unexpired(root: Root, now: dt.datetime) -> Root:
    if now >= root.expires:
        raise TrustRefused("expired", f"root version {root.version} expired at {iso(root.expires)}")
    return root


def load_trusted(data: bytes, now: dt.datetime | None = None) -> Root:
    """A first root taken on trust (installed by the operator, as TUF's bootstrap root):
    it must still be signed by a threshold of its own root keys (and, ``now`` given, be
    unexpired: a chain checks only its last version's expiry)."""
    root = parse_root(data)
    _threshold_of(root, root, "its own")
    return root if now is None else _unexpired(root, now)


def update(trusted: Root, data: bytes, now: dt.datetime | None = None) -> Root:
    """The next root after ``trusted``: version + 1, signed by a threshold of ``trusted``'s
    root keys and of its own. ``now`` given: it must be unexpired too (the last of a chain).

    Raises :class:`TrustRefused` (``malformed``, ``version``, ``threshold``, ``expired``).
    """
    new = parse_root(data)
    if new.version != trusted.version + 1:
        raise TrustRefused(
            "version",
            f"root version {new.version} does not follow the trusted version "
            f"{trusted.version} (an older root, or one skipped)",
        )
    _threshold_of(trusted, new, f"version {trusted.version}'s")
    _threshold_of(new, new, "its own")
    return new if now is None else _unexpired(new, now)


def update_chain(trusted: Root, newer: Iterable[bytes], now: dt.datetime) -> Root:
    """Walk ``newer`` (versions trusted+1, +2, …) from ``trusted``; the last must be
    unexpired (intermediate ones may have expired since, as in TUF)."""
    current = trusted
    for data in newer:
        current = update(current, data)
    return _unexpired(current, now)
