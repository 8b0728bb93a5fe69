"""Reading deployments: one with everything known about it (checks, approvals, leases,
events, and for a running rollout what OMEGA says, moving the deployment on), and the
fleet as OMEGA sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ashat.ops.project import Project, client_for
from ashat.workflow.models import Deployment, Event, Lease
from ashat.workflow.states import allowed_next

if TYPE_CHECKING:
    from ashat.transport.client import AgentClient

OMEGA_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class StatusView:
    deployment: Deployment
    events: list[Event]  # the newest, oldest first
    leases: list[Lease]  # those it holds
    checks: list[dict[str, Any]]  # the latest result of each check
    approvals: list[dict[str, Any]]
    rollout: dict[str, Any] | None  # OMEGA's status of its (newest) rollout
    rollout_note: str | None  # why the rollout's progress is unknown
    rollouts: list[dict[str, Any]] = field(default_factory=list)  # all, forward and back
    fleet: dict[str, Any] | None = None  # fleet_summary() of its OMEGA's mainframes

    @property
    def next(self) -> list[str]:
        return sorted(s.value for s in allowed_next(self.deployment.state))

    def to_json(self) -> dict[str, Any]:
        """``deploy status <id> --json``."""
        return {
            "deployment": self.deployment.to_json(),
            "next": self.next,
            "leases": [le.to_json() for le in self.leases],
            "checks": self.checks,
            "rollout": self.rollout,
            "rollout_note": self.rollout_note,
            "rollouts": self.rollouts,
            "fleet": self.fleet,
            "events": [e.to_json() for e in self.events],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StatusView:
        """The inverse of :meth:`to_json` (with ``approvals`` when the API sent them)."""
        return cls(
            deployment=Deployment.from_json(d["deployment"]),
            events=[Event.from_json(e) for e in d["events"]],
            leases=[Lease.from_json(le) for le in d["leases"]],
            checks=d["checks"],
            approvals=d.get("approvals") or [],
            rollout=d.get("rollout"),
            rollout_note=d.get("rollout_note"),
            rollouts=d.get("rollouts") or [],
            fleet=d.get("fleet"),
        )


def refresh_rollout(
    project: Project, dep: Deployment, actor: str | None = None
) -> tuple[Deployment, dict[str, Any] | None, str | None]:
    """Ask OMEGA how the rollout goes and move the deployment on (best effort)."""
    from ashat.errors import InvalidInput
    from ashat.ops.rollback import reconcile_following
    from ashat.transport.errors import TransportError

    try:
        server = project.omega_of(dep)
    except InvalidInput as e:
        return dep, None, f"{e.message}: progress unknown"
    try:
        with client_for(server, timeout_s=OMEGA_TIMEOUT_S) as omega:
            wf = project.workflow(actor)
            dep, rollout = reconcile_following(project, wf, dep.id, omega)
    except TransportError as e:
        return dep, None, f"OMEGA unreachable ({e.message}): showing the last known state"
    return dep, rollout, None


def deployment_status(
    project: Project, update_id: str, *, actor: str | None = None, events: int = 10
) -> StatusView:
    """``update_id`` with its last ``events`` events. Raises InvalidInput or NotFound."""
    wf = project.reader(actor)  # a running rollout is moved on by refresh_rollout's own
    dep, _ = wf.status(update_id)
    rollout, note = None, None
    if dep.state.value in ("distributing", "distribution_failed"):
        dep, rollout, note = refresh_rollout(project, dep, actor)
    rollouts: list[dict[str, Any]] = []
    fleet = None
    if dep.details.get("rollout_id") and note is None:
        rollouts, note = rollouts_of(project, dep.id, dep)
        installs = [r for r in rollouts if r.get("kind") == "install"]
        if rollout is None and installs:
            rollout = installs[-1]
        if note is None:
            fleet = _fleet_of(project, dep)
    store = project.store
    return StatusView(
        deployment=dep,
        events=store.events(dep.id, limit=events),
        leases=[le for le in store.leases() if le.deployment_id == dep.id],
        checks=store.latest_checks(dep.id),
        approvals=store.approvals(dep.id),
        rollout=rollout,
        rollout_note=note,
        rollouts=rollouts,
        fleet=fleet,
    )


MAX_APART_SHOWN = 10


def fleet_summary(mainframes: list[dict[str, Any]]) -> dict[str, Any]:
    """The fleet side by side: each release it runs, on how many mainframes and how their
    apps fare (two groups on two releases compare here), and the mainframes that do not
    run what they should yet, each with the rule that decides it."""
    releases: dict[str, dict[str, Any]] = {}
    apart = []
    for m in mainframes:
        current = m.get("current") or None
        row = releases.setdefault(
            current or "", {"update_id": current, "mainframes": 0, "healthy": 0, "unhealthy": 0,
                      "restarts": 0},
        )  # fmt: skip
        row["mainframes"] += 1
        app = m.get("app")
        if app == "healthy":
            row["healthy"] += 1
        elif app in ("unhealthy", "crash_loop", "restarting"):
            row["unhealthy"] += 1
        row["restarts"] += int(m.get("app_restarts") or 0)
        if "desired" in m and (m.get("desired") or None) != current:
            apart.append({k: m.get(k) for k in ("mainframe_id", "current", "desired", "rule")})
    return {
        "releases": sorted(
            releases.values(), key=lambda r: (-r["mainframes"], r["update_id"] or "")
        ),
        "apart": apart[:MAX_APART_SHOWN],
        "apart_count": len(apart),
    }


def _fleet_of(project: Project, dep: Deployment) -> dict[str, Any] | None:
    """:func:`fleet_summary` of the OMEGA the deployment is on (best effort: None)."""
    from ashat.errors import AshatError

    try:
        with client_for(project.omega_of(dep), timeout_s=OMEGA_TIMEOUT_S) as omega:
            return fleet_summary(omega.mainframes())
    except AshatError:
        return None


def rollouts_of(
    project: Project, update_id: str, dep: Deployment | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Every rollout of a release as OMEGA keeps them (install and rollback, oldest first;
    with regions, each region's in the order they got it, each marked with its region), or
    why they cannot be shown (best effort: a status is never refused for it)."""
    from ashat.errors import AshatError
    from ashat.ids import omega_tier

    regions = [str(r) for r in (dep.details.get("regions") or [])] if dep else []
    if not regions:
        try:
            with omega_client(project) as omega:
                return [dict(r) for r in omega.rollouts_of(update_id)], None
        except AshatError as e:
            return [], f"OMEGA did not answer ({e.message}): its rollouts are not shown"
    out: list[dict[str, Any]] = []
    for region in regions:
        try:
            server = project.require_server(omega_tier(region))
            with client_for(server, timeout_s=OMEGA_TIMEOUT_S) as omega:
                out += [{**r, "region": region} for r in omega.rollouts_of(update_id)]
        except AshatError as e:
            return out, f"OMEGA ({region}) did not answer ({e.message}): its rollouts are not shown"
    return out, None


