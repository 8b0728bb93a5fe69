"""``deploy approve``: the approval policy, the release to OMEGA, and following the rollout.

``verified -> approved -> releasing -> distributing -> completed | distribution_failed``
(``-> rolled_back`` when OMEGA's automatic rollback finished). The policy comes from
``[approval]``; each approval is an event, and one person approving twice counts once.
When enough approvals are in, the exact bundle that was verified on PUBLIC is sent to
OMEGA by difference (blobs relayed from PUBLIC), OMEGA counter-signs it with the approval
record, activates it and starts the rollout (docs/fleet-protocol.md). :func:`reconcile`
moves the deployment on as OMEGA reports the rollout's progress; it is what ``deploy
approve`` calls while it waits and what ``deploy status`` calls for a running rollout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ashat.bake import NO_BAKE, BakePolicy, PolicyError
from ashat.errors import AshatError, InvalidInput, OperationFailed, Refused, RemoteError
from ashat.faults import crash_point
from ashat.ids import (
    REGION_RE,
    check_text,
    configure_args,
    omega_tier,
    same_person,
    validate_update_id,
)
from ashat.waves import check_waves
from ashat.workflow.errors import Interrupted, OmegaApart, PolicyRefused
from ashat.workflow.models import Deployment, RolloutStatus
from ashat.workflow.service import Workflow
from ashat.workflow.states import State, check_transition


@dataclass(frozen=True)
class ApprovalPolicy:
    required: int = 1
    approvers: tuple[str, ...] = ()
    allow_self_approval: bool = False

    @classmethod
    def parse(cls, table: dict[str, Any]) -> ApprovalPolicy:
        required = table.get("required", 1)
        if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= 50:
            raise InvalidInput(f"[approval].required must be an integer 1-50, not {required!r}")
        approvers = table.get("approvers", [])
        if not isinstance(approvers, list) or not all(isinstance(a, str) and a for a in approvers):
            raise InvalidInput("[approval].approvers must be a list of user names")
        allow_self = table.get("allow_self_approval", False)
        if not isinstance(allow_self, bool):
            raise InvalidInput("[approval].allow_self_approval must be true or false")
        if approvers and len(set(approvers)) < required:
            raise InvalidInput(
                f"[approval] needs {required} approvals but lists only "
                f"{len(set(approvers))} approver(s)"
            )
        return cls(required, tuple(approvers), allow_self)


@dataclass(frozen=True)
class DistributionPolicy:
    waves: tuple[int, ...] = (10, 50, 100)
    max_failure_ratio: float = 0.2
    wave_timeout_s: float = 600.0
    auto_rollback: bool = True
    channel: str = "stable"
    pause_after: tuple[int, ...] = ()  # waves (0-based) after which the rollout waits
    bake: BakePolicy = NO_BAKE  # bake time and metric analysis after each wave
    regions: tuple[str, ...] = ()  # OMEGAs released to in turn; () = the one OMEGA
    to: str | None = None  # a label selector: only those mainframes (ashat/labels.py)
    rings: tuple[str, ...] = ()  # selectors whose mainframes go first, a wave each

    @classmethod
    def parse(cls, table: dict[str, Any]) -> DistributionPolicy:
        given = table.get("waves", [10, 50, 100])
        waves, gates = split_gates(given)
        try:
            check_waves(waves if isinstance(waves, list) else [])
        except ValueError:
            raise InvalidInput(
                f"[distribution].waves must be increasing percentages ending at 100, with "
                f'"pause" between two of them for a manual gate, not {given!r}'
            ) from None
        ratio = table.get("max_failure_ratio", 0.2)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise InvalidInput(f"[distribution].max_failure_ratio must be 0-1, not {ratio!r}")
        timeout = table.get("wave_timeout_s", 600)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInput(f"[distribution].wave_timeout_s must be > 0, not {timeout!r}")
        auto = table.get("auto_rollback", True)
        if not isinstance(auto, bool):
            raise InvalidInput("[distribution].auto_rollback must be true or false")
        channel = table.get("channel", "stable")
        if not isinstance(channel, str) or not channel:
            raise InvalidInput("[distribution].channel must be a channel name")
        try:
            bake = BakePolicy.parse(table, "[distribution]")
        except PolicyError as e:
            raise InvalidInput(str(e)) from e
        regions = table.get("regions", [])
        if (
            not isinstance(regions, list)
            or not all(isinstance(r, str) and REGION_RE.fullmatch(r) for r in regions)
            or len(set(regions)) != len(regions)
        ):
            raise InvalidInput(
                '[distribution].regions must be distinct region names, e.g. ["eu", "us"] (each '
                f"configured: deploy configure omega URL NAME --region R), not {regions!r}"
            )
        to = table.get("to")
        rings = table.get("rings", [])
        if to is not None and not isinstance(to, str):
            raise InvalidInput('[distribution].to must be a label selector, e.g. "ring=pilot"')
        if not isinstance(rings, list) or not all(isinstance(r, str) for r in rings):
            raise InvalidInput(
                '[distribution].rings must be a list of label selectors, e.g. ["ring=pilot"]'
            )
        return cls(
            tuple(waves), float(ratio), float(timeout), auto, channel, gates, bake,
            tuple(regions), selector_text(to, "[distribution].to"),
            rings_of(rings, "[distribution].rings"),
        )  # fmt: skip

    def targeted(self, to: str | None) -> DistributionPolicy:
        """This policy for the mainframes ``to`` selects (``deploy approve --to``)."""
        from dataclasses import replace

        return replace(self, to=selector_text(to, "--to")) if to is not None else self

    def to_json(self) -> dict[str, Any]:
        """What OMEGA's rollout takes (the regions are the control side's to walk)."""
        return {
            "waves": list(self.waves),
            "pause_after": list(self.pause_after),
            "max_failure_ratio": self.max_failure_ratio,
            "wave_timeout_s": self.wave_timeout_s,
            "auto_rollback": self.auto_rollback,
            "channel": self.channel,
            **(self.bake.to_json() if self.bake.active else {}),
            **({"to": self.to} if self.to else {}),
            **({"rings": list(self.rings)} if self.rings else {}),
        }


PAUSE = "pause"


def selector_text(text: str | None, where: str) -> str | None:
    """A label selector in its canonical spelling (None for every mainframe); raises
    :class:`InvalidInput` naming ``where`` and the term at fault."""
    from ashat.labels import LabelError, parse_selector

    if text is None:
        return None
    try:
        selector = parse_selector(text)
    except LabelError as e:
        raise InvalidInput(f"{where}: {e}") from e
    return None if selector.everyone else str(selector)


def rings_of(rings: list[str], where: str) -> tuple[str, ...]:
    """``[distribution] rings``: distinct selectors, none of them every mainframe."""
    out = tuple(selector_text(r, where) or "" for r in rings)
    if "" in out or len(set(out)) != len(out) or len(out) > 10:
        raise InvalidInput(
            f"{where} must be at most 10 distinct label selectors, none of them '*' (the "
            "percentage waves take the rest)"
        )
    return out


def split_gates(waves: Any) -> tuple[Any, tuple[int, ...]]:
    """``[10, "pause", 100]`` -> ``([10, 100], (0,))``: the percentages, and the waves after
    which the rollout waits for ``deploy resume``. A "pause" first, last or twice in a row
    leaves the list as given (so it is refused, named, by the caller)."""
    if not isinstance(waves, list) or PAUSE not in waves:
        return waves, ()
    numbers: list[Any] = []
    gates: list[int] = []
    for i, w in enumerate(waves):
        if w != PAUSE:
            numbers.append(w)
        elif 0 < i < len(waves) - 1 and waves[i - 1] != PAUSE:
            gates.append(len(numbers) - 1)
        else:
            return waves, ()
    return numbers, tuple(gates)


class OmegaPort(Protocol):
    """What approval needs from OMEGA (an ``AgentClient``): its agent routes, and the fleet's
    by what they do (no URL path reaches the core)."""

    def health(self) -> dict[str, Any]: ...
    def missing(self, digests: Sequence[str]) -> list[str]: ...
    def stage(self, manifest_bytes: bytes) -> dict[str, Any]: ...
    def activate(self, update_id: str) -> dict[str, Any]: ...
    def rollback(self, from_id: str | None = None, to_id: str | None = None) -> dict[str, Any]: ...
    def countersign(self, update_id: str, record: dict[str, Any]) -> dict[str, Any]: ...
    def start_rollout(self, update_id: str, distribution: dict[str, Any]) -> RolloutStatus: ...
    def rollout_status(self, rollout_id: str) -> RolloutStatus: ...
    def fleet_rollback(self, from_id: str, to_id: Any, reason: str) -> RolloutStatus: ...


# relay(digests) sends those blobs from PUBLIC to OMEGA and returns the bytes moved
Relay = Callable[[list[str]], int]


@dataclass(frozen=True)
class ApproveResult:
    deployment: Deployment
    approvals: list[dict[str, Any]]
    required: int
    counted: bool  # False when this approver had already approved
    rollout: dict[str, Any] | None = None
    bytes_relayed: int = 0
    notes: list[str] = field(default_factory=list)
    holding: int | None = None  # of the approvals, those the root of trust counts (if any)

    @property
    def valid(self) -> int:
        """The approvals that count toward the policy: one per person (names compared
        ignoring case), or those the root of trust counts."""
        return people(self.approvals) if self.holding is None else self.holding

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": self.deployment.id,
            "state": self.deployment.state.value,
            "approvals": self.approvals,
            "required": self.required,
            "counted": self.counted,
            "holding": self.holding,
            "not_counted": self.notes,  # why, where the root of trust counts fewer
            "rollout": self.rollout,
            "bytes_relayed": self.bytes_relayed,
        }


# Of a deployment and its signed approval statements, how many hold under the root of trust
# and why the others do not (the caller, which knows the root, counts; ops/approve.py).
Holding = Callable[[Deployment, list[dict[str, Any]]], tuple[int, list[str]]]


def approve(
    wf: Workflow,
    update_id: str,
    policy: ApprovalPolicy,
    comment: str | None = None,
    statement: dict[str, Any] | None = None,
    holding: Holding | None = None,
    to: str | None = None,
    targets: str | None = None,
) -> ApproveResult:
    """Record the actor's approval (with their signed approval ``statement``, already
    checked against the root of trust by the caller); move to ``approved`` when the policy
    is met: when ``holding`` is given, by the approvals it says hold (a deployment called
    approved with fewer than the chain counts could never be released, nor cancelled).
    ``to``, a label selector (``deploy approve --to``), is kept with the deployment once the
    approver passed the policy's checks: a refused approver re-targets nothing.
    ``targets``, the selector the release goes to as this approval sees it (``to``, an
    earlier approver's, or ``[distribution] to``; None: every mainframe), is kept as the
    deployment's ``to`` once it is approved: whoever resumes the release later sends it there.

    One transaction from the state read to the move: of approvers racing, those who find the
    deployment approved already are refused (exit 3) and nothing of theirs is recorded.
    """
    validate_update_id(update_id)
    check_comment(comment)
    with wf.store.atomic():
        return _approve(wf, update_id, policy, comment, statement, holding, to, targets)


def check_comment(comment: str | None) -> None:
    """Refuse (:class:`InvalidInput`) an approval's comment over 1,000 characters or with
    control characters: checked whatever state the deployment is in."""
    if comment is not None and len(comment) > 1000:
        raise InvalidInput("--comment must be at most 1000 characters")
    if comment is not None:
        check_text(comment, "--comment", lines=True)


def people(approvals: list[dict[str, Any]]) -> int:
    """How many people recorded ``approvals`` (names compared ignoring case)."""
    return len({same_person(a["user"]) for a in approvals})


def _approve(
    wf: Workflow,
    update_id: str,
    policy: ApprovalPolicy,
    comment: str | None,
    statement: dict[str, Any] | None,
    holding: Holding | None,
    to: str | None,
    targets: str | None = None,
) -> ApproveResult:
    dep = wf.store.require(update_id)
    check_transition(update_id, dep.state, State.APPROVED)
    if policy.approvers and same_person(wf.actor) not in {same_person(a) for a in policy.approvers}:
        raise PolicyRefused(
            f"{wf.actor} is not an approver of this project (approvers: "
            f"{', '.join(policy.approvers)})",
            update_id=update_id,
        )
    if not policy.allow_self_approval and same_person(wf.actor) == same_person(dep.created_by):
        raise PolicyRefused(
            f"{wf.actor} pushed {update_id} and may not approve it too "
            "([approval] allow_self_approval = false); ask another approver",
            update_id=update_id,
        )
    if to is not None:
        wf.store.update_details(update_id, {"to": to}, wf.now())
    actor = next(  # as this person's approval was recorded first: one person, one row
        (a["user"] for a in wf.store.approvals(update_id)
         if same_person(a["user"]) == same_person(wf.actor)),
        wf.actor,
    )  # fmt: skip
    counted = wf.store.add_approval(update_id, actor, wf.now(), comment, statement)
    approvals = wf.store.approvals(update_id)
    held: int | None = None
    notes: list[str] = []
    if holding is not None:
        held, notes = holding(dep, wf.store.approval_statements(update_id))
    if (people(approvals) if held is None else held) >= policy.required:
        approvers = [a["user"] for a in approvals]
        dep = wf.move(  # (an event's "to" is the state it moved to: the selector has its own)
            update_id,
            State.APPROVED,
            details={"approvers": approvers, "selector": targets},
            details_update={"approvers": approvers, "to": targets},
        )
    return ApproveResult(dep, approvals, policy.required, counted, notes=notes, holding=held)


def release(
    wf: Workflow,
    update_id: str,
    omega: OmegaPort,
    manifest_bytes: bytes,
    blob_digests: Sequence[str],
    relay: Relay,
    distribution: DistributionPolicy,
    resume: bool = False,
    chain: dict[str, Any] | None = None,
) -> tuple[Deployment, dict[str, Any], int]:
    """``approved -> releasing -> distributing``: send, counter-sign, activate, start rollout
    (to the first of ``distribution.regions``' OMEGAs, when it names regions).

    Every step is idempotent on OMEGA, so ``resume=True`` re-runs them for a deployment a
    killed ``deploy approve`` left in ``releasing``. OMEGA (or PUBLIC, relaying) going away
    mid-release leaves ``releasing`` too (:class:`Interrupted`; the event
    ``release.interrupted`` says why); OMEGA's refusal moves it to ``failed``. What OMEGA
    ran before is recorded first (``omega_previous``): a resumed release may find its own
    release already active there. ``chain`` (``evidence`` and the root ``roots``) joins the
    approval record: OMEGA and every mainframe check it themselves.
    """
    dep = wf.store.require(update_id) if resume else wf.move(update_id, State.RELEASING)
    crash_point("release.started")
    regions = distribution.regions
    try:
        omega_previous, rollout, relayed = _send(
            wf, dep, omega, manifest_bytes, blob_digests, relay, distribution, chain,
            regions[0] if regions else None,
        )  # fmt: skip
    except AshatError as e:
        if isinstance(e, RemoteError) and e.transient:
            raise Interrupted(
                e, update_id, State.RELEASING.value, f"deploy approve {update_id}"
            ) from e
        wf.fail(update_id, e)
        raise
    crash_point("release.rollout")
    facts = {
        "rollout_id": rollout.get("rollout_id"),
        "omega_previous": omega_previous,
        "released_by": wf.actor,  # who the rollout's outcome is recorded as caused by
    }
    if regions:
        facts |= {"region": regions[0], "regions": list(regions), "regions_done": []}
    dep = wf.move(update_id, State.DISTRIBUTING, details=facts, details_update=facts)
    return dep, rollout, relayed


def release_region(
    wf: Workflow,
    update_id: str,
    region: str,
    omega: OmegaPort,
    manifest_bytes: bytes,
    blob_digests: Sequence[str],
    relay: Relay,
    distribution: DistributionPolicy,
    chain: dict[str, Any] | None = None,
) -> tuple[Deployment, dict[str, Any], int]:
    """The previous region completed (:func:`reconcile` says ``next_region``): the same
    release to ``region``'s OMEGA, with the same waves and budget. The deployment stays
    ``distributing``; a transient failure is :class:`Interrupted` (``deploy approve`` goes
    on), a refusal ends it ``distribution_failed``: the regions after it get nothing."""
    dep = wf.store.require(update_id)
    if dep.details.get("next_region") != region:
        raise AssertionError(f"{update_id}: {region} is not the region to release next")
    try:
        omega_previous, rollout, relayed = _send(
            wf, dep, omega, manifest_bytes, blob_digests, relay, distribution, chain, region
        )
    except AshatError as e:
        if isinstance(e, RemoteError) and e.transient:
            raise Interrupted(
                e, update_id, State.DISTRIBUTING.value, f"deploy approve {update_id}"
            ) from e
        wf.move(
            update_id,
            State.DISTRIBUTION_FAILED,
            reason=f"region {region}: {e.message}"[:500],
            details={"region": region, "kind": e.kind},
        )
        raise
    facts = {
        "rollout_id": rollout.get("rollout_id"),
        "omega_previous": omega_previous,
        "region": region,
        "next_region": None,
    }
    wf.store.update_details(update_id, facts, wf.now())
    wf.note(update_id, "region.released", {"region": region, **facts})
    return wf.store.require(update_id), rollout, relayed


def _send(
    wf: Workflow,
    dep: Deployment,
    omega: OmegaPort,
    manifest_bytes: bytes,
    blob_digests: Sequence[str],
    relay: Relay,
    distribution: DistributionPolicy,
    chain: dict[str, Any] | None,
    region: str | None,
) -> tuple[Any, dict[str, Any], int]:
    """To one OMEGA: the blobs it lacks, the manifest, the counter-signature, activation,
    the rollout. Returns what OMEGA ran before, the rollout and the bytes relayed."""
    update_id = dep.id
    where = {"region": region} if region else {}
    previous_key = f"omega_previous@{region}" if region else "omega_previous"
    staged = False
    try:
        omega_previous = wf.remember(dep, previous_key, lambda: omega.health().get("current"))
        missing = omega.missing(sorted(set(blob_digests)))
        relayed = relay(missing)
        wf.note(
            update_id,
            "release.uploaded",
            {"blobs_sent": len(missing), "bytes_sent": relayed, **where},
        )
        crash_point("release.uploaded")
        omega.stage(manifest_bytes)
        staged = True
        record = {
            "update_id": update_id,
            "sequence": dep.details.get("sequence"),
            "approvers": wf.store.approvals(update_id),
            "approved_at": wf.now(),
            **(chain or {}),
        }
        signed = omega.countersign(update_id, record)
        wf.note(
            update_id,
            "release.countersigned",
            {"approval_keyid": signed.get("approval_keyid"), **where},
        )
        crash_point("release.countersigned")
        if omega_previous != update_id:
            omega.activate(update_id)
        crash_point("release.activated")
        rollout = dict(omega.start_rollout(update_id, distribution.to_json()))
    except AshatError as e:
        err: AshatError = e
        if staged and e.kind == "no_such_release":  # staged on one replica, asked of another
            err = OmegaApart(update_id, configure_args(omega_tier(region)))
        if isinstance(err, RemoteError) and err.transient:
            wf.note(
                update_id,
                "release.interrupted",
                {"error": err.message[:500], "kind": err.kind, **where},
            )
        if err is not e:
            raise err from e
        raise
    return omega_previous, rollout, relayed


def rollout_status(omega: OmegaPort, rollout_id: str) -> dict[str, Any]:
    return dict(omega.rollout_status(rollout_id))


def restore_omega(omega: OmegaPort, update_id: str, previous: Any) -> None:
    """Put OMEGA back on ``previous`` if it still runs ``update_id`` (idempotent: OMEGA also
    follows an automatic rollback of its fleet by itself, and may have gone meanwhile)."""
    if previous and omega.health().get("current") == update_id:
        try:
            omega.rollback(from_id=update_id, to_id=str(previous))
        except Refused:
            if omega.health().get("current") == update_id:
                raise


def released_by(dep: Deployment) -> str | None:
    """Who started the deployment's rollout: what it leads to is theirs, whoever's request
    happens to see it (``observed_by``)."""
    who = dep.details.get("released_by")
    return str(who) if who else None


def reconcile(
    wf: Workflow, update_id: str, omega: OmegaPort
) -> tuple[Deployment, dict[str, Any] | None]:
    """Move a distributing deployment on from what OMEGA reports; return it and the rollout."""
    dep = wf.store.require(update_id)
    rollout_id = dep.details.get("rollout_id")
    if dep.state not in (State.DISTRIBUTING, State.DISTRIBUTION_FAILED) or not rollout_id:
        return dep, None
    status = rollout_status(omega, str(rollout_id))
    cause = released_by(dep)
    if dep.state is State.DISTRIBUTING:
        later = regions_after(dep)
        if status.get("state") == "completed" and later:
            return _region_completed(wf, dep, status, later[0])
        if status.get("state") == "completed":
            dep = wf.move(
                update_id,
                State.COMPLETED,
                details={"totals": status.get("totals")},
                caused_by=cause,
            )
        elif status.get("state") in ("failed", "cancelled"):
            dep = wf.move(
                update_id,
                State.DISTRIBUTION_FAILED,
                reason=str(status.get("reason") or "rollout failed")[:500],
                details={"totals": status.get("totals"), "failures": status.get("failures")},
                details_update={"rollback_rollout_id": status.get("rollback_rollout_id")},
                caused_by=cause,
            )
    if dep.state is State.DISTRIBUTION_FAILED and status.get("rollback_rollout_id"):
        back = rollout_status(omega, str(status["rollback_rollout_id"]))
        status = {**status, "rollback": back}
        if back.get("state") == "completed":
            # the fleet is back; OMEGA itself must not keep serving the release undone
            restore_omega(omega, update_id, dep.details.get("omega_previous"))
            dep = wf.move(
                update_id,
                State.ROLLED_BACK,
                reason="automatic rollback after the failure budget broke",
                details={"restored": back.get("update_id"), "totals": back.get("totals")},
                caused_by=cause,
            )
        elif back.get("state") in ("failed", "cancelled"):
            raise OperationFailed(
                f"the automatic rollback of {update_id} did not complete: {back.get('reason')}"
            )
    return dep, status


def regions_after(dep: Deployment) -> list[str]:
    """The regions still to get the release after the one it is in (none without regions)."""
    regions = [str(r) for r in dep.details.get("regions") or []]
    region = dep.details.get("region")
    return regions[regions.index(region) + 1 :] if region in regions else []


def _region_completed(
    wf: Workflow, dep: Deployment, status: dict[str, Any], next_region: str
) -> tuple[Deployment, dict[str, Any]]:
    """The rollout in ``dep``'s region completed: record it once; ``next_region`` is to be
    released (by :func:`release_region`, which ``deploy approve`` runs)."""
    region = str(dep.details.get("region"))
    if dep.details.get("next_region") != next_region:
        done = [*(dep.details.get("regions_done") or [])]
        done.append(
            {
                "region": region,
                "rollout_id": dep.details.get("rollout_id"),
                "omega_previous": dep.details.get("omega_previous"),
                "totals": status.get("totals"),
            }
        )
        wf.store.update_details(
            dep.id, {"regions_done": done, "next_region": next_region}, wf.now()
        )
        wf.note(
            dep.id,
            "region.completed",
            {"region": region, "next": next_region, "totals": status.get("totals")},
            caused_by=released_by(dep),
        )
        dep = wf.store.require(dep.id)
    return dep, {**status, "region": region, "next_region": next_region}


def region_summary(details: dict[str, Any], state: str) -> str:
    """``eu completed, us distributing, ap not started``: where a release is, region by
    region, from its deployment's details."""
    done = {str(d.get("region")) for d in details.get("regions_done") or []}
    current, pending = details.get("region"), details.get("next_region")
    parts = []
    for region in map(str, details.get("regions") or []):
        if region in done:
            parts.append(f"{region} completed")
        elif region == pending:
            parts.append(f"{region} next (deploy approve releases it)")
        elif region == current:
            parts.append(f"{region} {state}")
        else:
            parts.append(f"{region} not started")
    return ", ".join(parts)


FLEET_ROLLBACK_FROM = frozenset({State.COMPLETED, State.DISTRIBUTION_FAILED})


def start_fleet_rollback(
    wf: Workflow, update_id: str, omega: OmegaPort, reason: str | None
) -> dict[str, Any]:
    """Send OMEGA and every mainframe running ``update_id`` back to the release before it.

    Returns the rollback rollout's status; :func:`finish_fleet_rollback` waits for it.
    """
    dep = wf.store.require(update_id)
    check_transition(update_id, dep.state, State.ROLLED_BACK)
    previous = dep.details.get("omega_previous")
    rollout = dict(omega.fleet_rollback(update_id, previous, reason or "operator rollback"))
    crash_point("rollback.requested")
    # kept at once: a re-run (deploy killed, OMEGA away) follows this rollout, not a new one
    wf.store.update_details(update_id, {"rollback_rollout_id": rollout.get("rollout_id")}, wf.now())
    restore_omega(omega, update_id, previous)
    wf.note(
        update_id,
        "rollback.started",
        {"rollout_id": rollout.get("rollout_id"), "to": rollout.get("update_id")},
    )
    return rollout


def finish_fleet_rollback(
    wf: Workflow, update_id: str, omega: OmegaPort, rollout_id: str, reason: str | None
) -> tuple[Deployment, dict[str, Any]]:
    """Move to ``rolled_back`` once the rollback rollout completed; else say what failed."""
    status = rollout_status(omega, rollout_id)
    if status.get("state") == "running":
        return wf.store.require(update_id), status
    if status.get("state") != "completed":
        raise OperationFailed(
            f"the rollback of {update_id} did not complete ({status.get('state')}): "
            f"{status.get('reason')}"
        )
    return settle_fleet_rollback(wf, update_id, status, reason), status


def settle_fleet_rollback(
    wf: Workflow, update_id: str, status: dict[str, Any], reason: str | None
) -> Deployment:
    """``rolled_back``, by the rollback rollout of ``status``: one that completed, or one
    that ended short of mainframes which all rolled back since (late, as they came back)."""
    return wf.move(
        update_id,
        State.ROLLED_BACK,
        reason=reason or "rolled back by operator",
        details={"restored": status.get("update_id"), "totals": status.get("totals")},
    )
