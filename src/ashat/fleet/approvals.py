"""Releases OMEGA approved: its counter-signature, and the doubly signed manifests it serves.

``POST /v1/releases/{id}/approve`` (:meth:`Approvals.approve`) takes a release staged on
OMEGA with a valid release signature, adds OMEGA's ``approval`` signature whose payload is
the approval record, and keeps the result in the fleet database with the approval — apart
from ``manifests/<id>.json``, which a re-stage of the release-only bytes (a resumed ``deploy
approve``) may rewrite — so that every OMEGA replica sharing the database serves it. Both
signatures stay; mainframes get exactly these bytes. The blobs the release names (all a
license may download) go to the database too. Approvals recorded before the database kept
the manifest have it in ``DIR/approved/<id>.json``, still read. A few manifests stay parsed
in memory: every poll answer of a rollout needs one. (An id is approved once per content;
were a pruned release id staged again with other content and approved, a replica that
keeps the old text parsed would serve it until evicted: its mainframes then refuse the
directive, whose digest names the new manifest.)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ashat.agent.core import Agent
from ashat.agent.errors import RequestInvalid
from ashat.bundle.keys import SigningKey
from ashat.bundle.manifest import Manifest, parse_manifest
from ashat.bundle.sign import sign_manifest, verify_manifest
from ashat.clock import Clock, iso_seconds
from ashat.fleet.omega_store import Approval, FleetStore
from ashat.ids import UPDATE_ID_RE

if TYPE_CHECKING:
    from ashat.trust.held import HeldRoot

log = logging.getLogger("ashat.omega")

APPROVAL_ROLE = "approval"
MANIFEST_CACHE = 4  # approved manifests kept parsed in memory


class Approvals:
    def __init__(
        self,
        agent: Agent,
        key: SigningKey,
        store: FleetStore,
        clock: Clock,
        root: HeldRoot | None = None,
    ) -> None:
        self.agent = agent
        self.root = root
        self.key = key
        self.store = store
        self.clock = clock
        self.directory: Path = agent.config.data / "approved"  # before the database kept them
        self._cache: OrderedDict[str, tuple[Manifest, str]] = OrderedDict()

    def path(self, update_id: str) -> Path:
        return self.directory / f"{update_id}.json"

    def approve(self, update_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """Counter-sign staged ``update_id`` with ``record`` (checked by
        :func:`~.omega_requests.approval_record`). Idempotent: an approved release keeps its
        first approval. Call under OMEGA's lock.

        Raises :class:`~ashat.agent.errors.NoSuchRelease`,
        :class:`~ashat.agent.errors.RequestInvalid` (the record's sequence is not the
        release's), or a :class:`~ashat.bundle.errors.BundleError` if the release signature
        does not verify.
        """
        staged = self.agent.releases.manifest(update_id)  # NoSuchRelease
        approved = self.get(update_id)
        if approved is not None and approved[0].digest() == staged.digest():
            return self._answer(approved[0], already=True)
        config = self.agent.config
        m = verify_manifest(
            self.agent.releases.manifest_bytes(update_id),
            config.trusted,
            max_bytes=config.max_manifest_bytes,
        )
        sequence = record.get("sequence")
        if sequence is not None and sequence != m.sequence:
            raise RequestInvalid(
                f"the approval record says sequence {sequence!r}; "
                f"{update_id} has sequence {m.sequence}"
            )
        if self.root is not None:
            self._check_chain(m, record)
        signed = sign_manifest(m, self.key, APPROVAL_ROLE, record)
        text = signed.to_bytes().decode("utf-8")
        with self.store.transaction():
            self.store.add_approved_blobs(sorted(m.blob_digests()))
            self.store.add_approval(
                Approval(
                    update_id=update_id,
                    sequence=m.sequence,
                    manifest_digest=m.digest(),
                    approval_keyid=self.key.keyid,
                    record=record,
                    signed_at=iso_seconds(self.clock.now()),
                ),
                text,
            )
        self._keep(update_id, signed, text)
        log.info("approved %s (sequence %d): counter-signed", update_id, m.sequence)
        return self._answer(signed, already=False)

    def _check_chain(self, m: Manifest, record: dict[str, Any]) -> None:
        """OMEGA decides which and when, never what: with a root of trust it counter-signs
        only a release that carries its whole chain (:mod:`ashat.trust.chain`). Raises
        TrustRefused (answered 409), with the refusal logged."""

        from ashat.trust.chain import check_chain
        from ashat.trust.root import TrustRefused

        assert self.root is not None
        roots = record.get("roots")
        if isinstance(roots, list):
            self.root.offer(roots)
        try:
            root = self.root.current(self.clock.now())
            report = check_chain(root, m, record.get("evidence"))
        except TrustRefused as e:
            log.error("refused to approve %s (%s): %s", m.update_id, e.reason, e.message)
            raise
        log.info(
            "%s carries its chain: released by %s, verified by %s, approved by %s (root v%d)",
            m.update_id,
            ", ".join(report.releasers),
            report.verifier,
            ", ".join(report.approvers),
            report.root_version,
        )

    def _answer(self, m: Manifest, already: bool) -> dict[str, Any]:
        return {
            "update_id": m.update_id,
            "manifest_digest": m.digest(),
            "approval_keyid": self.key.keyid,
            "already": already,
        }

    def get(self, update_id: str) -> tuple[Manifest, str] | None:
        """The doubly signed manifest of an approved release and its text; None if none."""
        hit = self._cache.get(update_id)
        if hit is not None:
            self._cache.move_to_end(update_id)
            return hit
        if not UPDATE_ID_RE.fullmatch(update_id):
            return None
        text = self.store.approved_manifest(update_id)
        if text is None:
            try:
                text = self.path(update_id).read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
        return self._keep(update_id, parse_manifest(text.encode("utf-8")), text)

    def has(self, update_id: str | None) -> bool:
        if update_id is None or UPDATE_ID_RE.fullmatch(update_id) is None:
            return False
        return (
            update_id in self._cache
            or self.store.approved_manifest(update_id) is not None
            or self.path(update_id).is_file()
        )

    def _keep(self, update_id: str, m: Manifest, text: str) -> tuple[Manifest, str]:
        self._cache[update_id] = (m, text)
        self._cache.move_to_end(update_id)
        while len(self._cache) > MANIFEST_CACHE:
            self._cache.popitem(last=False)
        return m, text
