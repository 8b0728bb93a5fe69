"""``deploy push`` and ``deploy rollback`` on PUBLIC: the decisions, with the agent behind a port.

A push is a sequence of idempotent steps (DESIGN §5), each recorded as an event:

1. record the deployment in ``pushing`` (allocating its ``sequence``, taking PUBLIC's lease);
2. sign the manifest with that sequence;
3. ask PUBLIC which blobs it lacks and send only those (of a tree that shares most files
   with the release PUBLIC runs, only about the others: a stage refused for a blob gone
   since gets it sent, and is asked again, once);
4. stage the signed manifest, activate it (the agent starts the new app, waits until it is
   healthy, and only then stops the old one);
5. move to ``pushed`` with what was sent.

A failure of the release (the agent refused it, a file could not be read) moves the
deployment to ``failed`` with the reason; the agent guarantees that a release that failed to
stage or activate is removed and PUBLIC stays on its previous one. A push killed half-way
leaves ``pushing``, and so does PUBLIC going away mid-push (unreachable, or answering
nonsense: what it did last is unknown, and nothing is wrong with the release; the event
``push.interrupted`` says why). Re-running the same ``deploy push`` resumes it once its
lease is free (the steps are idempotent, so nothing is sent twice). What PUBLIC ran before
is recorded (``public_previous``) before anything is sent, so a resumed push, which may find
its own release already active, still knows what a rollback goes back to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ashat.errors import AshatError, InvalidInput, OperationFailed, RemoteError
from ashat.faults import crash_point
from ashat.ids import check_text, same_person, validate_update_id
from ashat.workflow.errors import AlreadyExists, Interrupted, LeaseHeld
from ashat.workflow.models import Deployment
from ashat.workflow.service import Workflow
from ashat.workflow.states import State

MAX_DESCRIPTION = 1000


def check_description(description: str) -> str:
    """A release's description, stripped: 1 to 1,000 characters (the one owner of the rule)."""
    description = description.strip()
    if not description or len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"the description must be 1-{MAX_DESCRIPTION} characters")
    return check_text(description, "the description")


class BlobLike(Protocol):
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...


class AgentPort(Protocol):
    """What push and rollback need from an agent (``ashat.transport.AgentClient``)."""

    def health(self) -> dict[str, Any]: ...
    def missing(self, digests: Sequence[str]) -> list[str]: ...
    def upload(self, blobs: Sequence[Any]) -> int: ...
    def stage(self, manifest_bytes: bytes) -> dict[str, Any]: ...
    def activate(self, update_id: str) -> dict[str, Any]: ...
    def rollback(self, from_id: str | None = None, to_id: str | None = None) -> dict[str, Any]: ...


class ManifestLike(Protocol):
    @property
    def files(self) -> Sequence[Any]: ...
    @property
    def total_size(self) -> int: ...
    def to_bytes(self) -> bytes: ...
    def digest(self) -> str: ...


@dataclass(frozen=True)
class Bundle:
    """A built, unsigned release: its manifest, the blobs by digest, and how to sign it.

    ``sign(sequence)`` returns the signed manifest carrying that sequence; ``blob(sha)``
    returns what ``AgentPort.upload`` sends for that digest.
    """

    manifest: Any
    blob_sizes: Mapping[str, int]
    sign: Callable[[int], ManifestLike]
    blob: Callable[[str], Any]
    source: Mapping[str, Any]
    # The blobs of the release with this id, as this ALPHA pushed it (empty if unknown):
    # those PUBLIC holds already if it runs that release, and need not be asked about.
    held: Callable[[str | None], frozenset[str]] = field(default=lambda _id: frozenset())


