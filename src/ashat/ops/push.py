"""Push: build and sign a bundle of a local tree, then carry it to PUBLIC through
:func:`ashat.workflow.push.push`. It needs the tree on this machine, so only the CLI calls
it (``ashat serve`` has no push yet)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ashat.errors import InvalidInput
from ashat.ops.project import Project, client_for

if TYPE_CHECKING:
    from ashat.bundle import Built, Manifest
    from ashat.workflow.models import Server
    from ashat.workflow.push import Bundle, PushResult


def build_bundle(
    project: Project, update_id: str, description: str, source: str | None, git_ref: str | None
) -> tuple[Bundle, Built]:
    """Build and hash the tree first: a bad tree is refused before anything is recorded.

    The caller cleans up with ``built.cleanup()``.
    """
    from ashat.bundle import build_from_dir, build_from_git, load_private_key, sign_manifest
    from ashat.ids import validate_update_id
    from ashat.project import write_private
    from ashat.transport.client import BlobRef
    from ashat.workflow.ports import SystemClock, iso
    from ashat.workflow.push import Bundle

    validate_update_id(update_id)
    description = description.strip()
    if not description or len(description) > 1000:
        raise InvalidInput("the description must be 1-1000 characters")
    if source and git_ref:
        raise InvalidInput("give --source or --git, not both")
    config = project.config()
    key = load_private_key(config.signing_key_path())
    created_at = iso(SystemClock().now())
    meta: dict[str, Any] = {
        "update_id": update_id,
        "sequence": 1,  # replaced by the sequence the store allocates
        "description": description,
        "app": config.app.raw,
        "created_at": created_at,
    }
    if git_ref:
        built = build_from_git(project.root, git_ref, **meta)
    else:
        root = Path(source).resolve() if source else project.root
        if not root.is_dir():
            raise InvalidInput(f"--source {source}: not a directory")
        cache = project.state_dir / "hashcache.json"
        built = build_from_dir(root, cache_path=cache, **meta)
    manifest = built.manifest
    sizes = {f.sha256: f.size for f in manifest.files if f.kind == "file"}

    def sign(sequence: int) -> Any:
        draft = replace(manifest, sequence=sequence)
        kept = _kept_manifest(project.manifest_path(update_id))
        if kept is not None and replace(kept, signatures=(), created_at=draft.created_at) == draft:
            # A resumed push of the same tree: sign the very manifest of the first attempt
            # (Ed25519 is deterministic), which PUBLIC may have staged already.
            draft = replace(draft, created_at=kept.created_at)
        signed = sign_manifest(draft, key)
        # Keep exactly what is signed: approval promotes these bytes, not the tree as it is
        # by then.
        write_private(project.manifest_path(update_id), signed.to_bytes(), mode=0o644)
        return signed

    def blob(sha: str) -> BlobRef:
        return BlobRef(sha, sizes[sha], built.blobs[sha])

    return Bundle(manifest, sizes, sign, blob, dict(manifest.source)), built


def _kept_manifest(path: Path) -> Manifest | None:
    """The manifest an earlier attempt of this push signed and kept, if it is readable."""
    from ashat.bundle import parse_manifest
    from ashat.bundle.errors import BundleError

    try:
        return parse_manifest(path.read_bytes())
    except (OSError, BundleError):
        return None


def run_push(
    project: Project,
    update_id: str,
    description: str,
    *,
    source: str | None = None,
    git_ref: str | None = None,
    actor: str | None = None,
    on_start: Callable[[Server], None] | None = None,
    step: Callable[[str, str], None] | None = None,
) -> PushResult:
    """Push the project's tree (or ``source``, or the commit ``git_ref``) as ``update_id``.

    ``on_start(server)`` is called once the bundle is built, before anything is recorded;
    ``step(name, detail)`` after each step. Raises InvalidInput (a bad tree, id, key or
    configuration), AlreadyExists, LeaseHeld, or what the transfer raised (the deployment
    is then ``failed`` and PUBLIC stays on its previous release).
    """
    from ashat.workflow.push import push

    server = project.require_server("public")
    bundle, built = build_bundle(project, update_id, description, source, git_ref)
    try:
        wf = project.workflow(actor)
        if on_start is not None:
            on_start(server)
        with client_for(server) as agent:
            kwargs: dict[str, Any] = {"step": step} if step is not None else {}
            return push(wf, agent, update_id, description, bundle, target=server.name, **kwargs)
    finally:
        built.cleanup()