def omega_client(project: Project) -> AgentClient:
    """A client of OMEGA. Raises InvalidInput (not configured)."""
    return client_for(project.require_server("omega"), timeout_s=OMEGA_TIMEOUT_S)


def fleet_mainframes(project: Project) -> dict[str, Any]:
    """OMEGA's registry of Licensed Mainframes (``{"mainframes": [...]}``)."""
    with omega_client(project) as omega:
        return {"mainframes": omega.mainframes()}


def rollout_status(project: Project, rollout_id: str) -> dict[str, Any]:
    """OMEGA's status of one rollout (waves, totals, failures)."""
    from ashat.errors import InvalidInput
    from ashat.ids import UPDATE_ID_RE

    if UPDATE_ID_RE.fullmatch(rollout_id) is None:  # rollout ids are ro-<hex>: a subset
        raise InvalidInput(f"invalid rollout id {rollout_id[:80]!r}")
    with omega_client(project) as omega:
        return dict(omega.rollout_status(rollout_id))


LIVE_TIMEOUT_S = 2.0


def live_releases(project: Project) -> dict[str, list[str]]:
    """Where each release runs now, as the servers themselves say: ``PUBLIC``, ``OMEGA`` and
    ``fleet N/M`` (N of OMEGA's M mainframes), by update id. Best effort: a server that does
    not answer within LIVE_TIMEOUT_S is left out (the servers page says why)."""
    from ashat.transport.errors import TransportError

    live: dict[str, list[str]] = {}
    for s in sorted(project.store.servers(), key=lambda s: s.tier != "public"):
        try:
            with client_for(s, timeout_s=LIVE_TIMEOUT_S, retries=0) as client:
                current = client.health().get("current")
                if current:
                    live.setdefault(str(current), []).append(s.tier.upper())
                if s.tier != "omega":
                    continue
                rows = client.mainframes()
        except TransportError:
            continue
        counts: dict[str, int] = {}
        for m in rows:
            if m.get("current"):
                counts[str(m["current"])] = counts.get(str(m["current"]), 0) + 1
        for update_id, n in counts.items():
            live.setdefault(update_id, []).append(f"fleet {n}/{len(rows)}")
    return live


def check_servers(project: Project) -> dict[str, dict[str, Any]]:
    """Each configured tier's ``/v1/health`` and whether it takes our token (an
    authenticated route that changes nothing: ``GET /v1/releases``), or why not."""
    from ashat.transport.errors import TransportError, Unauthorized

    results: dict[str, dict[str, Any]] = {}
    for s in project.store.servers():
        try:
            with client_for(s, timeout_s=5.0) as client:
                health = client.health()
                results[s.tier] = {"reachable": True, "health": health, "authorized": True}
                try:
                    client.releases()
                except Unauthorized:
                    results[s.tier]["authorized"] = False
                    results[s.tier]["error"] = (
                        "reachable, but it refused our token: deploy configure "
                        f"{s.tier} {s.url} {s.name} --token-file FILE"
                    )
        except TransportError as e:
            results[s.tier] = {"reachable": False, "error": e.message}
    return results
