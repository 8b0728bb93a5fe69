"""Verification of a pushed deployment: the checks against PUBLIC, with the project's
``[verify]`` settings, recorded through :func:`ashat.workflow.verify.verify`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ashat.errors import InvalidInput
from ashat.ops.project import Project, client_for

if TYPE_CHECKING:
    from ashat.verify.base import CheckContext
    from ashat.workflow.models import Server
    from ashat.workflow.verify import VerifyResult


def app_url_from(agent_url: str, health: dict[str, Any], verify_cfg: dict[str, Any]) -> str | None:
    """Where the app answers: ``[verify] app_url``, else the agent's host and the app's port."""
    override = verify_cfg.get("app_url")
    if override is not None:
        if not isinstance(override, str) or not override.startswith(("http://", "https://")):
            raise InvalidInput("[verify] app_url must be an http(s) URL")
        return override.rstrip("/")
    app = health.get("app")
    if not isinstance(app, dict) or not isinstance(app.get("port"), int):
        return None
    host = urlsplit(agent_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{app['port']}"


def required_checks(verify_cfg: dict[str, Any], names: Sequence[str]) -> list[str]:
    """The checks a release must pass: every one in ``names`` but ``[verify] disabled``.

    A check is switched off only by naming it there (so that the signed verification
    statement shows it), never by leaving it out of a run. Raises InvalidInput.
    """
    disabled = verify_cfg.get("disabled", [])
    if not isinstance(disabled, list) or not all(isinstance(n, str) for n in disabled):
        raise InvalidInput("[verify] disabled must be a list of check names")
    unknown = sorted(set(disabled) - set(names))
    if unknown:
        raise InvalidInput(
            f"[verify] disabled names unknown check(s) {', '.join(unknown)}: "
            f"expected some of {', '.join(names)}"
        )
    required = [n for n in names if n not in disabled]
    if not required:
        raise InvalidInput("[verify] disabled switches off every check: keep at least one")
    return required


def _root_requires(project: Project, required: Sequence[str]) -> None:
    """Refuse ``[verify] disabled`` switching off a check the root of trust requires: the
    release would be "verified" here and refused by OMEGA and every mainframe."""
    from ashat.ops.trust import TrustDir

    trust = TrustDir.of_project(project.root)
    if not trust.exists():
        return
    off = [c for c in trust.current().required_checks if c not in required]
    if off:
        raise InvalidInput(
            f"[verify] disabled switches off {', '.join(off)}, which the root of trust "
            "requires of every release (trust/root.json required_checks)"
        )


def run_verify(
    project: Project,
    update_id: str,
    only: Sequence[str] | None = None,
    *,
    actor: str | None = None,
    on_start: Callable[[Server], None] | None = None,
) -> VerifyResult:
    """Run the checks (``only`` some of them) against PUBLIC as ``actor``; record the verdict.

    ``on_start(server)`` is called once PUBLIC answered its health check, before any check
    runs. A failed check is not an exception: ``result.passed`` is False. Raises
    InvalidInput (unknown check, bad settings, PUBLIC not configured), DeploymentNotFound,
    TransitionRefused, OperationFailed (PUBLIC runs another release) or a transport error.
    """
    from ashat.ids import validate_update_id
    from ashat.verify.base import CheckContext
    from ashat.verify.registry import all_checks
    from ashat.verify.runner import check_timeout, run_checks
    from ashat.workflow.verify import verify

    validate_update_id(update_id)
    config = project.config()
    verify_cfg = config.table("verify")
    every = all_checks()
    required = required_checks(verify_cfg, [c.name for c in every])
    _root_requires(project, required)
    off = sorted(set(only or ()) - set(required))
    if only and off and all(n in {c.name for c in every} for n in only):
        raise InvalidInput(
            f"check(s) {', '.join(off)} are switched off by [verify] disabled in ashat.toml"
        )
    checks = [c for c in all_checks(list(only) if only else None) if c.name in required]
    wf = project.workflow(actor)
    wf.store.require(update_id)
    server = project.require_server("public")

    with client_for(server) as agent:
        health = agent.health()
        app_url = app_url_from(server.url, health, verify_cfg)
        if on_start is not None:
            on_start(server)
        baselines: dict[str, list[float]] = {}

        def make_ctx(check: Any) -> CheckContext:
            return CheckContext(
                update_id=update_id,
                tier="public",
                agent=agent,
                agent_url=server.url,
                app_url=app_url,
                app=config.app.raw,
                verify=verify_cfg,
                project_root=project.root,
                ca_cert=server.ca_cert,
                baseline_runs_ms=baselines,
                timeout_s=check_timeout(verify_cfg, check.name),
            )

        def runner(names: Any, stored: dict[str, list[float]]) -> list[dict[str, Any]]:
            baselines.update(stored)
            return [r.to_json() for r in run_checks(checks, make_ctx)]

        def attest(latest: list[dict[str, Any]]) -> dict[str, Any] | None:
            return sign_verification(project, agent, update_id, latest, required, verify_cfg)

        return verify(
            wf,
            update_id,
            health.get("current"),
            runner,
            list(only) if only else None,
            required=required,
            attest=attest,
        )


def sign_verification(
    project: Project,
    agent: Any,
    update_id: str,
    latest: list[dict[str, Any]],
    required: Sequence[str],
    verify_cfg: dict[str, Any],
) -> dict[str, Any] | None:
    """PUBLIC's signed statement of a fully verified release, checked against the project's
    root of trust; None when neither PUBLIC has a verifier key nor the project a root.

    Raises TrustRefused (PUBLIC's key is not a verifier of root, or the statement is not
    of this release) or the transport's errors (PUBLIC refused to sign).
    """
    from ashat.ops.trust import TrustDir
    from ashat.transport.errors import AgentRejected

    trust = TrustDir.of_project(project.root)
    try:
        statement = agent.attest(update_id, latest, required, verify_cfg)
    except AgentRejected as e:
        if e.body.get("kind") == "no_verifier_key" and not trust.exists():
            return None
        raise
    if trust.exists():
        from ashat.bundle import parse_manifest
        from ashat.trust.chain import check_verification

        manifest = parse_manifest(project.manifest_path(update_id).read_bytes())
        check_verification(trust.current(), manifest, statement)
    return dict(statement)
