"""Approval: record the actor's approval under ``[approval]``; with enough, release the exact
verified bundle to OMEGA (blobs relayed from PUBLIC), start the rollout under
``[distribution]``, and follow it (:func:`follow_rollout`)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ashat.errors import InvalidInput, OperationFailed
from ashat.faults import crash_point
from ashat.ops.project import Project, client_for

if TYPE_CHECKING:
    from ashat.ops.trust import TrustDir
    from ashat.transport.client import AgentClient
    from ashat.trust.root import Root
    from ashat.trust.statements import Signer
    from ashat.workflow.approve import ApprovalPolicy, ApproveResult, DistributionPolicy, Holding
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
    project: Project,
    wf: Workflow,
    update_id: str,
    omega: AgentClient,
    limit_s: float,
    tick: Tick | None = None,
) -> tuple[Deployment, dict[str, Any] | None]:
    """Reconcile until the deployment leaves the distribution states, its rollout is paused
    (a gate between waves, or an operator), or ``limit_s`` passed."""
    from ashat.ops.rollback import reconcile_following

    deadline = time.monotonic() + limit_s
    dep, status = reconcile_following(project, wf, update_id, omega)
    while keeps_going(dep, status) and time.monotonic() < deadline:
        if tick is not None:
            tick(dep, status)
        time.sleep(POLL_S)
        dep, status = reconcile_following(project, wf, update_id, omega)
    return dep, status


def keeps_going(dep: Deployment, status: dict[str, Any] | None) -> bool:
    """Whether a rollout being followed may still end by itself: the deployment is
    distributing, its rollout not paused (a gate, or an operator: theirs to resume), no
    region done with the next to release, and not failed for good."""
    return (
        dep.state.value in WAITING_STATES
        and not (status or {}).get("paused")
        and not (status or {}).get("next_region")
        and not _failed_for_good(dep, status)
    )


def _failed_for_good(dep: Deployment, status: dict[str, Any] | None) -> bool:
    """Failed, and no automatic rollback is coming to follow (``auto_rollback = false``)."""
    return dep.state.value == "distribution_failed" and not (status or {}).get(
        "rollback_rollout_id"
    )


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
    # a region's rollout completed and the next region's starts (region, its status)
    region_done: Callable[[str, dict[str, Any]], None] | None = None


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


def approval_to_sign(
    project: Project, update_id: str, approver: str, comment: str | None, at: str | None = None
) -> dict[str, Any]:
    """The ``signed`` part of ``approver``'s approval of ``update_id``: its manifest and
    PUBLIC's verification statement, as this project's store holds them. Raises
    DeploymentNotFound, TransitionRefused (not verified), or Refused (no statement)."""
    from ashat.bundle import parse_manifest
    from ashat.errors import Refused
    from ashat.trust.root import now_iso
    from ashat.trust.statements import approval_signed
    from ashat.trust.statements import digest as statement_digest
    from ashat.workflow.states import State, check_transition

    dep = project.reader().store.require(update_id)
    if dep.state is not State.VERIFIED:
        check_transition(update_id, dep.state, State.APPROVED)
    verification = dep.details.get("verification")
    if not isinstance(verification, dict):
        raise Refused(
            f"{update_id} has no verification statement signed by PUBLIC: start PUBLIC with "
            f"--verifier-key and run 'deploy verify {update_id}' again",
            update_id=update_id,
        )
    manifest_bytes, _ = load_signed_manifest(project, update_id)
    m = parse_manifest(manifest_bytes)
    return approval_signed(
        update_id=update_id,
        sequence=m.sequence,
        manifest_digest=m.digest(),
        verification_digest=statement_digest(verification),
        approver=approver,
        at=at or now_iso(),
        comment=comment,
    )


def project_root_of_trust(project: Project) -> Root:
    """The project's root of trust in force (read and checked once per operation). Raises
    InvalidInput if the project has none, or TrustRefused."""
    from ashat.errors import InvalidInput
    from ashat.ops.trust import TrustDir

    trust = TrustDir.of_project(project.root)
    if not trust.exists():
        raise InvalidInput(
            "this project has no root of trust (ashat trust init): approvals are not signed"
        )
    return trust.current()


# The states an approved release's rollout ends in: a second 'deploy approve' (after
# 'deploy resume', say) reports that end, whoever observed it first.
ENDED_ROLLOUT = frozenset({"completed", "distribution_failed", "rolled_back"})


def approver_of_key(project: Project, update_id: str, keyid: str, root: Root | None = None) -> str:
    """The approver's name ``root`` (default: the project's) gives ``keyid``. Raises
    PolicyRefused if it is not an approver key of root, InvalidInput if there is no root."""
    from ashat.workflow.errors import PolicyRefused

    root = root or project_root_of_trust(project)
    if keyid not in root.roles["approvers"].keyids:
        named = f" (it is {root.keys[keyid].name}'s)" if keyid in root.keys else ""
        raise PolicyRefused(
            f"key {keyid}{named} is not an approver key of root version {root.version} "
            f"(approvers: {', '.join(root.names_of('approvers'))})",
            update_id=update_id,
        )
    return root.keys[keyid].name


def sign_approval(
    project: Project, root: Root, update_id: str, signer: Signer, keyid: str,
    comment: str | None,
) -> dict[str, Any]:  # fmt: skip
    """``update_id``'s approval statement signed by the approver's own key (``signer``),
    named after that key in ``root``. Raises PolicyRefused (not an approver key of root)
    and what :func:`approval_to_sign` raises."""
    from ashat.trust.statements import APPROVAL_NAMESPACE, sign

    name = approver_of_key(project, update_id, keyid, root)
    signed = approval_to_sign(project, update_id, name, comment)
    return sign(signed, APPROVAL_NAMESPACE, signer)


def check_signed_approval(
    project: Project, root: Root, update_id: str, statement: Any, manifest_bytes: bytes
) -> str:
    """The approver's name if ``statement`` holds against ``root`` for this release and
    its verification; else a TrustRefused (exit 3) naming why."""
    from ashat.bundle import parse_manifest
    from ashat.trust.chain import check_approval, people_who_released
    from ashat.trust.root import TrustRefused
    from ashat.trust.statements import digest as statement_digest

    m = parse_manifest(manifest_bytes)
    dep = project.reader().store.require(update_id)
    verification = dep.details.get("verification")
    if not isinstance(verification, dict):
        raise TrustRefused("verification", f"{update_id} has no signed verification statement")
    people = people_who_released(root, m)
    return check_approval(root, m, statement_digest(verification), statement, people)


def chain_of(
    project: Project, trust: TrustDir, update_id: str, manifest_bytes: bytes
) -> dict[str, Any] | None:
    """What OMEGA and the mainframes need to check ``update_id`` themselves: the evidence
    (PUBLIC's statement, the signed approvals) and the project's root chain; checked here
    first, so that a release short of its chain is refused before OMEGA is asked. None for
    a project without a root of trust."""
    import json

    from ashat.bundle import parse_manifest
    from ashat.trust.chain import check_chain

    if not trust.exists():
        return None
    store = project.reader().store
    dep = store.require(update_id)
    evidence = {
        "verification": dep.details.get("verification"),
        "approvals": store.approval_statements(update_id),
    }
    check_chain(trust.current(), parse_manifest(manifest_bytes), evidence)
    return {"evidence": evidence, "roots": [json.loads(b) for b in trust.chain()]}


def _holding(trust: TrustDir, manifest_bytes: bytes) -> Holding:
    """How many of a deployment's signed approvals its chain will count (and why not the
    others), as :func:`chain_of` will judge them: the deployment is called approved only
    when they are enough (an approval of an earlier verification statement, or a passkey
    approval past root's cap, does not count)."""
    from ashat.bundle import parse_manifest
    from ashat.trust.chain import approvers_holding

    root, m = trust.current(), parse_manifest(manifest_bytes)

    def holding(dep: Deployment, statements: list[dict[str, Any]]) -> tuple[int, list[str]]:
        evidence = {"verification": dep.details.get("verification"), "approvals": statements}
        names, refused = approvers_holding(root, m, evidence)
        return len(names), refused

    return holding


def first_omega(project: Project, distribution: DistributionPolicy) -> Server:
    """The OMEGA a release goes to first: the first region's, or the one OMEGA. Raises
    InvalidInput, naming the first region that is not configured."""
    from ashat.ids import omega_tier

    for region in distribution.regions:
        project.require_server(omega_tier(region))
    return project.require_server(
        omega_tier(distribution.regions[0] if distribution.regions else None)
    )


def _next_region(
    project: Project,
    wf: Workflow,
    dep: Deployment,
    trust: TrustDir,
    distribution: DistributionPolicy,
    h: ApproveHooks,
    outcome: ApproveOutcome,
) -> Deployment:
    """The previous region completed: release to the next one, as to the first."""
    from ashat.ids import omega_tier
    from ashat.workflow.approve import release_region

    region = str(dep.details["next_region"])
    server = project.require_server(omega_tier(region))
    manifest_bytes, digests = load_signed_manifest(project, dep.id)
    chain = chain_of(project, trust, dep.id, manifest_bytes)
    with client_for(project.require_server("public")) as public, client_for(server) as omega:
        dep, rollout, relayed = release_region(
            wf, dep.id, region, omega, manifest_bytes, digests,
            make_relay(public, omega, blob_sizes(manifest_bytes)), distribution, chain,
        )  # fmt: skip
    outcome.data.setdefault("regions", []).append({"region": region, "rollout": rollout})
    if h.released is not None:
        h.released(server, relayed, rollout, distribution)
    return dep


def _refuse_retargeting(update_id: str, approved: str | None, wanted: str | None) -> None:
    """``--to`` once the approval is complete: only the mainframes it chose (a resumed
    release, a re-run ``deploy approve``). Anyone may resume a release; no one may send it
    elsewhere than its approvers did. Raises PolicyRefused."""
    from ashat.workflow.errors import PolicyRefused

    if wanted == approved:
        return

    def targets(selector: str | None) -> str:
        return f"the mainframes {selector}" if selector else "every mainframe"

    raise PolicyRefused(
        f"{update_id} was approved for {targets(approved)}; --to {wanted or '*'} would send "
        f"it to {targets(wanted)}. The mainframes an approval chose cannot change once it "
        "is complete: run 'deploy approve' without --to to resume it (or approve a new push "
        "for those)",
        update_id=update_id,
    )


def _check_selector(omega_server: Server, selector: str) -> None:
    """``--to``: a selector matching none of OMEGA's mainframes is refused before the
    approval is recorded (OMEGA refuses it too, counting only the licensed ones)."""
    with client_for(omega_server, timeout_s=10) as omega:
        if omega.mainframes(selector):
            return
        known = len(omega.mainframes())
    raise InvalidInput(
        f"--to {selector!r} matches none of the {known} mainframes {omega_server.name} knows "
        "(ashat fleet list --labels shows theirs); nothing was recorded"
    )


def run_approve(
    project: Project,
    update_id: str,
    *,
    actor: str | None = None,
    comment: str | None = None,
    wait: bool = True,
    hooks: ApproveHooks | None = None,
    signer: tuple[Signer, str] | None = None,
    statement: dict[str, Any] | None = None,
    to: str | None = None,
) -> ApproveOutcome:
    """Approve ``update_id`` as ``actor``; see the module docstring.

    A project with a root of trust (``trust/root.json``) takes only signed approvals: the
    approver's own ``signer`` (and its key id) signs here, or ``statement`` comes signed
    already (``deploy --via`` signs on the client); the approver is the name root gives the
    key, and ``actor``, when given, must be that name.

    A deployment already approved or releasing is released (resuming); one distributing is
    only followed. ``to`` (``deploy approve --to``), a label selector, releases it to
    those mainframes only; it is kept with the deployment for the approval that completes
    the policy, and replaces ``[distribution] to``. With ``wait``, follows the rollout
    until it ends (bounded by the waves' timeouts). Raises InvalidInput (bad policy, a
    tier not configured, no key given), PolicyRefused, TrustRefused, TransitionRefused,
    OperationFailed (manifest missing) or a transport error.
    """
    from ashat.errors import InvalidInput, Refused
    from ashat.ids import validate_update_id
    from ashat.ops.trust import TrustDir
    from ashat.workflow.approve import (
        ApprovalPolicy,
        DistributionPolicy,
        check_comment,
        release,
    )
    from ashat.workflow.approve import approve as record
    from ashat.workflow.errors import PolicyRefused
    from ashat.workflow.states import State, check_transition

    h = hooks or ApproveHooks()
    validate_update_id(update_id)
    check_comment(comment)  # bad input, whatever the state (a completed rollout's too)
    config = project.config()
    policy = ApprovalPolicy.parse(config.table("approval"))
    distribution = DistributionPolicy.parse(config.table("distribution")).targeted(to)
    if distribution.bake.queries:
        from ashat.fleet.analysis import check_queries

        # A query Prometheus cannot parse is refused before the approval is recorded (where
        # Prometheus answers from here; OMEGA asks it again before starting the rollout).
        check_queries(distribution.bake)
    trust = TrustDir.of_project(project.root)
    signed_by: str | None = None
    if (signer is not None or statement is not None) and not trust.exists():
        raise InvalidInput(
            "this project has no root of trust (ashat trust init): approvals are not signed, "
            "so --key has nothing to sign for"
        )
    if trust.exists():
        root = trust.current()
        k = root.threshold("approvers")
        if k > policy.required:  # the fleet will not install with fewer
            policy = ApprovalPolicy(k, policy.approvers, policy.allow_self_approval)
        dep = project.reader().store.require(update_id)
        if dep.state is State.VERIFIED:
            if statement is None and signer is None:
                raise InvalidInput(
                    "this project has a root of trust: approve with your own key "
                    f"(deploy approve {update_id} --key FILE, or ASHAT_APPROVER_KEY)"
                )
            try:
                if statement is None:
                    assert signer is not None
                    statement = sign_approval(
                        project, root, update_id, signer[0], signer[1], comment
                    )
                manifest_bytes, _ = load_signed_manifest(project, update_id)
                signed_by = check_signed_approval(
                    project, root, update_id, statement, manifest_bytes
                )
                if actor is not None and actor != signed_by:
                    raise PolicyRefused(
                        f"the approval is signed by {signed_by}'s key; {actor} may not carry it",
                        update_id=update_id,
                    )
            except Refused as e:  # a refused approval is an audit event, then the refusal
                project.workflow(actor).note(
                    update_id, "approval.refused", {"reason": e.kind, "error": e.message[:500]}
                )
                raise
            comment = statement["signed"].get("comment")
    wf = project.workflow(signed_by or actor)
    dep = wf.store.require(update_id)
    if to is None and dep.details.get("to") is not None:  # given by an earlier approver
        distribution = distribution.targeted(str(dep.details["to"]))
    approved_since = dep.state in (State.APPROVED, State.RELEASING, State.DISTRIBUTING) or (
        dep.state.value in ENDED_ROLLOUT and dep.details.get("rollout_id")
    )
    if approved_since:
        # The mainframes the approval chose, whoever resumes it and whatever their own
        # ashat.toml says now (one approved before the choice was kept: the project's);
        # a rollout that ended since too: no --to is taken after the approval.
        approved = (
            dep.details["to"]
            if "to" in dep.details
            else DistributionPolicy.parse(config.table("distribution")).to
        )
        if to is not None:
            _refuse_retargeting(update_id, approved, distribution.to)
        distribution = dataclasses.replace(distribution, to=approved)
    if dep.state in (State.VERIFIED, State.APPROVED, State.RELEASING):
        # Check everything the release needs before an approval is recorded.
        omega_server = first_omega(project, distribution)
        public_server = project.require_server("public")
        manifest_bytes, digests = load_signed_manifest(project, update_id)
        if to is not None and distribution.to is not None:
            _check_selector(omega_server, distribution.to)
    outcome = ApproveOutcome(dep, wf.actor, policy.required, {"update_id": update_id})
    header_done = False

    def header(text: str) -> None:
        nonlocal header_done
        if not header_done and h.header is not None:
            h.header(text)
        header_done = True

    if dep.state is State.VERIFIED:
        holding = _holding(trust, manifest_bytes) if trust.exists() else None
        result = record(  # with --to, kept for the approval that completes the policy
            wf, update_id, policy, comment, statement if signed_by else None, holding,
            to=distribution.to if to is not None else None, targets=distribution.to,
        )  # fmt: skip
        outcome.recorded = result
        outcome.data.update(result.to_json())
        dep = outcome.deployment = result.deployment
        if h.recorded is not None:
            h.recorded(result, policy, wf.actor)
        crash_point("approve.recorded")
        if dep.state is not State.APPROVED:
            outcome.waiting_for = policy.required - result.valid
            return outcome
    elif not approved_since:  # a rollout that ended since: approve says how, as if it waited
        check_transition(update_id, dep.state, State.APPROVED)  # raises, naming what is allowed

    status: dict[str, Any] | None = None
    if dep.state in (State.APPROVED, State.RELEASING):
        header("ASHAT Deployment to OMEGA Approved!")
        try:
            chain = chain_of(project, trust, update_id, manifest_bytes)
        except Refused as e:  # short of its chain: OMEGA is not even asked
            wf.note(update_id, "release.refused", {"reason": e.kind, "error": e.message[:500]})
            raise
        with client_for(public_server) as public, client_for(omega_server) as omega:
            if dep.state is State.RELEASING:
                wf.note(update_id, "release.resumed", {})
            dep, rollout, relayed = release(
                wf, update_id, omega, manifest_bytes, digests,
                make_relay(public, omega, blob_sizes(manifest_bytes)),
                distribution, resume=dep.state is State.RELEASING,
                chain=chain,
            )  # fmt: skip
        outcome.data.update(
            {"rollout": rollout, "bytes_relayed": relayed, "waves": list(distribution.waves)}
        )
        if h.released is not None:
            h.released(omega_server, relayed, rollout, distribution)
    else:
        from ashat.ops.rollback import reconcile_following

        header(f"ASHAT Distribution of {update_id}")
        with client_for(project.omega_of(dep)) as omega:  # where its region's rollout is now
            dep, status = reconcile_following(project, wf, update_id, omega)

    while True:
        if dep.state is State.DISTRIBUTING and dep.details.get("next_region"):
            if h.region_done is not None and status is not None:
                h.region_done(str(status.get("region")), status)
            dep = _next_region(project, wf, dep, trust, distribution, h, outcome)
        if not wait:
            break
        limit = distribution.wave_timeout_s * (len(distribution.waves) + 2) + 60
        with client_for(project.omega_of(dep)) as omega:
            dep, status = follow_rollout(project, wf, update_id, omega, limit, h.tick)
        outcome.followed = True
        if not (status or {}).get("next_region"):
            break
    outcome.deployment = dep
    outcome.data.update({"state": dep.state.value, "rollout_status": status})
    return outcome