@dataclass(frozen=True)
class PushResult:
    deployment: Deployment
    target: str
    files: int
    bytes_total: int
    bytes_sent: int
    blobs_sent: int
    blobs_skipped: int
    duration_s: float
    resumed: bool
    public_previous: str | None
    app: dict[str, Any] | None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step (bench/push.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": self.deployment.id,
            "state": self.deployment.state.value,
            "target": self.target,
            "sequence": self.deployment.details.get("sequence"),
            "files": self.files,
            "bytes_total": self.bytes_total,
            "bytes_sent": self.bytes_sent,
            "blobs_sent": self.blobs_sent,
            "blobs_skipped": self.blobs_skipped,
            "duration_s": round(self.duration_s, 3),
            "resumed": self.resumed,
            "public_previous": self.public_previous,
            "app": self.app,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


Step = Callable[[str, str], None]  # (step name, one-line detail) for the front end to print


def _no_step(name: str, detail: str) -> None:
    del name, detail


def taken_id(update_id: str, state: str | None) -> AlreadyExists | None:
    """The refusal of a push of ``update_id`` whose deployment is in ``state`` (None: there
    is none), or None if a push may go on: a new id, or one a killed push left in
    ``pushing`` (resumed). Local and ``--via`` pushes ask it before anything is built."""
    if state is None or state == State.PUSHING.value:
        return None
    return AlreadyExists(
        f"update id {update_id!r} already exists (state {state}); choose a new id",
        update_id=update_id,
        state=state,
    )


def refuse_taken_id(wf: Workflow, update_id: str) -> None:
    """Raise :func:`taken_id`'s refusal: checked first, before a bundle is built or anything
    printed, and again when the deployment is recorded."""
    existing = wf.store.get(update_id)
    err = taken_id(update_id, existing.state.value if existing is not None else None)
    if err is not None:
        raise err


def _start(
    wf: Workflow,
    update_id: str,
    description: str,
    bundle: Bundle,
    tasks: Sequence[Mapping[str, Any]] = (),
) -> tuple[Deployment, bool]:
    """Create the deployment, or resume one a killed push left in ``pushing``."""
    refuse_taken_id(wf, update_id)
    existing = wf.store.get(update_id)
    if existing is None:
        details: dict[str, Any] = {
            "source": dict(bundle.source),
            "files": len(bundle.manifest.files),
            "bytes_total": bundle.manifest.total_size,
        }
        if tasks:
            details["tasks"] = [dict(t) for t in tasks]
        return wf.create(update_id, description, details), False
    lease = wf.store.lease("public")
    if (
        lease is not None
        and lease.deployment_id == update_id
        and lease.expires_at > wf.now()
        and same_person(lease.actor) != same_person(wf.actor)
    ):
        raise LeaseHeld(
            f"{update_id} is being pushed by {lease.owner} (lease until "
            f"{lease.expires_at}); wait for it to end or its lease to expire",
            tier="public",
            holder=update_id,
        )
    wf.note(update_id, "push.resumed", {"previous_owner": lease.owner if lease else None})
    return existing, True


def check_limits(files: Sequence[Any], limits: object, where: str) -> None:
    """Refuse (:class:`InvalidInput`) a tree ``where`` (PUBLIC) would refuse when it stages,
    by the limits its health answer said (``limits``): more files than ``max_files``, or a
    path deeper than ``max_path_depth``. Nothing is checked that it did not say."""
    if not isinstance(limits, dict):
        return
    most = limits.get("max_files")
    if isinstance(most, int) and len(files) > most:
        raise InvalidInput(
            f"the tree has {len(files)} files, over {where}'s limit of {most} "
            "(ashat agent --max-files there); nothing was sent"
        )
    deepest = limits.get("max_path_depth")
    if isinstance(deepest, int):
        for f in files:
            if f.path.count("/") > deepest:
                raise InvalidInput(
                    f"{f.path[:80]} is {f.path.count('/')} directories deep, over {where}'s "
                    f"limit of {deepest} (ashat agent --max-path-depth there); nothing was "
                    "sent"
                )


def check_sizes(files: Sequence[Any], limits: object, where: str, sending: Collection[str]) -> None:
    """Refuse (:class:`InvalidInput`) the files over ``max_blob_bytes`` among those about to
    be sent (``sending``, digests), as ``where`` would as it received them (it checks only
    what it receives: a file it holds is never refused)."""
    big = limits.get("max_blob_bytes") if isinstance(limits, dict) else None
    if not isinstance(big, int):
        return
    over = [f for f in files if f.kind == "file" and f.size > big and f.sha256 in sending]
    over.sort(key=lambda f: -f.size)
    if over:
        named = ", ".join(f"{f.path} ({size_text(f.size)})" for f in over[:3])
        more = f" and {len(over) - 3} more" if len(over) > 3 else ""
        raise InvalidInput(
            f"{named}{more}: over {where}'s limit of {size_text(big)} for one file "
            "(ashat agent --max-blob-bytes there); nothing was sent"
        )


def _upload(agent: AgentPort, bundle: Bundle, digests: Sequence[str]) -> int:
    """Send the blobs of ``digests`` PUBLIC asked for; the bytes sent."""
    unknown = set(digests) - set(bundle.blob_sizes)
    if unknown:
        raise OperationFailed(f"PUBLIC asked for {len(unknown)} blobs that are not in the bundle")
    return agent.upload([bundle.blob(d) for d in digests])


def _lacking(e: AshatError) -> list[str]:
    """The digests a stage refused for lacking (the agent's ``blobs_missing``), else []."""
    body = e.details.get("agent") if e.kind == "blobs_missing" else None
    got = body.get("missing") if isinstance(body, dict) else None
    if not isinstance(got, list) or not all(isinstance(d, str) for d in got):
        return []
    return got


def push(
    wf: Workflow,
    agent: AgentPort,
    update_id: str,
    description: str,
    bundle: Bundle,
    *,
    target: str,
    step: Step = _no_step,
    tasks: Sequence[Mapping[str, Any]] = (),
) -> PushResult:
    """Carry ``bundle`` to PUBLIC as deployment ``update_id``; see the module docstring.
    ``tasks`` (:mod:`.tasks`, parsed) are recorded with it."""
    validate_update_id(update_id)
    description = check_description(description)
    started = time.monotonic()
    timings: dict[str, float] = {}
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name], mark = now - mark, now

    dep, resumed = _start(wf, update_id, description, bundle, tasks)
    sequence = int(dep.details["sequence"])
    lap("record")
    if not resumed:
        step("record", f"deployment {update_id} recorded (sequence {sequence})")
    elif dep.description != description:  # its manifest was signed with the first one
        step(
            "record",
            f"resuming {update_id} (sequence {sequence}), recorded with the description "
            f"{dep.description!r}; the one given now is not used",
        )
    else:
        step("record", f"resuming {update_id} (sequence {sequence})")
    crash_point("push.recorded")
    try:
        signed = bundle.sign(sequence)
        wf.note(update_id, "push.signed", {"manifest": signed.digest(), "sequence": sequence})
        lap("sign")
        # What PUBLIC ran before this push: asked by the first attempt, which may have
        # activated the release before it was interrupted.
        health = agent.health()
        public_previous = wf.remember(dep, "public_previous", lambda: health.get("current"))
        limits = health.get("limits")
        check_limits(bundle.manifest.files, limits, target)  # before a byte is sent
        step(
            "plan",
            f"{len(signed.files)} files, {size_text(signed.total_size)}; PUBLIC runs "
            f"{public_previous or 'nothing yet'}",
        )
        lap("plan")
        digests = sorted(bundle.blob_sizes)
        held = bundle.held(public_previous)
        missing = agent.missing([d for d in digests if d not in held])
        check_sizes(bundle.manifest.files, limits, target, set(missing))
        sent = _upload(agent, bundle, missing)
        skipped = len(digests) - len(missing)
        wf.note(
            update_id,
            "push.uploaded",
            {"blobs_sent": len(missing), "blobs_skipped": skipped, "bytes_sent": sent},
        )
        lap("upload")
        step("upload", f"sent {len(missing)} blobs ({size_text(sent)}), {skipped} already there")
        crash_point("push.uploaded")
        wf.renew("public", update_id)
        data = signed.to_bytes()
        try:
            staged = agent.stage(data)
        except AshatError as e:
            gone = _lacking(e)
            if not gone:
                raise
            # a blob of the release PUBLIC ran, collected since, or one it lost: send, stage again
            check_sizes(bundle.manifest.files, limits, target, set(gone))
            resent = _upload(agent, bundle, gone)
            wf.note(update_id, "push.uploaded", {"blobs_sent": len(gone), "bytes_sent": resent})
            sent += resent
            missing = sorted({*missing, *gone})
            staged = agent.stage(data)
        skipped = len(digests) - len(missing)
        lap("stage")
        step(
            "stage",
            f"staged as releases/{update_id} ({staged.get('files', len(signed.files))} files)",
        )
        crash_point("push.staged")
        activated = agent.activate(update_id)
        lap("activate")
        crash_point("push.activated")
        app = activated.get("app")
        step(
            "activate",
            "active on PUBLIC" + (f", app healthy on port {app['port']}" if app else ""),
        )
    except AshatError as e:
        if isinstance(e, RemoteError) and e.transient:
            wf.note(update_id, "push.interrupted", {"error": e.message[:500], "kind": e.kind})
            raise Interrupted(e, update_id, State.PUSHING.value, f"deploy push {update_id}") from e
        wf.fail(update_id, e)
        raise
    except OSError as e:  # a source file vanished or became unreadable mid-push
        err = OperationFailed(f"push of {update_id} failed reading the bundle: {e}")
        wf.fail(update_id, err)
        raise err from e
    facts = {
        "bytes_sent": sent,
        "blobs_sent": len(missing),
        "blobs_skipped": skipped,
        "public_previous": public_previous,
        "manifest": signed.digest(),
    }
    dep = wf.move(update_id, State.PUSHED, details=facts, details_update=facts)
    return PushResult(
        deployment=dep,
        target=target,
        files=len(signed.files),
        bytes_total=signed.total_size,
        bytes_sent=sent,
        blobs_sent=len(missing),
        blobs_skipped=skipped,
        duration_s=time.monotonic() - started,
        resumed=resumed,
        public_previous=public_previous,
        app=app if isinstance(app, dict) else None,
        timings=timings,
    )


