"""Push: build a bundle of a local tree and carry it to PUBLIC through
:func:`ashat.workflow.push.push`.

Two ways in:

- the CLI builds, signs and sends it itself (:func:`run_push`);
- through ``ashat serve`` (``deploy --via URL push``): the CLI builds the unsigned bundle and
  uploads the blobs PUBLIC lacks into the server's spool (``/v1/blobs/missing`` and
  ``/v1/blobs/pack``, answered as an agent answers them), then asks the server to push
  (:func:`push_uploaded`). The server allocates the sequence, signs with its project's
  key (the deployer's token is the authority to push; the key never leaves the control
  server) and relays the blobs from its spool to PUBLIC, through the same workflow.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ashat.bundle.keys import PRIVATE_KEY_PEM
from ashat.bundle.manifest import MAX_MANIFEST_BYTES
from ashat.errors import InvalidInput
from ashat.ops.project import Project, client_for
from ashat.project import read_regular

if TYPE_CHECKING:
    from ashat.agent.blobs import BlobStore
    from ashat.bundle import Built
    from ashat.bundle.manifest import Manifest
    from ashat.config import Config
    from ashat.workflow.models import Server
    from ashat.workflow.push import Bundle, PushResult

SPOOL_MAX_AGE_S = 24 * 3600.0  # an uploaded blob no push used is dropped after this long

DEFAULT_SPOOL_USER_BYTES = 4 * 1024**3  # bytes of uploads one user may have waiting
DEFAULT_SPOOL_TOTAL_BYTES = 16 * 1024**3  # and all users together


def build_unsigned(
    project: Project, update_id: str, description: str, source: str | None, git_ref: str | None
) -> Built:
    """Build and hash the tree (or the commit ``git_ref``): a bad tree is refused before
    anything is recorded. The caller cleans up with ``built.cleanup()``."""
    from ashat.bundle import build_from_dir, build_from_git
    from ashat.ids import validate_update_id
    from ashat.workflow.ports import SystemClock, iso
    from ashat.workflow.push import check_description

    validate_update_id(update_id)
    description = check_description(description)
    if source and git_ref:
        raise InvalidInput("give --source or --git, not both")
    config = project.config()
    meta: dict[str, Any] = {
        "update_id": update_id,
        "sequence": 1,  # replaced by the sequence the store allocates
        "description": description,
        "app": config.app.raw,
        "created_at": iso(SystemClock().now()),
    }
    if git_ref:
        built = build_from_git(project.root, git_ref, **meta)
    else:
        root = Path(source).resolve() if source else project.root
        if not root.is_dir():
            raise InvalidInput(f"--source {source}: not a directory")
        built = build_from_dir(root, cache_path=project.state_dir / "hashcache.json", **meta)
    try:
        refuse_secrets(project, built, config)
    except BaseException:
        built.cleanup()
        raise
    if config.app.requirements is None:
        return built
    from ashat.bundle.wheels import Target, with_dependencies

    target = Target(config.app.platform, config.app.python_version)
    try:
        built, _ = with_dependencies(
            built, config.app.requirements, project.state_dir / "wheels", target
        )
    except BaseException:
        built.cleanup()
        raise
    return built


KEY_FILE_GLOBS = ("*.key", "*.pem", "*.p8", "id_*")  # names a private key goes by
_KEY_FILE_NAME = re.compile("|".join(fnmatch.translate(g) for g in KEY_FILE_GLOBS))  # one pass
KEY_HEAD_BYTES = 200  # a PEM or OpenSSH private key says so in its first line
_PRIVATE_KEY_HEAD = re.compile(PRIVATE_KEY_PEM.encode("ascii"))


def refuse_secrets(project: Project, built: Built, config: Config) -> None:
    """Refuse (InvalidInput, exit 2, before anything is recorded or sent) a tree that would
    ship a secret to PUBLIC, where the app can read it, and on to every mainframe: a copy
    of one of the project's own (its signing key, a server's token), or a private key (a
    file named like one whose first line says so), unless ``[verify.security] allow``
    accepts that path. Only digests the build computed, and the first bytes of files named
    like keys, are looked at."""
    from ashat.bundle.paths import under_glob

    own = _own_secrets(project, config)
    verify = config.table("verify")
    security = verify.get("security")
    listed = security.get("allow") if isinstance(security, dict) else None
    allow = [a for a in listed if isinstance(a, str)] if isinstance(listed, list) else []
    found: list[str] = []
    for e in built.manifest.files:
        if e.kind != "file":
            continue
        if e.sha256 in own:
            found.append(f"{e.path} ({own[e.sha256]})")
            continue
        name = e.path.rsplit("/", 1)[-1]
        if (
            _KEY_FILE_NAME.match(name)
            and not name.endswith(".pub")
            and _private_key_head(built.blobs[e.sha256])
            and not under_glob(e.path, allow)
        ):
            found.append(f"{e.path} (a private key)")
    if found:
        shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
        raise InvalidInput(
            f"the tree holds secrets that would go to PUBLIC, its app and every mainframe: "
            f"{shown}. Keep keys and tokens out of the tree (ashat keys generate NAME --dir "
            "DIR outside it), or list them in .ashatignore; a private key the release must "
            "carry is accepted by [verify.security] allow",
            secrets=[f.split(" (", 1)[0] for f in found],
        )


def _own_secrets(project: Project, config: Config) -> dict[str, str]:
    """The digests a copy of the project's secrets would have in a tree: its signing key's
    file, and each server token as stored and as a token file is written (a newline)."""
    out: dict[str, str] = {}
    files: list[tuple[Path, str]] = [
        (p, f"the {p.stem.upper()} token")
        for p in sorted((project.state_dir / "secrets").glob("*.token"))
    ]
    with contextlib.suppress(InvalidInput):
        files.append((config.signing_key_path(), "the project's signing key"))
    for path, what in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        text = data.strip()
        for variant in {data, text, text + b"\n", text + b"\r\n"}:
            if text:
                out[hashlib.sha256(variant).hexdigest()] = what
    return out


def _private_key_head(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(KEY_HEAD_BYTES)
    except OSError:
        return False
    return _PRIVATE_KEY_HEAD.search(head) is not None


def _signing_key(project: Project) -> Any:
    from ashat.bundle import load_private_key

    return load_private_key(project.config().signing_key_path())


def _bundle(
    project: Project,
    update_id: str,
    manifest: Manifest,
    blob_path: Callable[[str], Path],
    key: Any,
) -> Bundle:
    """``manifest`` as a :class:`Bundle` signed with ``key`` once its sequence is known; the
    signed bytes are kept, as approval promotes exactly those."""
    from ashat.bundle import sign_manifest
    from ashat.project import write_private
    from ashat.transport.client import BlobRef
    from ashat.workflow.push import Bundle

    sizes = {f.sha256: f.size for f in manifest.files if f.kind == "file"}

    def sign(sequence: int) -> Any:
        draft = replace(manifest, sequence=sequence)
        kept = _kept_manifest(project.manifest_path(update_id))
        if kept is not None and replace(kept, signatures=(), created_at=draft.created_at) == draft:
            # A resumed push of the same tree: sign the very manifest of the first attempt
            # (Ed25519 is deterministic), which PUBLIC may have staged already.
            draft = replace(draft, created_at=kept.created_at)
        signed = sign_manifest(draft, key)
        write_private(project.manifest_path(update_id), signed.to_bytes(), mode=0o644)
        return signed

    def blob(sha: str) -> BlobRef:
        return BlobRef(sha, sizes[sha], blob_path(sha))

    def held(pushed: str | None) -> frozenset[str]:
        return _kept_blobs(project, pushed)

    return Bundle(manifest, sizes, sign, blob, dict(manifest.source), held)


def _kept_blobs(project: Project, update_id: str | None) -> frozenset[str]:
    """The blob digests of the manifest this project kept for ``update_id`` (empty if none):
    only a hint of what PUBLIC holds, which it checks itself at staging, so the file is
    read, not validated (a 2,000-file manifest: ~3 ms against ~20 ms parsed, issue 20)."""
    from ashat.ids import UPDATE_ID_RE

    if not isinstance(update_id, str) or not UPDATE_ID_RE.fullmatch(update_id):
        return frozenset()  # none, or not an id (PUBLIC's answer names it): no file to read
    try:
        files = json.loads(_kept_bytes(project.manifest_path(update_id))).get("files")
        return frozenset(f["sha256"] for f in files if f.get("kind") == "file")
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return frozenset()


def task_references(project: Project, refs: Sequence[str]) -> list[dict[str, Any]]:
    """The ``--task`` references, parsed; none where ``[tasks] required = true`` is refused.
    Raises InvalidInput (exit 2) before anything is built or recorded."""
    from ashat.workflow.tasks import parse_tasks

    table = project.config().table("tasks")
    required = table.get("required", False)
    if not isinstance(required, bool):
        raise InvalidInput("[tasks].required must be true or false")
    parsed = parse_tasks(refs)
    if required and not parsed:
        raise InvalidInput(
            "this project links every deployment to a task ([tasks] required = true in "
            "ashat.toml): deploy push ID 'description' --task REF"
        )
    return parsed


def build_bundle(
    project: Project, update_id: str, description: str, source: str | None, git_ref: str | None
) -> tuple[Bundle, Built]:
    """The tree as a bundle signed with the project's key (loaded before anything is built).

    The caller cleans up with ``built.cleanup()``.
    """
    key = _signing_key(project)  # no key: say so before hashing a large tree
    built = build_unsigned(project, update_id, description, source, git_ref)
    return _bundle(project, update_id, built.manifest, built.blobs.__getitem__, key), built


def read_ahead(start: Path) -> None:
    """Read what the next push from ``start`` reads first: its project's hash cache and the
    manifest it kept last (the newest). Both are remembered where a build looks (the cache
    file while unchanged, the manifest's entries with their JSON), so a process forked
    after this builds a tree that changed little in half the time (the warm helper calls it
    after each push, ~30 ms of a 1 % re-push, issue 20). Raises ``OSError`` or
    ``BundleError`` for what cannot be read (nothing is remembered of it)."""
    from ashat.bundle.hashcache import HashCache
    from ashat.bundle.manifest import parse_manifest

    project = Project.find(start)
    HashCache(project.state_dir / "hashcache.json", str(project.root))
    kept = []
    for path in (project.state_dir / "manifests").glob("*.json"):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):  # no FIFO to wait on, no link to follow
            kept.append((st.st_mtime_ns, path))
    if kept:
        parse_manifest(_kept_bytes(max(kept)[1]))


def _kept_manifest(path: Path) -> Manifest | None:
    """The manifest an earlier attempt of this push signed and kept, if it is readable."""
    from ashat.bundle import parse_manifest
    from ashat.bundle.errors import BundleError

    try:
        return parse_manifest(_kept_bytes(path))
    except (OSError, BundleError):
        return None


def _kept_bytes(path: Path) -> bytes:
    """The bytes of a manifest this project kept (one over the limit if it is larger: the
    parser refuses it), from a regular file only (``read_regular``). Raises ``OSError``."""
    return read_regular(path, MAX_MANIFEST_BYTES)[0]


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
    tasks: Sequence[str] = (),
    on_upload: Callable[[int, int], None] | None = None,
) -> PushResult:
    """Push the project's tree (or ``source``, or the commit ``git_ref``) as ``update_id``,
    with its ``tasks`` references (:func:`task_references`).

    ``on_start(server)`` is called once the bundle is built, before anything is recorded;
    ``step(name, detail)`` after each step; ``on_upload(sent, total)`` as the blobs go up
    (from the upload's threads). Raises InvalidInput (a bad tree, id, key or
    configuration), AlreadyExists, LeaseHeld, or what the transfer raised (the deployment
    is then ``failed`` and PUBLIC stays on its previous release).
    """
    from ashat.workflow.push import push, refuse_taken_id

    server = project.require_server("public")
    refuse_taken_id(project.workflow(actor), update_id)  # one line, before anything else
    parsed = task_references(project, tasks)
    t0 = time.monotonic()
    bundle, built = build_bundle(project, update_id, description, source, git_ref)
    build_s = time.monotonic() - t0
    if step is not None:
        _report_wheels(built.manifest, step)
    try:
        wf = project.workflow(actor)
        if on_start is not None:
            on_start(server)
        with client_for(server) as agent:
            agent.upload_progress = on_upload
            kwargs: dict[str, Any] = {"step": step} if step is not None else {}
            result = push(
                wf, agent, update_id, description, bundle, target=server.name, tasks=parsed,
                **kwargs,
            )  # fmt: skip
            # the whole push, as its user waited for it: the build too
            return replace(
                result,
                timings={"build": build_s, **result.timings},
                duration_s=result.duration_s + build_s,
            )
    finally:
        built.cleanup()


def _report_wheels(manifest: Manifest, step: Callable[[str, str], None]) -> None:
    """The ``wheels`` step: what the bundle carries of the app's dependencies."""
    from ashat.bundle.wheels import WHEELS_DIR
    from ashat.workflow.push import size_text

    wheels = [f for f in manifest.files if f.path.startswith(f"{WHEELS_DIR}/")]
    wheels = [f for f in wheels if f.path.endswith(".whl")]
    if wheels:
        total = sum(f.size for f in wheels)
        step("wheels", f"{len(wheels)} wheels ({size_text(total)}) and their lock in the bundle")


# -- through ashat serve ------------------------------------------------------------------


@dataclass(frozen=True)
class SpoolQuota:
    """How many bytes of uploads ``ashat serve`` keeps waiting for their push: for each
    user (``--spool-user-quota``) and in all (``--spool-quota``)."""

    per_user: int = DEFAULT_SPOOL_USER_BYTES
    total: int = DEFAULT_SPOOL_TOTAL_BYTES


def _spool_name(actor: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}", actor):
        return actor
    return "u-" + hashlib.sha256(actor.encode()).hexdigest()[:16]


def spool(project: Project, actor: str) -> BlobStore:
    """Where ``ashat serve`` keeps the blobs ``actor`` uploaded for a push
    (``.ashat/spool/<user>/``)."""
    from ashat.agent.blobs import BlobStore
    from ashat.agent.config import DEFAULT_MAX_BLOB_BYTES

    root = project.state_dir / "spool" / _spool_name(actor)
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    return BlobStore(root / "blobs", root / "tmp", DEFAULT_MAX_BLOB_BYTES)


def _bytes_under(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def upload_spool(project: Project, actor: str, quota: SpoolQuota) -> BlobStore:
    """``actor``'s spool, with what is left of the quotas as its budget: an upload past it
    is refused 413, naming the quota (what expired is dropped first)."""
    store = spool(project, actor)
    prune_spool(store)
    left_user = quota.per_user - _bytes_under(store.root.parent)
    left_total = quota.total - _bytes_under(project.state_dir / "spool")
    if left_user <= left_total:
        what = f"your upload quota of {quota.per_user} bytes (ashat serve --spool-user-quota)"
        store.budget = (max(0, left_user), what)
    else:
        what = f"the server's upload quota of {quota.total} bytes (ashat serve --spool-quota)"
        store.budget = (max(0, left_total), what)
    return store


async def receive_upload(
    project: Project, actor: str, quota: SpoolQuota, chunks: AsyncIterator[bytes]
) -> dict[str, int]:
    """A pack of blobs (the agent's pack format) into ``actor``'s spool, under the quotas:
    ``{"stored", "blobs", "bytes"}``; a refused pack stores nothing."""
    from starlette.concurrency import run_in_threadpool

    from ashat.agent.receive import receive_pack

    store = await run_in_threadpool(upload_spool, project, actor, quota)
    result = await receive_pack(chunks, store)
    return {"stored": result.stored, "blobs": result.blobs, "bytes": result.bytes}


def blobs_missing(project: Project, digests: Sequence[str], actor: str) -> list[str]:
    """Of ``digests``, those neither in ``actor``'s spool nor on PUBLIC: what a push must
    upload."""
    server = project.require_server("public")
    lacking = spool(project, actor).missing(digests)
    if not lacking:
        return []
    with client_for(server) as agent:
        return agent.missing(lacking)


def push_uploaded(
    project: Project,
    update_id: str,
    description: str,
    manifest: dict[str, Any],
    *,
    actor: str,
    step: Callable[[str, str], None] | None = None,
    tasks: Sequence[str] = (),
) -> PushResult:
    """Push the unsigned ``manifest`` whose blobs are in the spool or already on PUBLIC.

    Everything is checked before anything is recorded: the manifest (paths, sizes, its
    update id), the server's signing key, and that no blob is missing from both places.
    Raises InvalidInput, AlreadyExists, LeaseHeld or what the transfer raised.
    """
    from ashat.bundle.manifest import parse_manifest
    from ashat.workflow.push import push

    server = project.require_server("public")
    parsed = task_references(project, tasks)
    unsigned = parse_manifest(json.dumps(manifest).encode()).without_signatures()
    # the server's key signs it: the person who asked is named in what is signed
    unsigned = replace(unsigned, source={**unsigned.source, "pushed_by": actor})
    if unsigned.update_id != update_id:
        raise InvalidInput(
            f"the manifest is for {unsigned.update_id!r}, not {update_id!r}: build it again"
        )
    if unsigned.description != description.strip():
        raise InvalidInput("the description differs from the manifest's: build it again")
    store = spool(project, actor)
    bundle = _bundle(project, update_id, unsigned, store.path, _signing_key(project))
    digests = sorted(bundle.blob_sizes)
    lacking = blobs_missing(project, digests, actor)
    if lacking:
        raise InvalidInput(
            f"{len(lacking)} of the bundle's {len(digests)} blobs are neither uploaded nor on "
            "PUBLIC: upload them first (POST /v1/blobs/missing, then /v1/blobs/pack)"
        )
    kwargs: dict[str, Any] = {"step": step} if step is not None else {}
    with client_for(server) as agent:
        result = push(
            project.workflow(actor), agent, update_id, description, bundle, target=server.name,
            tasks=parsed, **kwargs,
        )  # fmt: skip
    for sha in digests:  # on PUBLIC now
        with contextlib.suppress(OSError):
            os.unlink(store.file(sha))
    prune_spool(store)
    return result


def prune_spool(store: BlobStore, max_age_s: float = SPOOL_MAX_AGE_S) -> int:
    """Drop spooled blobs older than ``max_age_s`` (uploads no push used); how many. Age is
    the ctime: a stored blob's mtime is set to 1970 (:data:`~ashat.agent.blobs.STORE_MTIME_NS`)."""
    cutoff = time.time() - max_age_s
    dropped = 0
    for directory in (store.root, store.tmp):
        for path in directory.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_ctime < cutoff:
                    path.unlink()
                    dropped += 1
    return dropped
