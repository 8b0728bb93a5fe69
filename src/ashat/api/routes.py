"""The API's operations: what each needs (role, parameters, body) and what it does.

Each :class:`Endpoint` is both a route and its OpenAPI description (:mod:`.openapi`), so
the two cannot disagree. Handlers are plain functions run in a worker thread with a
:class:`Call` (a project with its own store connection, the authenticated user, the parsed
parameters and body); they call :mod:`ashat.ops` and the workflow services exactly as the
``deploy`` verbs do, acting as the authenticated user.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ashat import __version__
from ashat.api.errors import ApiFailure
from ashat.api.schemas import STATES, TIER_PATTERN, UPDATE_ID_PATTERN, USER_NAME_PATTERN
from ashat.errors import AshatError
from ashat.ops.project import Project
from ashat.ops.users import UserRole
from ashat.store.users import User

if TYPE_CHECKING:
    from ashat.ops.push import SpoolQuota


@dataclass
class Call:
    project: Project
    user: User | None
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any]
    spool_quota: SpoolQuota = field(default_factory=lambda: _default_quota())

    @property
    def actor(self) -> str:
        assert self.user is not None  # every route that acts needs a user
        return self.user.name


def _default_quota() -> SpoolQuota:
    from ashat.ops.push import SpoolQuota

    return SpoolQuota()


Handler = Callable[[Call], "tuple[int, dict[str, Any]]"]
# An operation whose body is a stream (a pack of blobs), not JSON: it reads it itself.
StreamHandler = Callable[[Call, "AsyncIterator[bytes]"], "Awaitable[tuple[int, dict[str, Any]]]"]


@dataclass(frozen=True)
class Param:
    """A path or query parameter: its JSON Schema, and for a query its default."""

    name: str
    where: str  # "path" | "query"
    schema: dict[str, Any]
    description: str = ""
    default: Any = None


MAX_BODY_BYTES = 64 * 1024  # bytes of a JSON request body, unless an endpoint says more


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    role: UserRole | None  # None: open to anyone
    response: str  # the component schema of a 2xx answer
    status: int = 200
    params: tuple[Param, ...] = ()
    body: str | None = None  # the component schema of the request body
    body_required: bool = False
    errors: tuple[int, ...] = ()  # the error statuses it may answer besides auth
    tags: tuple[str, ...] = field(default=())
    max_body: int = MAX_BODY_BYTES
    stream: StreamHandler | None = None  # reads an octet-stream body instead of JSON


UPDATE_ID = Param(
    "update_id", "path", {"type": "string", "pattern": UPDATE_ID_PATTERN}, "a deployment's id"
)
USER = Param("name", "path", {"type": "string", "pattern": USER_NAME_PATTERN}, "a user's name")


# -- handlers -----------------------------------------------------------------------------


def health(call: Call) -> tuple[int, dict[str, Any]]:
    return 200, {"status": "ok", "version": __version__}


def me(call: Call) -> tuple[int, dict[str, Any]]:
    assert call.user is not None
    return 200, {"name": call.user.name, "role": call.user.role}


def list_deployments(call: Call) -> tuple[int, dict[str, Any]]:
    wf = call.project.workflow(call.actor)
    deps = wf.history(call.query["limit"], call.query["state"])
    return 200, {"deployments": [d.to_json() for d in deps]}


def overview(call: Call) -> tuple[int, dict[str, Any]]:
    ov = call.project.workflow(call.actor).overview()
    return 200, {
        "active": [d.to_json() for d in ov.active],
        "recent": [d.to_json() for d in ov.recent],
        "leases": [le.to_json() for le in ov.leases],
    }


def get_deployment(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.status import deployment_status

    view = deployment_status(
        call.project, call.path["update_id"], actor=call.actor, events=call.query["events"]
    )
    return 200, {**view.to_json(), "approvals": view.approvals}


def deployment_events(call: Call) -> tuple[int, dict[str, Any]]:
    update_id = call.path["update_id"]
    events = call.project.workflow(call.actor).log(update_id)
    return 200, {"update_id": update_id, "events": [e.to_json() for e in events]}


def verify(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.verify import run_verify

    only = call.body.get("only") or None
    result = run_verify(call.project, call.path["update_id"], only, actor=call.actor)
    if not result.passed:
        raise ApiFailure(
            f"verification failed: {result.deployment.reason or 'a check failed'}",
            "verification_failed",
            result.to_json(),
        )
    return 200, result.to_json()


def blobs_missing(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.push import blobs_missing as missing

    return 200, {"missing": missing(call.project, call.body["digests"], call.actor)}


async def upload_pack(call: Call, chunks: AsyncIterator[bytes]) -> tuple[int, dict[str, Any]]:
    from ashat.ops.push import receive_upload

    return 200, await receive_upload(call.project, call.actor, call.spool_quota, chunks)


def push(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.push import push_uploaded

    steps: list[dict[str, str]] = []
    try:
        result = push_uploaded(
            call.project,
            call.path["update_id"],
            call.body["description"],
            call.body["manifest"],
            actor=call.actor,
            step=lambda name, detail: steps.append({"step": name, "detail": detail}),
            tasks=call.body.get("tasks") or (),
        )
    except AshatError as e:
        if steps:  # what was done before it failed, as a local push prints it
            e.details["steps"] = steps
        raise
    return 201, {**result.to_json(), "steps": steps}


def approve(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.approve import run_approve

    update_id = call.path["update_id"]
    wait = bool(call.body.get("wait", False))
    outcome = run_approve(
        call.project,
        update_id,
        actor=call.actor,
        comment=call.body.get("comment"),
        wait=wait,
        statement=call.body.get("statement"),
        to=call.body.get("to"),
    )
    data = {**outcome.data, "waiting_for": outcome.waiting_for}
    data.setdefault("state", outcome.state)
    if outcome.state in ("distribution_failed", "rolled_back"):
        reason = outcome.deployment.reason or "the rollout failed"
        raise ApiFailure(f"distribution {outcome.state}: {reason}", "distribution_failed", data)
    if wait and outcome.followed and outcome.state == "distributing":
        raise ApiFailure(
            f"gave up waiting; the rollout goes on: GET /v1/deployments/{update_id}",
            "still_distributing",
            data,
        )
    return 200, data


def approval_to_sign(call: Call) -> tuple[int, dict[str, Any]]:
    """What the authenticated approver's key ``keyid`` is to sign (``deploy --via approve
    --key`` signs it on the client and sends it back with ``approve``)."""
    from ashat.ops.approve import approval_to_sign as to_sign
    from ashat.ops.approve import approver_of_key
    from ashat.trust.statements import APPROVAL_NAMESPACE
    from ashat.workflow.errors import PolicyRefused

    update_id = call.path["update_id"]
    name = approver_of_key(call.project, update_id, call.body["keyid"])
    if name != call.actor:
        raise PolicyRefused(
            f"key {call.body['keyid']} is {name}'s; {call.actor} may not approve with it",
            update_id=update_id,
        )
    signed = to_sign(call.project, update_id, name, call.body.get("comment"))
    verification = call.project.reader().store.require(update_id).details.get("verification")
    return 200, {"signed": signed, "namespace": APPROVAL_NAMESPACE, "verification": verification}


def rollback(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.rollback import run_rollback

    outcome = run_rollback(
        call.project, call.path["update_id"], call.body.get("reason"), actor=call.actor
    )
    return 200, outcome.data


def rollout_action(action: str) -> Handler:
    """``deploy pause|resume|abort|retry`` (:mod:`ashat.ops.rollout_control`)."""

    def handler(call: Call) -> tuple[int, dict[str, Any]]:
        from ashat.ops.rollout_control import control_rollout

        outcome = control_rollout(
            call.project, call.path["update_id"], action, call.body.get("reason"), actor=call.actor
        )
        return 200, outcome.to_json()

    return handler


def cancel(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.cancel import run_cancel

    outcome = run_cancel(
        call.project, call.path["update_id"], call.body.get("reason"), actor=call.actor
    )
    return 200, outcome.to_json()


def list_servers(call: Call) -> tuple[int, dict[str, Any]]:
    rows = call.project.store.servers()
    results: dict[str, dict[str, Any]] = {}
    if call.query["check"]:
        from ashat.ops.status import check_servers

        results = check_servers(call.project)
    return 200, {"servers": [{**s.to_json(), **results.get(s.tier, {})} for s in rows]}


def configure_server(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.servers import configure_server as configure

    b = call.body
    server, old = configure(
        call.project,
        call.path["tier"],
        b["url"],
        b["name"],
        token=b.get("token"),
        keep_ca_cert=True,  # a file on this machine: set with deploy configure --ca-cert
        actor=call.actor,
    )
    return 200, {"server": server.to_json(), "replaced": old.to_json() if old else None}


def audit_verify(call: Call) -> tuple[int, dict[str, Any]]:
    report = call.project.workflow(call.actor).audit_verify(call.query["at"])
    if not report.ok:
        raise ApiFailure(
            f"audit chain broken at event #{report.broken_seq}: {report.reason}",
            "audit_broken",
            report.to_json(),
        )
    return 200, report.to_json()


def fleet_mainframes(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.status import fleet_mainframes as mainframes

    return 200, mainframes(call.project)


def rollout(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.status import rollout_status

    return 200, rollout_status(call.project, call.path["rollout_id"])


def list_users(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.users import list_users as users

    return 200, {"users": [u.to_json() for u in users(call.project)]}


def add_user(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.users import add_user as add

    user = add(call.project, call.body["name"], call.body["role"], actor=call.actor)
    return 201, user.to_json()


def user_token(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.ops.users import issue_token

    user, token = issue_token(call.project, call.path["name"], actor=call.actor)
    return 200, {"user": user.to_json(), "token": token}


def remove_user(call: Call) -> tuple[int, dict[str, Any]]:
    from ashat.errors import Refused
    from ashat.ops.users import remove_user as remove

    if call.path["name"] == call.actor:
        raise Refused(f"{call.actor} cannot remove themselves: ask another admin")
    return 200, {"removed": remove(call.project, call.path["name"], actor=call.actor).to_json()}


# -- the table ----------------------------------------------------------------------------

V, D, A, ADMIN = UserRole.VIEWER, UserRole.DEPLOYER, UserRole.APPROVER, UserRole.ADMIN
ACTS = (400, 404, 409, 422, 502)  # what an operation on a deployment may answer

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/health", "health", "Liveness", health, None, "Health"),
    Endpoint("GET", "/v1/me", "me", "The authenticated user and role", me, V, "Me"),
    Endpoint(
        "GET",
        "/v1/deployments",
        "listDeployments",
        "Deployments, newest first (deploy history)",
        list_deployments,
        V,
        "DeploymentList",
        params=(
            Param(
                "limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "how many", 20
            ),
            Param("state", "query", {"enum": STATES}, "only in this state"),
        ),
        errors=(400,),
    ),
    Endpoint(
        "GET",
        "/v1/status",
        "overview",
        "What is in flight, tier leases, recently ended",
        overview,
        V,
        "Overview",
    ),
    Endpoint(
        "GET",
        "/v1/deployments/{update_id}",
        "getDeployment",
        "One deployment: state, next states, checks, approvals, leases, last events, and "
        "the rollout as OMEGA reports it (moving the deployment on, as deploy status does)",
        get_deployment,
        V,
        "DeploymentStatus",
        params=(
            UPDATE_ID,
            Param(
                "events",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 1000},
                "how many of the newest events",
                50,
            ),
        ),
        errors=(400, 404, 409, 422),
    ),
    Endpoint(
        "GET",
        "/v1/deployments/{update_id}/events",
        "deploymentEvents",
        "Every audit event of one deployment (deploy log)",
        deployment_events,
        V,
        "EventList",
        params=(UPDATE_ID,),
        errors=(400, 404),
    ),
    Endpoint(
        "POST",
        "/v1/blobs/missing",
        "blobsMissing",
        "Of these digests, those neither uploaded for a push nor on PUBLIC (as an agent "
        "answers it: deploy --via URL push uploads only those)",
        blobs_missing,
        D,
        "BlobsMissing",
        body="BlobsMissingRequest",
        body_required=True,
        errors=(400, 502),
        max_body=4 * 1024 * 1024,
    ),
    Endpoint(
        "POST",
        "/v1/blobs/pack",
        "uploadPack",
        "Upload blobs for a push, in the agent's pack format (<sha256> <size>\\n, then the "
        "bytes, repeated); each is checked against its digest, all or none are kept",
        push,  # not called: stream is
        D,
        "PackStored",
        errors=(400,),
        stream=upload_pack,
    ),
    Endpoint(
        "POST",
        "/v1/deployments/{update_id}/push",
        "push",
        "Push a bundle built by deploy push --via: the manifest, unsigned, whose blobs were "
        "uploaded or are on PUBLIC; the server allocates the sequence, signs with its "
        "project's key, relays the blobs to PUBLIC and activates there",
        push,
        D,
        "PushResult",
        status=201,
        params=(UPDATE_ID,),
        body="PushRequest",
        body_required=True,
        errors=ACTS,
        max_body=16 * 1024 * 1024,
    ),
    Endpoint(
        "POST",
        "/v1/deployments/{update_id}/verify",
        "verify",
        "Run the checks against PUBLIC (deploy verify); 422 with the results if one fails",
        verify,
        D,
        "VerifyResult",
        params=(UPDATE_ID,),
        body="VerifyRequest",
        errors=ACTS,
    ),
    Endpoint(
        "POST",
        "/v1/deployments/{update_id}/approve",
        "approve",
        "Approve as the authenticated user (deploy approve); with enough approvals, release "
        "to OMEGA and start the rollout; with wait, follow it to its end",
        approve,
        A,
        "ApproveResult",
        params=(UPDATE_ID,),
        body="ApproveRequest",
        errors=ACTS,
    ),
    Endpoint(
        "POST",
        "/v1/deployments/{update_id}/approval-to-sign",
        "approval_to_sign",
        "The approval statement the authenticated approver's own key is to sign (deploy "
        "--via approve --key): signed on the client, sent back with approve",
        approval_to_sign,
        A,
        "ApprovalToSign",
        params=(UPDATE_ID,),
        body="ApprovalToSignRequest",
        body_required=True,
        errors=ACTS,
    ),
    Endpoint(
        "POST",
        "/v1/deployments/{update_id}/rollback",
        "rollback",
        "Put PUBLIC, or OMEGA and the fleet, back on the release before (deploy rollback)",
        rollback,
        A,
        "RollbackResult",
        params=(UPDATE_ID,),
        body="ReasonRequest",
        errors=ACTS,
    ),
    *(
        Endpoint(
            "POST",
            f"/v1/deployments/{{update_id}}/{action}",
            action,
            summary,
            rollout_action(action),
            A,
            "RolloutControlled",
            params=(UPDATE_ID,),
            body="ReasonRequest",
            errors=ACTS,
        )
        for action, summary in (
            ("pause", "Pause the deployment's running rollout (deploy pause)"),
            ("resume", "Resume its paused rollout (deploy resume)"),
            ("abort", "End its running rollout; who installed keeps it (deploy abort)"),
            ("retry", "Offer the release again where it failed (deploy retry)"),
        )
    ),
    Endpoint(
        "POST",
        "/v1/deployments/{update_id}/cancel",
        "cancel",
        "Cancel a deployment that has not been approved (deploy cancel)",
        cancel,
        D,
        "Cancelled",
        params=(UPDATE_ID,),
        body="ReasonRequest",
        errors=(400, 404, 409),
    ),
    Endpoint(
        "GET",
        "/v1/servers",
        "listServers",
        "The configured tiers (deploy servers)",
        list_servers,
        V,
        "ServerList",
        params=(Param("check", "query", {"type": "boolean"}, "ask each /v1/health", False),),
        errors=(400,),
    ),
    Endpoint(
        "PUT",
        "/v1/servers/{tier}",
        "configureServer",
        "Set the PUBLIC or an OMEGA server (deploy configure; omega@REGION for a region's); "
        "the token is stored, never shown",
        configure_server,
        ADMIN,
        "ServerConfigured",
        params=(Param("tier", "path", {"type": "string", "pattern": TIER_PATTERN}, "the tier"),),
        body="ServerRequest",
        body_required=True,
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/v1/audit/verify",
        "auditVerify",
        "Walk the audit hash chain; 422 naming the first broken event",
        audit_verify,
        V,
        "AuditReport",
        params=(
            Param(
                "at",
                "query",
                {"type": "string", "pattern": r"^[0-9]{1,18}:[0-9a-f]{64}$"},
                "SEQ:HASH, an event's hash recorded elsewhere (an earlier report's head)",
            ),
        ),
        errors=(400, 422),
    ),
    Endpoint(
        "GET",
        "/v1/fleet/mainframes",
        "fleetMainframes",
        "The Licensed Mainframes as OMEGA knows them: release, last seen, license status",
        fleet_mainframes,
        V,
        "Mainframes",
        errors=(400, 502),
    ),
    Endpoint(
        "GET",
        "/v1/fleet/rollouts/{rollout_id}",
        "rollout",
        "One rollout's waves and totals, from OMEGA",
        rollout,
        V,
        "Rollout",
        params=(Param("rollout_id", "path", {"type": "string"}, "a rollout's id"),),
        errors=(400, 404, 422, 502),
    ),
    Endpoint("GET", "/v1/users", "listUsers", "Users and roles", list_users, ADMIN, "UserList"),
    Endpoint(
        "POST",
        "/v1/users",
        "addUser",
        "Add a user with a role (no token yet)",
        add_user,
        ADMIN,
        "User",
        status=201,
        body="UserRequest",
        body_required=True,
        errors=(400, 409),
    ),
    Endpoint(
        "POST",
        "/v1/users/{name}/token",
        "issueToken",
        "A new API token for a user, shown once; it replaces the user's old token",
        user_token,
        ADMIN,
        "UserToken",
        params=(USER,),
        errors=(400, 404),
    ),
    Endpoint(
        "DELETE",
        "/v1/users/{name}",
        "removeUser",
        "Remove a user (not the last admin)",
        remove_user,
        ADMIN,
        "UserRemoved",
        params=(USER,),
        errors=(400, 404, 409),
    ),
)