@dataclass(frozen=True)
class RollbackResult:
    deployment: Deployment
    restored: str | None
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": self.deployment.id,
            "state": self.deployment.state.value,
            "restored": self.restored,
            "note": self.note,
        }


ROLLBACK_FROM = frozenset(
    {
        State.PUSHED,
        State.VERIFIED,
        State.VERIFICATION_FAILED,
        State.FAILED,
        State.COMPLETED,
        State.DISTRIBUTION_FAILED,
    }
)


def rollback_public(
    wf: Workflow, agent: AgentPort, update_id: str, reason: str | None
) -> RollbackResult:
    """Put PUBLIC back on the release it ran before ``update_id``, then mark it rolled back."""
    validate_update_id(update_id)
    dep = wf.store.require(update_id)
    if dep.state not in ROLLBACK_FROM:
        # Let the table phrase the refusal (it names the current state and what is allowed).
        wf.move(update_id, State.ROLLED_BACK)
    asked = any(e.kind == "public.rollback_asked" for e in wf.store.events(update_id))
    current, restored, note = _put_public_back(  # recorded first: a re-run knows it asked
        agent, dep, asking=lambda: wf.note(update_id, "public.rollback_asked", {})
    )
    before = dep.details.get("public_previous")
    if restored is None and asked and current is not None and current == before:
        # put back already: by this verb's earlier run, killed before it recorded so
        restored, note = current, f"PUBLIC runs {current} again, as before {dep.id}"
    crash_point("rollback.public")
    dep = wf.move(
        update_id,
        State.ROLLED_BACK,
        reason=reason or "rolled back by operator",
        details={"public_restored": restored, "public_current_before": current},
        details_update={"public_restored": restored},
    )
    return RollbackResult(dep, restored, note)


