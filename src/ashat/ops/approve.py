"""Approval: record the actor's approval under ``[approval]``; with enough, release the exact
verified bundle to OMEGA (blobs relayed from PUBLIC), start the rollout under
``[distribution]``, and follow it (:func:`follow_rollout`)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ashat.errors import OperationFailed
from ashat.faults import crash_point
from ashat.ops.project import Project, client_for

if TYPE_CHECKING:
    from ashat.transport.client import AgentClient
    from ashat.workflow.approve import ApprovalPolicy, ApproveResult, DistributionPolicy
    from ashat.workflow.models import Deployment, Server
    from ashat.workflow.service import Workflow

WAITING_STATES = ("distributing", "distribution_failed")
POLL_S = 0.3  # between two looks at a running rollout


def make_relay(
    public: AgentClient, omega: AgentClient, sizes: Mapping[str, int]
) -> Callable[[list[str]], int]:
    """Blobs go PUBLIC -> here -> OMEGA: exactly what was verified, only what OMEGA lacks.

    ``sizes`` are the blobs' sizes by digest, from the signed manifest: PUBLIC may send no
    more than that (nor other bytes: each digest is checked).
    """
    from ashat.transport.client import BlobRef

    def relay(digests: list[str]) -> int:
        if not digests:
            return 0
        with tempfile.TemporaryDirectory(prefix="ashat-relay-") as tmp:
            refs = []
            for sha in digests:
                dest = Path(tmp) / sha
                refs.append(BlobRef(sha, public.download(sha, dest, sizes[sha]), dest))
            return omega.upload(refs)

    return relay


def load_signed_manifest(project: Project, update_id: str) -> tuple[bytes, list[str]]:
    """The manifest ``deploy push`` signed for ``update_id``, and its blob digests."""
    from ashat.bundle import parse_manifest

    path = project.manifest_path(update_id)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OperationFailed(
            f"the signed manifest of {update_id} is missing ({path}): it is written by "
            "'deploy push' on this machine"
        ) from e
    m = parse_manifest(data)
    return data, sorted({f.sha256 for f in m.files if f.kind == "file"})


def blob_sizes(manifest_bytes: bytes) -> dict[str, int]:
    """Each blob's size by digest, as the signed manifest says."""
    from ashat.bundle import parse_manifest

    return {f.sha256: f.size for f in parse_manifest(manifest_bytes).files if f.kind == "file"}


# (the deployment, OMEGA's rollout status) after each look while following a rollout
Tick = Callable[["Deployment", "dict[str, Any] | None"], None]


def follow_rollout(
    wf: Workflow, update_id: str, omega: AgentClient, limit_s: float, tick: Tick | None = None
) -> tuple[Deployment, dict[str, Any] | None]:
    """Reconcile until the deployment leaves the distribution states or ``limit_s`` passed."""
    from ashat.workflow.approve import reconcile

    deadline = time.monotonic() + limit_s
    dep, status = reconcile(wf, update_id, omega)
    while dep.state.value in WAITING_STATES and time.monotonic() < deadline:
        if tick is not None:
            tick(dep, status)
        time.sleep(POLL_S)
        dep, status = reconcile(wf, update_id, omega)
    return dep, status


@dataclass
class ApproveHooks:
    """What a front end may show while :func:`run_approve` works (all optional)."""

    # this approval was recorded (result, policy, approver)
    recorded: Callable[[ApproveResult, ApprovalPolicy, str], None] | None = None
    # the headline, once: the release starts, or only the following of a running rollout
    header: Callable[[str], None] | None = None
    # the bundle is on OMEGA and the rollout started (OMEGA, bytes relayed, rollout, policy)
    released: Callable[[Server, int, dict[str, Any], DistributionPolicy], None] | None = None
    tick: Tick | None = None  # while following the rollout


