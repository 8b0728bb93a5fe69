"""What a mainframe checks before it installs what OMEGA sent (docs/fleet-protocol.md,
"What a mainframe checks before installing").

A poll answer carries a *directive* — an envelope (:mod:`.envelope`) of kind ``directive``
signed with OMEGA's key — and the doubly signed manifest it names. :func:`check_install`
decides, from those bytes, the trusted keys, what the mainframe runs and the time, whether
to install; it returns an :class:`Install` or raises :class:`DirectiveRefused` whose
``reason`` is one word (for the report to OMEGA and the log)::

    Refused                         (ashat.errors)
    └── DirectiveRefused            reason:
                                    malformed           the directive or its fields
                                    forged              not signed by a --trust-omega key
                                    wrong_mainframe     addressed to another mainframe
                                    expired             expires_at has passed (a replay)
                                    bad_manifest        the manifest does not parse
                                    digest_mismatch     not the manifest the directive names
                                    mismatch            its update id or sequence differ
                                    release_signature   no valid release signature by --trust
                                    approval_signature  no valid approval by --trust-omega
                                    conflict            same id as the running one, other content
                                    downgrade           sequence not higher, and no rollback

An answer without a directive ("nothing for you now") carries a ``no_directive`` envelope
that OMEGA signed for that very poll: :func:`check_no_directive` checks that it is OMEGA's,
for this mainframe, and answers the poll's fresh ``nonce`` and what the poll said it runs,
so neither a network attacker nor a replayed answer can hold a mainframe on what it runs
without its knowing (the TUF "indefinite freeze"): the time of the last answer that passed
is in its health and metrics.
:class:`AnswerRefused`'s reasons: ``unsigned``, ``malformed``, ``forged``,
``wrong_mainframe``, ``replayed`` (another poll's nonce), ``altered`` (the poll OMEGA
answered named another release than this mainframe sent).

Pure: no network, no disk, no clock of its own (``now`` is given), as python-tuf's
``TrustedMetadataSet`` only checks bytes it is handed. Fetching and installing are
:mod:`.mainframe`'s.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ashat.bundle.errors import BundleError, SignatureError
from ashat.bundle.keys import PublicKey
from ashat.bundle.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from ashat.bundle.sign import RELEASE_ROLE, check_signatures
from ashat.errors import Refused
from ashat.fleet.envelope import EnvelopeError, Forged, peek_payload, unseal
from ashat.ids import UPDATE_ID_RE
from ashat.trust.chain import check_chain, ed25519_keys, evidence_of
from ashat.trust.root import Root, TrustRefused, parse_time

KIND = "directive"
NO_DIRECTIVE_KIND = "no_directive"
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")  # a poll's nonce, as OMEGA accepts it
APPROVAL_ROLE = "approval"
DIRECTIVE_TTL_S = 300  # seconds from issued_at to expires_at, as OMEGA signs them
CLOCK_SKEW_S = 300  # how far ahead of this clock OMEGA's may be: a directive lives no longer
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ROLLOUT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

TrustedKeys = Mapping[str, PublicKey]  # key id -> public key


class Action(enum.StrEnum):
    INSTALL = "install"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Directive:
    """A directive's payload, its signature checked (or, from :func:`peek_directive`, not)."""

    mainframe_id: str
    rollout_id: str
    action: Action
    update_id: str
    sequence: int
    manifest_digest: str
    issued_at: str
    expires_at: dt.datetime
    keyid: str
    # A rollback's: the release it moves the mainframe from, and the poll it answers (a
    # rollback is no bearer instruction for its lifetime: a replay must not move anyone).
    from_release: str | None = None
    nonce: str | None = None


@dataclass(frozen=True)
class Running:
    """What the mainframe runs now: the ``current`` release."""

    update_id: str
    sequence: int
    digest: str  # the manifest's digest (signatures aside)


@dataclass(frozen=True)
class Install:
    """A directive that passed every check, with the manifest to stage."""

    directive: Directive
    manifest: Manifest
    manifest_bytes: bytes
    already: bool  # the mainframe runs exactly this release already: report it installed