def restore_public(
    wf: Workflow, agent: AgentPort, update_id: str, caused_by: str | None = None
) -> str:
    """After OMEGA and the fleet went back from ``update_id``, or it was cancelled: PUBLIC
    too, if it still runs it (idempotent; the state is not moved, ``public.restored``
    records it). What happened, in a line."""
    dep = wf.store.require(update_id)
    current, restored, note = _put_public_back(agent, dep, first_stays=True)
    if restored is not None:
        what = {"from": current, "restored": restored}
        wf.note(update_id, "public.restored", what, caused_by=caused_by)
    return note


def _put_public_back(
    agent: AgentPort,
    dep: Deployment,
    first_stays: bool = False,
    asking: Callable[[], object] | None = None,
) -> tuple[str | None, str | None, str]:
    """PUBLIC back on what it ran before ``dep`` if it runs ``dep``: (what it ran, what it
    runs now if it was moved, a line saying which). ``first_stays``: where PUBLIC ran
    nothing before, say so (an agent has nothing to go back to) instead of asking it.
    ``asking`` is called just before PUBLIC is asked to go back (to record that it was)."""
    current = agent.health().get("current")
    if current != dep.id:
        return (
            current,
            None,
            f"PUBLIC runs {current or 'nothing'}, not {dep.id}: nothing to restore there",
        )
    if first_stays and "public_previous" in dep.details and not dep.details["public_previous"]:
        return (
            current,
            None,
            f"PUBLIC ran nothing before {dep.id}: it serves it until the next push",
        )
    if asking is not None:
        asking()
    answer = agent.rollback(from_id=dep.id, to_id=dep.details.get("public_previous"))
    restored = answer.get("current")
    return current, restored, f"PUBLIC restored to {restored}"


def size_text(n: int) -> str:
    """``n`` bytes as people read them: B, KiB or MiB."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"