@dataclass
class ApproveOutcome:
    """Where the deployment ended up; ``data`` is the verb's JSON document."""

    deployment: Deployment
    actor: str
    required: int
    data: dict[str, Any] = field(default_factory=dict)
    recorded: ApproveResult | None = None
    waiting_for: int = 0  # approvals still needed (nothing was released)
    followed: bool = False  # the rollout was followed until it ended or the limit passed

    @property
    def state(self) -> str:
        return self.deployment.state.value


def run_approve(
    project: Project,
    update_id: str,
    *,
    actor: str | None = None,
    comment: str | None = None,
    wait: bool = True,
    hooks: ApproveHooks | None = None,
) -> ApproveOutcome:
    """Approve ``update_id`` as ``actor``; see the module docstring.

    A deployment already approved or releasing is released (resuming); one distributing is
    only followed. With ``wait``, follows the rollout until it ends (bounded by the waves'
    timeouts). Raises InvalidInput (bad policy, a tier not configured), PolicyRefused,
    TransitionRefused, OperationFailed (manifest missing) or a transport error.
    """
    from ashat.ids import validate_update_id
    from ashat.workflow.approve import ApprovalPolicy, DistributionPolicy, release
    from ashat.workflow.approve import approve as record
    from ashat.workflow.states import State, check_transition

    h = hooks or ApproveHooks()
    validate_update_id(update_id)
    config = project.config()
    policy = ApprovalPolicy.parse(config.table("approval"))
    distribution = DistributionPolicy.parse(config.table("distribution"))
    wf = project.workflow(actor)
    dep = wf.store.require(update_id)
    if dep.state in (State.VERIFIED, State.APPROVED, State.RELEASING):
        # Check everything the release needs before an approval is recorded.
        omega_server = project.require_server("omega")
        public_server = project.require_server("public")
        manifest_bytes, digests = load_signed_manifest(project, update_id)
    outcome = ApproveOutcome(dep, wf.actor, policy.required, {"update_id": update_id})
    header_done = False

    def header(text: str) -> None:
        nonlocal header_done
        if not header_done and h.header is not None:
            h.header(text)
        header_done = True

    if dep.state is State.VERIFIED:
        result = record(wf, update_id, policy, comment)
        outcome.recorded = result
        outcome.data.update(result.to_json())
        dep = outcome.deployment = result.deployment
        if h.recorded is not None:
            h.recorded(result, policy, wf.actor)
        crash_point("approve.recorded")
        if dep.state is not State.APPROVED:
            outcome.waiting_for = policy.required - len(result.approvals)
            return outcome
    elif dep.state not in (State.APPROVED, State.RELEASING, State.DISTRIBUTING):
        check_transition(update_id, dep.state, State.APPROVED)  # raises, naming what is allowed

    if dep.state in (State.APPROVED, State.RELEASING):
        header("ASHAT Deployment to OMEGA Approved!")
        with client_for(public_server) as public, client_for(omega_server) as omega:
            if dep.state is State.RELEASING:
                wf.note(update_id, "release.resumed", {})
            dep, rollout, relayed = release(
                wf, update_id, omega, manifest_bytes, digests,
                make_relay(public, omega, blob_sizes(manifest_bytes)),
                distribution, resume=dep.state is State.RELEASING,
            )  # fmt: skip
        outcome.data.update(
            {"rollout": rollout, "bytes_relayed": relayed, "waves": list(distribution.waves)}
        )
        if h.released is not None:
            h.released(omega_server, relayed, rollout, distribution)
    else:
        omega_server = project.require_server("omega")
        header(f"ASHAT Distribution of {update_id}")

    status = None
    if wait:
        limit = distribution.wave_timeout_s * (len(distribution.waves) + 2) + 60
        with client_for(omega_server) as omega:
            dep, status = follow_rollout(wf, update_id, omega, limit, h.tick)
        outcome.followed = True
    outcome.deployment = dep
    outcome.data.update({"state": dep.state.value, "rollout_status": status})
    return outcome