class DirectiveRefused(Refused):
    """The mainframe will not act on a directive; ``directive`` is None if unreadable."""

    kind = "directive_refused"

    def __init__(self, reason: str, message: str, directive: Directive | None = None) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason
        self.directive = directive


_time = parse_time  # ISO 8601 with a time zone, or ValueError naming the field


def _directive(p: Mapping[str, Any]) -> Directive:
    """The payload as a :class:`Directive`. Raises ``ValueError`` naming the bad field."""
    for name in ("mainframe_id", "rollout_id", "update_id", "manifest_digest", "keyid"):
        if not isinstance(p.get(name), str):
            raise ValueError(f"{name} must be a string")
    if not _ROLLOUT_ID_RE.fullmatch(p["rollout_id"]):
        raise ValueError(f"invalid rollout_id {p['rollout_id'][:80]!r}")
    if not UPDATE_ID_RE.fullmatch(p["update_id"]):
        raise ValueError(f"invalid update_id {p['update_id'][:80]!r}")
    if not _SHA256_RE.fullmatch(p["manifest_digest"]):
        raise ValueError("manifest_digest must be 64 lowercase hex digits")
    seq = p.get("sequence")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("sequence must be a positive integer")
    _time(p.get("issued_at"), "issued_at")
    for name in ("from", "nonce"):
        if p.get(name) is not None and not isinstance(p.get(name), str):
            raise ValueError(f"{name} must be a string or null")
    return Directive(
        mainframe_id=p["mainframe_id"],
        rollout_id=p["rollout_id"],
        action=Action(str(p.get("action"))),  # ValueError for an unknown action
        update_id=p["update_id"],
        sequence=seq,
        manifest_digest=p["manifest_digest"],
        issued_at=p["issued_at"],
        expires_at=_time(p.get("expires_at"), "expires_at"),
        keyid=p["keyid"],
        from_release=p.get("from"),
        nonce=p.get("nonce"),
    )


def read_directive(token: str, trusted_omega: TrustedKeys) -> Directive:
    """The directive in ``token`` if OMEGA (a key in ``trusted_omega``) signed it.

    Checks neither the addressee nor the time. Raises :class:`DirectiveRefused`
    (``forged``, ``malformed``).
    """
    try:
        payload = unseal(token, KIND, trusted_omega)
    except Forged as e:
        claimed = peek_directive(token)
        raise DirectiveRefused("forged", f"directive refused: {e.message}", claimed) from e
    except EnvelopeError as e:
        raise DirectiveRefused("malformed", f"directive refused: {e.message}") from e
    try:
        return _directive(payload)
    except ValueError as e:
        raise DirectiveRefused("malformed", f"directive refused: malformed payload ({e})") from e


def peek_directive(token: str) -> Directive | None:
    """What an unauthenticated directive claims (to name it in a report), or None."""
    try:
        return _directive(peek_payload(token, KIND))
    except (EnvelopeError, ValueError):
        return None


