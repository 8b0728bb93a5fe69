"""``deploy --via URL`` (or ``ASHAT_CONTROL=URL``): :class:`RemoteOperations`, the verbs
through ``ashat serve``.

Each method stands in for the local operation (:class:`~ashat.ops.operations.
LocalOperations`) and returns what it returns (the same result types, or the same JSON
document), calling the same hooks, so a verb prints the same lines and the same ``--json``
whichever way it ran. The server acts as the user whose API token is sent
(``ASHAT_TOKEN`` or ``ASHAT_TOKEN_FILE``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ashat.errors import AshatError, InvalidInput

if TYPE_CHECKING:
    from ashat.ops.approve import ApproveHooks, ApproveOutcome
    from ashat.ops.cancel import CancelOutcome
    from ashat.ops.project import Project
    from ashat.ops.rollback import RollbackHooks, RollbackOutcome
    from ashat.ops.rollout_control import ControlOutcome
    from ashat.ops.status import StatusView
    from ashat.transport.control import ControlClient
    from ashat.trust.statements import Signer
    from ashat.workflow.models import ChainReport, Deployment, Event, Server
    from ashat.workflow.service import Overview

FOLLOW_LIMIT_S = 3600.0  # the longest a rollout is followed through the server
POLL_S = 0.5


def _dep_path(update_id: str, action: str = "") -> str:
    from ashat.ids import validate_update_id

    validate_update_id(update_id)  # the same error, before anything is sent
    return f"/v1/deployments/{quote(update_id)}" + (f"/{action}" if action else "")


def _check_what_is_signed(update_id: str, signed: dict[str, Any], verification: Any) -> None:
    """With the project's root of trust here, sign only a release PUBLIC's verifier key
    vouches for: the server's word on the manifest digest is not enough."""
    from ashat.ops.trust import TrustDir
    from ashat.project import find_project_root
    from ashat.trust.chain import verified_statement
    from ashat.trust.root import TrustRefused
    from ashat.trust.statements import digest

    try:
        trust = TrustDir.of_project(find_project_root())
    except AshatError:
        return  # no project here: nothing to check against (docs/SECURITY.md)
    if not trust.exists():
        return
    try:
        s, _ = verified_statement(trust.current(), verification, update_id)
    except TrustRefused as e:
        raise TrustRefused(e.reason, f"not signing the approval of {update_id}: {e.message}") from e
    same = (s.get("update_id"), s.get("sequence"), s.get("manifest_digest"), digest(verification))
    if same != (
        update_id, signed.get("sequence"), signed.get("manifest_digest"),
        signed.get("verification_digest"),
    ):  # fmt: skip
        raise TrustRefused(
            "other_release",
            f"not signing the approval of {update_id}: the server asks to approve another "
            "build than PUBLIC's verification statement names",
        )


