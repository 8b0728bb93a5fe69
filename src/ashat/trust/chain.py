"""Does this release carry its whole chain? The check OMEGA and every mainframe run alone.

Given a root (:mod:`.root`), a manifest and its *evidence* — ``{"verification":
STATEMENT, "approvals": [STATEMENT, ...]}`` (:mod:`.statements`) — :func:`check_chain`
requires, in order, each failure refusing with one word (:class:`TrustRefused`'s reason):

1. ``release_signature``: a ``release`` signature by a releasers key of root;
2. ``verification``: a verification statement signed by a verifier key of root, for this
   very manifest (update id, sequence, digest), in which every check the statement
   requires *and* every check root requires has passed (or was skipped for want of
   anything to check);
3. ``approvals``: approval statements of this manifest and of that verification statement,
   each signed by an approvers key of root under the approver's own name (a retired key
   only for the manifests root lists for it); at least k (root's approvers
   threshold) distinct names, not counting the releaser's own name unless root allows
   self-approval.

Evidence that is not even shaped right is ``malformed``. Pure: nothing is fetched; OMEGA and
the mainframe hand over the bytes they hold, as python-tuf's ``TrustedMetadataSet`` does.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ashat.bundle.errors import SignatureError
from ashat.bundle.keys import PublicKey
from ashat.bundle.manifest import Manifest
from ashat.bundle.sign import check_signatures, signature_verifies
from ashat.ids import same_person
from ashat.trust.root import Root, TrustRefused
from ashat.trust.statements import (
    APPROVAL_NAMESPACE,
    APPROVAL_TYPE,
    VERIFICATION_NAMESPACE,
    VERIFICATION_TYPE,
    digest,
    message,
)

ACCEPTED = ("passed", "skipped")
MAX_APPROVALS = 64


@dataclass(frozen=True)
class ChainReport:
    """Who vouched for a release that passed :func:`check_chain`."""

    releasers: tuple[str, ...]
    verifier: str
    verification_digest: str
    approvers: tuple[str, ...]
    root_version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "releasers": list(self.releasers),
            "verifier": self.verifier,
            "verification_digest": self.verification_digest,
            "approvers": list(self.approvers),
            "root_version": self.root_version,
        }


def ed25519_keys(root: Root, role: str) -> dict[str, PublicKey]:
    """The Ed25519 keys of ``role`` as the manifest and envelope checks take them (release
    manifests and OMEGA's directives are signed with ashat keys only)."""
    return {
        kid: PublicKey.from_raw(base64.b64decode(key.public))
        for kid, key in root.keys_of(role).items()
        if key.type == "ed25519"
    }


def evidence_of(m: Manifest, omega_keys: Mapping[str, PublicKey]) -> Any:
    """The evidence inside the payload of ``m``'s approval signature that one of OMEGA's
    keys made, or None: the payload of a signature that verifies, not of the first one
    naming such a key (another placed before it would hide the evidence that holds)."""
    for s in m.signatures:
        if (
            s.role == "approval"
            and s.keyid in omega_keys
            and isinstance(s.payload, dict)
            and signature_verifies(m, s, omega_keys[s.keyid])
        ):
            return s.payload.get("evidence")
    return None


def people_who_released(root: Root, m: Manifest) -> tuple[str, ...]:
    """Who released ``m``, for the no-self-approval rule: root's releasers whose signature
    verifies, and the person a releasing server names (``source.pushed_by``: ``ashat serve``
    signs with its own key what a user asked it to push)."""
    names = releasers_of(root, m)
    pushed_by = m.source.get("pushed_by")
    return (*names, pushed_by) if isinstance(pushed_by, str) and pushed_by else names


def releasers_of(root: Root, m: Manifest) -> tuple[str, ...]:
    """The names of root's releasers whose ``release`` signature of ``m`` verifies."""
    names = set()
    for kid, public in ed25519_keys(root, "releasers").items():
        try:
            check_signatures(m, {kid: public})
        except SignatureError:
            continue
        names.add(root.keys[kid].name)
    if not names:
        raise TrustRefused(
            "release_signature",
            f"{m.update_id} has no release signature by a releaser key of root "
            f"version {root.version} ({', '.join(root.names_of('releasers')) or 'none'})",
        )
    return tuple(sorted(names))


def _envelope(doc: Any, what: str) -> tuple[dict[str, Any], list[Any]]:
    """The statement's parts, if it is one: plain JSON a canonical form exists for (no NaN,
    no lone surrogate: those would raise where the signature is checked)."""
    if (
        not isinstance(doc, Mapping)
        or not isinstance(doc.get("signed"), Mapping)
        or not isinstance(doc.get("signatures"), list)
    ):
        raise TrustRefused("malformed", f"the {what} is not a signed statement")
    try:
        message(doc)
    except (ValueError, TypeError, UnicodeError, RecursionError) as e:
        raise TrustRefused("malformed", f"the {what} is not plain JSON") from e
    return dict(doc["signed"]), list(doc["signatures"])


def _same_release(s: Mapping[str, Any], m: Manifest, what: str) -> None:
    if (s.get("update_id"), s.get("sequence"), s.get("manifest_digest")) != (
        m.update_id,
        m.sequence,
        m.digest(),
    ):
        raise TrustRefused(
            "other_release",
            f"the {what} is for {str(s.get('update_id'))[:64]} (sequence "
            f"{s.get('sequence')!r}, manifest {str(s.get('manifest_digest'))[:16]}), not "
            f"{m.update_id} (sequence {m.sequence}, manifest {m.digest()[:16]})",
        )


def verified_statement(root: Root, statement: Any, update_id: str) -> tuple[dict[str, Any], str]:
    """The ``signed`` part of a verification statement and its verifiers' names, if a
    threshold of root's verifier keys signed it and it says every check it and root require
    passed. Which release it is for is the caller's to compare. Raises TrustRefused."""
    s, sigs = _envelope(statement, "verification statement")
    if s.get("type") != VERIFICATION_TYPE:
        raise TrustRefused("malformed", "the verification statement is of another type")
    good = root.signers(VERIFICATION_NAMESPACE, message(statement), "verifiers", sigs)
    if len(good) < root.threshold("verifiers"):
        raise TrustRefused(
            "verification_signature",
            f"the verification statement of {update_id} carries {len(good)} valid "
            f"signature(s) by verifier keys of root version {root.version}; "
            f"{root.threshold('verifiers')} needed",
        )
    checks, required = s.get("checks"), s.get("required")
    if (
        not isinstance(checks, list)
        or not isinstance(required, list)
        or not all(isinstance(n, str) for n in required)
        or not all(isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in checks)
    ):
        raise TrustRefused("malformed", "the verification statement lacks checks or required")
    names = [c["name"] for c in checks]
    if len(set(names)) != len(names):
        raise TrustRefused("malformed", "the verification statement names a check twice")
    status = {c["name"]: c.get("status") for c in checks}
    needed = sorted(set(required) | set(root.required_checks))
    bad = [f"{n} {status.get(n) or 'not run'}" for n in needed if status.get(n) not in ACCEPTED]
    if bad:
        raise TrustRefused(
            "verification_failed",
            f"{update_id} was not fully verified: {', '.join(bad)}",
        )
    return s, ", ".join(sorted({root.keys[k].name for k in good}))


def check_verification(root: Root, m: Manifest, statement: Any) -> tuple[str, str]:
    """The verifier's name and the statement's digest if it holds for ``m``; else
    TrustRefused."""
    s, verifier = verified_statement(root, statement, m.update_id)
    _same_release(s, m, "verification statement")
    modules = m.app.get("modules") if isinstance(m.app, Mapping) else None
    skipped = any(c.get("name") == "modules" and c.get("status") == "skipped" for c in s["checks"])
    if skipped and modules:  # PUBLIC loads what [app] names: it had something to load
        raise TrustRefused(
            "verification_failed",
            f"{m.update_id}'s signed [app] names modules to load, but its verification "
            "statement says the Module Load Test was skipped",
        )
    return verifier, digest(statement)


def check_approval(
    root: Root, m: Manifest, verification_digest: str, doc: Any, releasers: tuple[str, ...]
) -> str:
    """The approver's name; see :func:`approval_by`."""
    return approval_by(root, m, verification_digest, doc, releasers)[0]


def approval_by(
    root: Root, m: Manifest, verification_digest: str, doc: Any, releasers: tuple[str, ...]
) -> tuple[str, str]:
    """The approver's name and the type of key that signed, if ``doc`` is a valid approval
    of ``m`` as verified by that statement, signed by an approvers key of root bearing that
    name (a retired key only for a manifest root lists for it), and not a self-approval
    (unless root allows).
    Raises TrustRefused (reason ``approval``, or ``self_approval``)."""
    s, sigs = _envelope(doc, "approval")
    who = str(s.get("approver"))[:64]
    if s.get("type") != APPROVAL_TYPE:
        raise TrustRefused("approval", f"{who}: not an approval statement")
    try:
        _same_release(s, m, f"approval by {who}")
    except TrustRefused as e:
        raise TrustRefused("approval", e.message) from e
    if s.get("verification_digest") != verification_digest:
        raise TrustRefused(
            "approval", f"{who}: approves another verification statement of {m.update_id}"
        )
    keys = root.keys_of("approvers")
    # A server's key is never a person's, even where root lists it among the approvers too.
    servers = {*root.keys_of("omega"), *root.keys_of("verifiers")}
    ok, kind = False, ""
    for sig in sigs:
        kid = sig.get("keyid") if isinstance(sig, Mapping) else None
        if not isinstance(kid, str) or kid not in root.keys or kid in servers:
            continue
        if kid not in keys and m.digest() not in root.retired.get(kid, ()):
            continue  # a revoked key, or a retired one and a release it did not approve
        if root.keys[kid].name != s.get("approver"):
            continue  # signed by someone else's key
        if root.keys[kid].verify(APPROVAL_NAMESPACE, message(doc), sig.get("sig")):
            ok, kind = True, root.keys[kid].type
            break
    if not ok:
        raise TrustRefused(
            "approval",
            f"{who}: no valid signature by an approver key of that name in root version "
            f"{root.version}",
        )
    if same_person(who) in {same_person(r) for r in releasers} and not root.allow_self_approval:
        raise TrustRefused(
            "self_approval", f"{who} released {m.update_id} and may not approve it too"
        )
    return who, kind


def count_approvals(
    root: Root,
    m: Manifest,
    verification_digest: str,
    approvals: Any,
    releasers: tuple[str, ...],
) -> tuple[str, ...]:
    """The distinct names whose approvals hold; TrustRefused if fewer than k."""
    names, refused = approvals_holding(root, m, verification_digest, approvals, releasers)
    k = root.threshold("approvers")
    if len(names) < k:
        why = f" (refused: {'; '.join(refused)})" if refused else ""
        raise TrustRefused(
            "approvals",
            f"{m.update_id} has {len(names)} valid approval(s) of the {k} root version "
            f"{root.version} requires{why}"[:1000],
        )
    return names


def approvals_holding(
    root: Root,
    m: Manifest,
    verification_digest: str,
    approvals: Any,
    releasers: tuple[str, ...],
) -> tuple[tuple[str, ...], list[str]]:
    """The distinct names whose approvals hold, whatever k, and why each other does not.
    Raises TrustRefused only for a malformed list."""
    if not isinstance(approvals, list) or len(approvals) > MAX_APPROVALS:
        raise TrustRefused("malformed", f"approvals must be a list of at most {MAX_APPROVALS}")
    names: dict[str, str] = {}  # one person (same_person) -> the name as first written
    by_passkey: dict[str, str] = {}
    refused: list[str] = []
    for doc in approvals:
        try:
            who, kind = approval_by(root, m, verification_digest, doc, releasers)
        except TrustRefused as e:
            refused.append(e.message)
            continue
        person = same_person(who)
        if kind != "webauthn":
            names.setdefault(person, who)
            by_passkey.pop(person, None)
        elif person not in names:
            by_passkey.setdefault(person, who)
    cap = root.passkey_cap()
    if len(by_passkey) > cap:
        refused.append(
            f"{len(by_passkey)} passkey approval(s), of which root counts {cap} (a browser "
            "signs what the dashboard's server gives it)"
        )
    for person in sorted(by_passkey)[:cap]:
        names[person] = by_passkey[person]
    return tuple(sorted(names.values())), refused


def approvers_holding(root: Root, m: Manifest, evidence: Any) -> tuple[tuple[str, ...], list[str]]:
    """Of ``evidence``, whose approvals hold now (and why the others do not), whatever k:
    what the control side counts before it calls a deployment approved, so that it never
    calls approved what the chain will refuse. Raises :class:`TrustRefused` if the
    verification statement itself does not hold."""
    if not isinstance(evidence, Mapping):
        raise TrustRefused("no_evidence", f"{m.update_id} carries no evidence of verification")
    people = people_who_released(root, m)
    _, vdigest = check_verification(root, m, evidence.get("verification"))
    return approvals_holding(root, m, vdigest, evidence.get("approvals"), people)


def check_chain(root: Root, m: Manifest, evidence: Any) -> ChainReport:
    """See the module docstring. Raises :class:`TrustRefused`."""
    if not isinstance(evidence, Mapping):
        raise TrustRefused(
            "no_evidence",
            f"{m.update_id} carries no evidence of verification and approval",
        )
    releasers = releasers_of(root, m)
    verifier, vdigest = check_verification(root, m, evidence.get("verification"))
    people = people_who_released(root, m)
    approvers = count_approvals(root, m, vdigest, evidence.get("approvals"), people)
    return ChainReport(releasers, verifier, vdigest, approvers, root.version)