def check_install(
    token: str,
    manifest_bytes: bytes,
    *,
    mainframe_id: str,
    release_keys: TrustedKeys,
    omega_keys: TrustedKeys,
    running: Running | None,
    now: dt.datetime,
    max_manifest_bytes: int = MAX_MANIFEST_BYTES,
    rolled_back: Collection[str] = (),
    root: Root | None = None,
    nonce: str | None = None,
) -> Install:
    """Run the contract's checks 1-3, in order; the first that fails refuses.

    With a ``root`` of trust, OMEGA's keys and the release keys are root's (``omega``,
    ``releasers``), not ``omega_keys``/``release_keys``, and after check 2 the release
    must carry its whole chain (:func:`ashat.trust.chain.check_chain`: verified by a
    verifier, approved by k approvers); the reason of a refusal is then the chain's word
    (``verification_failed``, ``approvals``, ...).

    1. the directive is signed by a key of ``omega_keys``, names ``mainframe_id``, and
       ``now`` is before its ``expires_at``;
    2. the manifest's digest is the directive's ``manifest_digest`` (and its id and
       sequence agree), with a ``release`` signature by a key of ``release_keys`` and an
       ``approval`` signature by a key of ``omega_keys``;
    3. its sequence is higher than ``running``'s, unless the action is ``rollback`` — or it
       is the very release running (then :attr:`Install.already`); and an ``install`` of a
       release this mainframe was rolled back from (``rolled_back``) is refused, so that a
       replayed install directive, still within its lifetime, cannot undo the rollback;
    4. a ``rollback`` names this poll's ``nonce`` and the release ``running`` (``from``),
       so that one recorded and replayed moves nobody, and never goes to a release this
       mainframe was rolled back from.

    Raises :class:`DirectiveRefused`.
    """
    if root is not None:
        release_keys, omega_keys = ed25519_keys(root, "releasers"), ed25519_keys(root, "omega")
    d = read_directive(token, omega_keys)
    if d.mainframe_id != mainframe_id:
        raise DirectiveRefused(
            "wrong_mainframe",
            f"directive of rollout {d.rollout_id} is for mainframe {d.mainframe_id!r}, "
            f"not this one ({mainframe_id})",
            d,
        )
    if now >= d.expires_at:
        raise DirectiveRefused(
            "expired",
            f"directive of rollout {d.rollout_id} expired at {d.expires_at.isoformat()} "
            "(an old answer replayed?)",
            d,
        )
    if (d.expires_at - now).total_seconds() > DIRECTIVE_TTL_S + CLOCK_SKEW_S:
        # a directive that lives a day (dated ahead) could be replayed for a day
        raise DirectiveRefused(
            "malformed",
            f"directive of rollout {d.rollout_id} expires at {d.expires_at.isoformat()}, "
            f"over {DIRECTIVE_TTL_S + CLOCK_SKEW_S} s from now (OMEGA's clock ahead?)",
            d,
        )
    try:
        m = parse_manifest(manifest_bytes, max_bytes=max_manifest_bytes)
    except BundleError as e:
        raise DirectiveRefused("bad_manifest", f"manifest refused: {e.message}", d) from e
    if m.digest() != d.manifest_digest:
        raise DirectiveRefused(
            "digest_mismatch",
            f"manifest digest {m.digest()[:16]} is not the directive's {d.manifest_digest[:16]}",
            d,
        )
    if (m.update_id, m.sequence) != (d.update_id, d.sequence):
        raise DirectiveRefused(
            "mismatch",
            f"manifest is {m.update_id} (sequence {m.sequence}) but the directive names "
            f"{d.update_id} (sequence {d.sequence})",
            d,
        )
    for role, keys, reason in (
        (RELEASE_ROLE, release_keys, "release_signature"),
        (APPROVAL_ROLE, omega_keys, "approval_signature"),
    ):
        try:
            check_signatures(m, keys, (role,))
        except SignatureError as e:
            raise DirectiveRefused(reason, f"manifest {m.update_id} refused: {e.message}", d) from e
    if root is not None:
        try:
            check_chain(root, m, evidence_of(m, omega_keys))
        except TrustRefused as e:
            why = f"manifest {m.update_id} refused: {e.message}"
            raise DirectiveRefused(e.reason, why, d) from e
    if running is not None and running.update_id == m.update_id:
        if running.digest != m.digest():
            raise DirectiveRefused(
                "conflict",
                f"{m.update_id} runs here with another manifest (digest "
                f"{running.digest[:16]}, this one {m.digest()[:16]})",
                d,
            )
        return Install(d, m, manifest_bytes, already=True)
    if d.action is Action.ROLLBACK:
        _check_rollback(d, nonce, running, rolled_back)
    if d.action is Action.INSTALL and m.update_id in rolled_back:
        raise DirectiveRefused(
            "rolled_back",
            f"{m.update_id} was rolled back here; only a new release may replace "
            f"{running.update_id if running else 'what runs'}",
            d,
        )
    if running is not None and d.action is Action.INSTALL and m.sequence <= running.sequence:
        raise DirectiveRefused(
            "downgrade",
            f"{m.update_id} has sequence {m.sequence}, not higher than {running.sequence} of "
            f"the running {running.update_id}; only a rollback directive may go back",
            d,
        )
    return Install(d, m, manifest_bytes, already=False)