class RemoteOperations:
    """The verbs through ``ashat serve`` (:class:`~ashat.ops.operations.Operations`)."""

    def __init__(self, c: ControlClient, find: Callable[[], Project]) -> None:
        self.c = c
        self._find = find  # the project whose tree a push builds (no store is opened)

    def history(self, limit: int, state: str | None) -> list[Deployment]:
        from ashat.workflow.models import Deployment

        data = self.c.call("GET", "/v1/deployments", limit=limit, state=state)
        return [Deployment.from_json(d) for d in data["deployments"]]

    def overview(self) -> Overview:
        from ashat.workflow.models import Deployment, Lease
        from ashat.workflow.service import Overview

        data = self.c.call("GET", "/v1/status")
        return Overview(
            [Deployment.from_json(d) for d in data["active"]],
            [Deployment.from_json(d) for d in data["recent"]],
            [Lease.from_json(le) for le in data["leases"]],
        )

    def status(self, update_id: str, events: int = 10) -> StatusView:
        from ashat.ops.status import StatusView

        return StatusView.from_json(self.c.call("GET", _dep_path(update_id), events=events))

    def log(self, update_id: str) -> list[Event]:
        from ashat.workflow.models import Event

        data = self.c.call("GET", _dep_path(update_id, "events"))
        return [Event.from_json(e) for e in data["events"]]

    def audit_verify(self, at: str | None = None) -> ChainReport:
        from urllib.parse import quote

        from ashat.transport.control import ServeFailure
        from ashat.workflow.models import ChainReport

        path = "/v1/audit/verify" + (f"?at={quote(at)}" if at is not None else "")
        try:
            report = ChainReport.from_json(self.c.call("GET", path))
            if at is not None and report.ok and report.head is None:  # it ignored ?at=
                from ashat.errors import InvalidInput

                raise InvalidInput(
                    "this ashat serve does not check --at (it names no head: an older "
                    "version); upgrade it, or run deploy audit verify where the store is"
                )
            return report
        except ServeFailure as e:
            if e.kind != "audit_broken":
                raise
            return ChainReport.from_json(e.result)

    def servers(self, check: bool) -> tuple[list[Server], dict[str, dict[str, Any]]]:
        """The servers and, with ``check``, what each answered (as ``check_servers`` gives it)."""
        from ashat.workflow.models import Server

        rows = self.c.call("GET", "/v1/servers", check=check)["servers"]
        results = {}
        if check:
            results = {
                r["tier"]: {k: r[k] for k in ("reachable", "health", "error") if k in r}
                for r in rows
            }
        return [Server.from_json(r) for r in rows], results

    def require_server(self, tier: str) -> Server:
        for server in self.servers(check=False)[0]:
            if server.tier == tier:
                return server
        from ashat.ids import configure_args, tier_label

        raise InvalidInput(
            f"{tier_label(tier)} is not configured: run "
            f"'deploy configure {configure_args(tier)}' first"
        )

    def me(self) -> str:
        return str(self.c.call("GET", "/v1/me")["name"])

    def configure(
        self, tier: str, url: str, name: str, token_file: Path | None, ca_cert: str | None
    ) -> tuple[Server, Server | None]:
        from ashat.project import read_token_file
        from ashat.workflow.models import Server

        if ca_cert:
            raise InvalidInput(
                "--ca-cert names a file on this machine; through --via, set it on the server's "
                "machine with 'deploy configure ... --ca-cert'"
            )
        body: dict[str, Any] = {"url": url, "name": name}
        if token_file is not None:
            body["token"] = read_token_file(token_file)
        data = self.c.call("PUT", f"/v1/servers/{quote(tier)}", body)
        old = data.get("replaced")
        return Server.from_json(data["server"]), Server.from_json(old) if old else None

    def cancel(self, update_id: str, reason: str | None) -> CancelOutcome:
        from ashat.ops.cancel import CancelOutcome
        from ashat.workflow.models import Deployment

        data = self.c.call("POST", _dep_path(update_id, "cancel"), {"reason": reason})
        return CancelOutcome(Deployment.from_json(data["deployment"]), str(data.get("public", "")))

    def verify(
        self,
        update_id: str,
        only: list[str] | None,
        on_start: Callable[[Server], None],
    ) -> dict[str, Any]:
        """The verdict as ``VerifyResult.to_json()``; a failed check is not an exception."""
        from ashat.transport.control import ServeFailure

        path = _dep_path(update_id, "verify")
        on_start(self.require_server("public"))
        try:
            return self.c.call("POST", path, {"only": only} if only else {})
        except ServeFailure as e:
            if e.kind != "verification_failed":
                raise
            return {k: v for k, v in e.result.items() if k not in ("error", "kind", "exit_code")}

    def _signed_approval(
        self, update_id: str, signer: tuple[Signer, str], comment: str | None
    ) -> dict[str, Any]:
        """Ask the server what to sign, check it is this release's approval, sign it here."""
        from ashat.transport.errors import BadResponse
        from ashat.trust.statements import APPROVAL_NAMESPACE, APPROVAL_TYPE, sign

        sign_fn, keyid = signer
        doc = self.c.call(
            "POST", _dep_path(update_id, "approval-to-sign"), {"keyid": keyid, "comment": comment}
        )
        signed = doc.get("signed")
        if (
            not isinstance(signed, dict)
            or signed.get("type") != APPROVAL_TYPE
            or signed.get("update_id") != update_id
            or signed.get("comment") != comment
        ):
            raise BadResponse(f"the server sent something else than the approval of {update_id}")
        _check_what_is_signed(update_id, signed, doc.get("verification"))
        return sign(signed, APPROVAL_NAMESPACE, sign_fn)

    def approve(
        self,
        update_id: str,
        *,
        as_user: str | None,
        comment: str | None,
        wait: bool,
        hooks: ApproveHooks,
        signer: tuple[Signer, str] | None = None,
        to: str | None = None,
    ) -> ApproveOutcome:
        """Approve as the token's user; then follow the rollout by asking the server.

        With ``signer`` (the approver's own key), the approval statement is signed here, on
        the approver's machine; the server only carries it (and checks it)."""
        from ashat.ops.approve import ApproveOutcome, keeps_going
        from ashat.workflow.approve import ApprovalPolicy, ApproveResult, DistributionPolicy

        path = _dep_path(update_id, "approve")
        actor = self.me()
        if as_user and as_user != actor:
            raise InvalidInput(
                f"--as {as_user}: through --via you approve as the token's user ({actor})"
            )
        body: dict[str, Any] = {"wait": False}
        if comment:
            body["comment"] = comment
        if to is not None:
            body["to"] = to
        if signer is not None:
            body["statement"] = self._signed_approval(update_id, signer, comment)
        data = self.c.call("POST", path, body)
        view = self.status(update_id, events=1)
        dep = view.deployment
        required = int(data.get("required") or 1)
        outcome = ApproveOutcome(dep, actor, required, {"update_id": update_id})
        if "counted" in data:
            recorded = ApproveResult(
                dep, data["approvals"], required, bool(data["counted"]),
                notes=list(data.get("not_counted") or []), holding=data.get("holding"),
            )  # fmt: skip
            outcome.recorded = recorded
            outcome.data.update(recorded.to_json())
            if hooks.recorded is not None:
                hooks.recorded(recorded, ApprovalPolicy(required=required), actor)
        if data.get("waiting_for"):
            outcome.waiting_for = int(data["waiting_for"])
            outcome.data["state"] = data["state"]
            return outcome
        if "bytes_relayed" in data and data.get("rollout") is not None:
            if hooks.header is not None:
                hooks.header("ASHAT Deployment to OMEGA Approved!")
            outcome.data.update(
                {"rollout": data["rollout"], "bytes_relayed": data["bytes_relayed"]}
            )
            if hooks.released is not None:
                waves = DistributionPolicy(waves=tuple(data.get("waves") or ()))
                omega = self.require_server("omega")
                hooks.released(omega, int(data["bytes_relayed"]), data["rollout"], waves)
        elif hooks.header is not None:
            hooks.header(f"ASHAT Distribution of {update_id}")
        rollout = view.rollout
        if wait:
            deadline = time.monotonic() + FOLLOW_LIMIT_S
            while keeps_going(dep, rollout) and time.monotonic() < deadline:
                if hooks.tick is not None:
                    hooks.tick(dep, rollout)
                time.sleep(POLL_S)
                view = self.status(update_id, events=1)
                dep, rollout = view.deployment, view.rollout
            outcome.followed = True
        else:
            rollout = None
        outcome.deployment = dep
        outcome.data.update({"state": dep.state.value, "rollout_status": rollout})
        return outcome

    def control_rollout(self, update_id: str, action: str, reason: str | None) -> ControlOutcome:
        from ashat.ops.rollout_control import ControlOutcome
        from ashat.workflow.models import Deployment

        data = self.c.call("POST", _dep_path(update_id, action), {"reason": reason})
        return ControlOutcome(Deployment.from_json(data["deployment"]), action, data["rollout"])

    def rollback(self, update_id: str, reason: str | None, hooks: RollbackHooks) -> RollbackOutcome:
        from ashat.ops.rollback import RollbackOutcome

        data = self.c.call("POST", _dep_path(update_id, "rollback"), {"reason": reason})
        dep = self.status(update_id, events=1).deployment
        rollout = data.get("rollout")
        if rollout is None:
            return RollbackOutcome(dep, False, note=str(data.get("note", "")), data=data)
        omega = self.require_server("omega")
        if hooks.fleet is not None:
            hooks.fleet(omega)
        if hooks.started is not None:
            hooks.started(str(rollout.get("rollout_id")), omega)
        return RollbackOutcome(
            dep, True, note=str(data.get("public", "")), status=rollout, data=data
        )

    def _refuse_taken_id(self, update_id: str) -> None:
        """As a local push does: an id that exists (and is not a push to resume) is refused in
        one line, before anything is built or printed."""
        from ashat.errors import NotFound
        from ashat.workflow.push import taken_id

        try:
            state = self.c.call("GET", _dep_path(update_id))["deployment"]["state"]
        except NotFound:
            return
        if (err := taken_id(update_id, str(state))) is not None:
            raise err

    def push(
        self,
        update_id: str,
        description: str,
        *,
        source: str | None,
        git_ref: str | None,
        on_start: Callable[[Server], None],
        step: Callable[[str, str], None],
        tasks: Sequence[str] = (),
        on_upload: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Build the bundle here, upload what PUBLIC lacks to the server, and have it push.

        Returns ``PushResult.to_json()``. The tree's ``ashat.toml`` gives the app's settings;
        no signing key is needed here: the server signs.
        """
        from ashat.ops.push import build_unsigned
        from ashat.transport.client import BlobRef
        from ashat.workflow.tasks import parse_tasks

        project = self._find()
        server = self.require_server("public")
        self._refuse_taken_id(update_id)
        parse_tasks(tasks)  # a bad reference is refused here, before anything is built
        built = build_unsigned(project, update_id, description, source, git_ref)
        try:
            on_start(server)
            m = built.manifest
            sizes = {f.sha256: f.size for f in m.files if f.kind == "file"}
            missing = self.c.missing(sorted(sizes))
            self.c.upload_progress = on_upload
            try:
                self.c.upload([BlobRef(d, sizes[d], built.blobs[d]) for d in missing])
            finally:
                self.c.upload_progress = None
            body = {"description": description, "manifest": m.to_dict(), "tasks": list(tasks)}
            try:
                data = self.c.call("POST", _dep_path(update_id, "push"), body)
            except AshatError as e:
                done = e.details.pop("steps", None)  # done on the server before it failed
                for s in done if isinstance(done, list) else []:
                    if isinstance(s, dict) and isinstance(s.get("step"), str):
                        step(s["step"], str(s.get("detail", "")))
                raise
        finally:
            built.cleanup()
        for s in data.pop("steps", []):
            step(s["step"], s["detail"])
        return data