def _check_rollback(
    d: Directive, nonce: str | None, running: Running | None, rolled_back: Collection[str]
) -> None:
    """Check 4 of :func:`check_install`. Raises :class:`DirectiveRefused`."""
    if nonce is None or d.nonce != nonce:
        raise DirectiveRefused(
            "replayed",
            f"rollback directive of {d.rollout_id} does not answer this poll (its nonce): an "
            "old answer replayed, or an OMEGA older than this mainframe",
            d,
        )
    here = running.update_id if running is not None else None
    if d.from_release != here:
        raise DirectiveRefused(
            "stale",
            f"rollback directive of {d.rollout_id} moves from {d.from_release or 'nothing'}, "
            f"but {here or 'nothing'} runs here",
            d,
        )
    if d.update_id in rolled_back:
        raise DirectiveRefused(
            "rolled_back",
            f"{d.update_id} was rolled back here; a rollback never returns to it",
            d,
        )


class AnswerRefused(Refused):
    """An answer without a directive that does not prove OMEGA gave it to this poll."""

    kind = "answer_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


def check_no_directive(
    token: object,
    *,
    mainframe_id: str,
    nonce: str,
    current: str | None,
    sequence: int,
    omega_keys: TrustedKeys,
) -> dt.datetime:
    """When OMEGA said it has nothing for ``mainframe_id``, in answer to the poll that sent
    ``nonce``, ``current`` and ``sequence``: ``token`` must be a ``no_directive`` envelope
    signed by a key of ``omega_keys`` naming all four as OMEGA received them, so that a poll
    altered on its way (claiming the release a rollout sends, which OMEGA would then count
    as installed) is found out too. Raises :class:`AnswerRefused`."""
    if not isinstance(token, str):
        raise AnswerRefused("unsigned", "the answer 'no directive' is not signed by OMEGA")
    try:
        p = unseal(token, NO_DIRECTIVE_KIND, omega_keys)
    except Forged as e:
        raise AnswerRefused("forged", f"the answer 'no directive' is refused: {e.message}") from e
    except EnvelopeError as e:
        raise AnswerRefused(
            "malformed", f"the answer 'no directive' is refused: {e.message}"
        ) from e
    try:
        if not all(isinstance(p.get(k), str) for k in ("mainframe_id", "nonce")):
            raise ValueError("mainframe_id and nonce must be strings")
        if p.get("current") is not None and not isinstance(p.get("current"), str):
            raise ValueError("current must be an update id or null")
        if not isinstance(p.get("sequence"), int) or isinstance(p.get("sequence"), bool):
            raise ValueError("sequence must be an integer")
        issued_at = _time(p.get("issued_at"), "issued_at")
    except ValueError as e:
        raise AnswerRefused(
            "malformed", f"the answer 'no directive' is refused: malformed payload ({e})"
        ) from e
    if p["mainframe_id"] != mainframe_id:
        raise AnswerRefused(
            "wrong_mainframe",
            f"the answer 'no directive' is for mainframe {p['mainframe_id'][:80]!r}, "
            f"not this one ({mainframe_id})",
        )
    if p["nonce"] != nonce:
        raise AnswerRefused(
            "replayed", "the answer 'no directive' answers another poll (an old answer replayed?)"
        )
    if (p["current"], p["sequence"]) != (current, sequence):
        raise AnswerRefused(
            "altered",
            f"the answer 'no directive' was given to a poll saying this mainframe runs "
            f"{p['current'] or 'nothing'} (sequence {p['sequence']}), not "
            f"{current or 'nothing'} (sequence {sequence}): the poll was altered on its way",
        )
    return issued_at
