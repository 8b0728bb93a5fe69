"""The web dashboard of ``ashat serve`` at ``/``: server-rendered pages (Jinja2), one
stylesheet and one small script (:mod:`.views` decides what they show)::

    GET  /login    POST /login    POST /logout     a token in, a session cookie out
    GET  /                                         deployments, newest first (?state=&limit=)
    GET  /deployments/{id}                         steps, checks, approvals, events, rollout
    GET  /deployments/{id}/live                    JSON the page polls while something moves
    GET  /deployments/{id}/{action}                the confirmation (approve|rollback|cancel)
    POST /deployments/{id}/{action}                the action, as the signed-in user
    GET  /servers      GET /mainframes             the tiers and their health, the fleet
    GET  /passkeys     POST /passkeys              your passkeys; register one (WebAuthn)
    GET  /passkeys/{keyid}.pub                     a passkey's public line, for root.json
    GET  /static/...                               dashboard.css, dashboard.js

In a project with a root of trust, approving from the page is a passkey signature: the
confirmation's POST shows the approval statement to sign, the browser signs its digest
(the WebAuthn challenge) with a passkey of the user's that root names, and the assertion
is the approval's signature, which OMEGA and every mainframe check offline
(:mod:`ashat.trust.webauthn`).

Pages call the operations the API's routes call (:mod:`ashat.ops` and the workflow), as
the signed-in user; an action needs the role of its API operation, looked up in
:data:`~ashat.api.routes.ENDPOINTS` so the two cannot differ. Sessions are signed cookies
(:mod:`.session`). Before anything is read or changed, a page without a valid session
redirects to the login (JSON and POST: 401); a POST without the session's CSRF token, or
from another origin, is refused 403; a role too weak, 403. An operation's own refusal is
shown on the page, with the HTTP status the API would answer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ashat import __version__
from ashat.api import views
from ashat.api.errors import status_of
from ashat.api.schemas import COMPONENTS, STATES, validate_body
from ashat.api.session import COOKIE, Session, SessionCodec, csrf_matches, same_origin
from ashat.clock import valid_through
from ashat.errors import AshatError, InvalidInput
from ashat.ops.project import Project
from ashat.ops.users import UserRole, authenticate
from ashat.store.users import User, UserStore
from ashat.workflow.states import describe_allowed

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024  # bytes of a form body
MAX_FORM_FIELDS = 10
EVENTS_SHOWN = 500  # the newest events a deployment page shows
LIST_LIMITS = (20, 50, 100, 200)
# Pages are personal and change under the viewer: never cached, never framed.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request."""

    user: User
    session: Session

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def role(self) -> UserRole:
        return UserRole(self.user.role)

    def may(self, action: str) -> bool:
        return self.role.allows(views.ACTIONS[action].role)


@dataclass
class Ctx:
    request: Request
    project: Project
    viewer: Viewer
    form: dict[str, str]

    @property
    def update_id(self) -> str:
        return str(self.request.path_params["update_id"])


PageFn = Callable[[Ctx], Response]
Handle = Callable[[Request], Awaitable[Response]]


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the first value of each field; an empty body is an empty
    form). Raises InvalidInput."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise InvalidInput(f"the form is larger than {MAX_FORM_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidInput("a form is sent as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidInput(f"the form cannot be read: {e}") from e
    form: dict[str, str] = {}
    for k, v in pairs:
        form.setdefault(k, v)
    return form


class Dashboard:
    """The pages over a project (a fresh :class:`Project`, so store connection, per request)."""

    def __init__(
        self,
        open_project: Callable[[], Project],
        secret: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.open_project = open_project
        self.secret = secret
        self.codec = SessionCodec(secret)
        self.clock = clock
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            when=views.short_time,
            duration=views.duration,
            details=views.details_line,
            valid=valid_through,
        )
        env.globals.update(
            version=__version__,
            states=STATES,
            tone=views.tone,
            percent=views.percent,
            actions=views.ACTIONS,
        )
        self.env = env

    def routes(self) -> list[BaseRoute]:
        page = self._page
        routes: list[BaseRoute] = [
            Route("/", page(self.deployments), methods=["GET"]),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/servers", page(self.servers), methods=["GET"]),
            Route("/mainframes", page(self.mainframes), methods=["GET"]),
            Route("/passkeys", page(self.passkeys), methods=["GET", "POST"]),
            Route("/passkeys/{keyid}.pub", page(self.passkey_line), methods=["GET"]),
            Route("/deployments/{update_id}", page(self.deployment), methods=["GET"]),
            Route("/deployments/{update_id}/live", page(self.live, json=True), methods=["GET"]),
        ]
        for action in views.ACTIONS.values():
            routes.append(
                Route(
                    f"/deployments/{{update_id}}/{action.name}",
                    page(partial(self.act, action), action.role),
                    methods=["GET", "POST"],
                )
            )
        routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
        return routes

    # -- plumbing ---------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        viewer: Viewer | None = None,
        **ctx: Any,
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            viewer=viewer,
            csrf=viewer.session.csrf if viewer else "",
            path=request.url.path,
            **ctx,
        )
        return HTMLResponse(html, status, headers=PAGE_HEADERS)

    def _viewer(self, project: Project, request: Request) -> Viewer | None:
        session = self.codec.decode(request.cookies.get(COOKIE), self.clock())
        if session is None:
            return None
        users = UserStore(project.store)
        user = users.get(session.user)
        if user is None or not self.codec.belongs_to(session, user):
            return None
        if users.session_ended(session.id):  # signed out: a copy of the cookie is no key
            return None
        return Viewer(user, session)

    def _page(self, fn: PageFn, role: UserRole = UserRole.VIEWER, json: bool = False) -> Handle:
        async def handle(request: Request) -> Response:
            form: dict[str, str] = {}
            if request.method == "POST":
                try:
                    form = await read_form(request)
                except InvalidInput as e:
                    return self.render(request, "error.html", 400, error=e.message)
            return await run_in_threadpool(self._run, fn, role, json, request, form)

        return handle

    def _run(
        self, fn: PageFn, role: UserRole, json: bool, request: Request, form: dict[str, str]
    ) -> Response:
        project = self.open_project()
        viewer: Viewer | None = None
        try:
            viewer = self._viewer(project, request)
            if viewer is None:
                message = "sign in first: no session, or it ended"
                if json:
                    return JSONResponse({"error": message, "kind": "unauthenticated"}, 401)
                if request.method == "POST":
                    return self.render(
                        request, "login.html", 401, error=message, next=request.url.path
                    )
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", 303, PAGE_HEADERS)
            if request.method == "POST":
                if not same_origin(request):
                    return self._refuse(request, viewer, "this form was sent from another site")
                if not csrf_matches(viewer.session, form.get("csrf")):
                    return self._refuse(
                        request,
                        viewer,
                        "the form's CSRF token is missing or stale: reload the page and try again",
                    )
            if not viewer.role.allows(role):
                return self._refuse(
                    request,
                    viewer,
                    f"{viewer.name} is a {viewer.role.value}; this needs {role.value} or higher",
                    json=json,
                )
            return fn(Ctx(request, project, viewer, form))
        except AshatError as e:
            if json:
                return JSONResponse(e.to_json(), status_of(e))
            return self.render(request, "error.html", status_of(e), viewer, error=e.message)
        finally:
            project.close()

    def _refuse(
        self, request: Request, viewer: Viewer, message: str, json: bool = False
    ) -> Response:
        if json:
            return JSONResponse({"error": message, "kind": "forbidden"}, 403)
        return self.render(request, "error.html", 403, viewer, error=message)

    # -- signing in and out -----------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            next_path = views.local_path(request.query_params.get("next"))
            project = self.open_project()
            try:
                viewer = await run_in_threadpool(self._viewer, project, request)
            finally:
                await run_in_threadpool(project.close)
            if viewer is not None:
                return RedirectResponse(next_path, 303, PAGE_HEADERS)
            signed_out = request.query_params.get("out") == "1"
            return self.render(request, "login.html", next=next_path, signed_out=signed_out)
        try:
            form = await read_form(request)
        except InvalidInput as e:
            return self.render(request, "login.html", 400, error=e.message, next="/")
        next_path = views.local_path(form.get("next"))
        if not same_origin(request):
            return self.render(
                request,
                "login.html",
                403,
                next=next_path,
                error="this form was sent from another site",
            )
        token = form.get("token", "").strip()
        user = await run_in_threadpool(self._authenticate, token)
        if user is None:
            from ashat.api.app import log_refused_token

            log_refused_token(request, "sign-in")
            return self.render(
                request, "login.html", 401, next=next_path, error="unknown or replaced token"
            )
        session = self.codec.new(user, self.clock())
        response = RedirectResponse(next_path, 303, PAGE_HEADERS)
        response.set_cookie(
            COOKIE,
            self.codec.encode(session),
            max_age=self.codec.max_age_s,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    def _end(self, session: Session) -> None:
        project = self.open_project()
        try:
            now = int(self.clock())
            UserStore(project.store).end_session(session.id, self.codec.expires_at(session), now)
        finally:
            project.close()

    def _authenticate(self, token: str) -> User | None:
        if not token:
            return None
        project = self.open_project()
        try:
            return authenticate(project, token)
        finally:
            project.close()

    async def logout(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except InvalidInput as e:
            return self.render(request, "error.html", 400, error=e.message)
        session = self.codec.decode(request.cookies.get(COOKIE), self.clock())
        if session is not None and (
            not same_origin(request) or not csrf_matches(session, form.get("csrf"))
        ):
            return self.render(
                request, "error.html", 403, error="sign out from the dashboard's own button"
            )
        if session is not None:
            await run_in_threadpool(self._end, session)
        response = RedirectResponse("/login?out=1", 303, PAGE_HEADERS)
        response.delete_cookie(
            COOKIE,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    # -- pages ------------------------------------------------------------------------------

    def deployments(self, ctx: Ctx) -> Response:
        q = ctx.request.query_params
        state = q.get("state") or None
        try:
            limit = int(q.get("limit") or LIST_LIMITS[1])
        except ValueError:
            limit = LIST_LIMITS[1]
        limit = min(max(limit, 1), LIST_LIMITS[-1])
        from ashat.ops.status import live_releases

        error, deps = None, []
        try:
            deps = ctx.project.workflow(ctx.viewer.name).history(limit, state)
        except InvalidInput as e:  # an unknown state in the URL: say so, list nothing
            error = e.message
        return self.render(
            ctx.request,
            "deployments.html",
            400 if error else 200,
            ctx.viewer,
            deployments=deps,
            live=live_releases(ctx.project) if deps else {},
            state=state,
            limit=limit,
            limits=LIST_LIMITS,
            error=error,
        )

    def _deployment(self, ctx: Ctx) -> dict[str, Any]:
        """Everything the deployment page shows (moving a running rollout on, as the API's
        ``GET /v1/deployments/{id}`` and ``deploy status`` do)."""
        from ashat.ops.status import deployment_status
        from ashat.workflow.approve import region_summary

        view = deployment_status(
            ctx.project, ctx.update_id, actor=ctx.viewer.name, events=EVENTS_SHOWN
        )
        dep = view.deployment
        rollout, note = self._rollout(ctx.project, dep.details, view.rollout, view.rollout_note)
        last = view.events[-1].seq if view.events else 0
        return {
            "dep": dep,
            "view": view,
            "next_states": describe_allowed(dep.state),
            "rollout": rollout,
            "rollout_note": note,
            "rollouts": view.rollouts,
            "regions": region_summary(dep.details, dep.state.value),
            "steps": views.steps(view.events),
            "events": view.events,
            "events_cut": len(view.events) >= EVENTS_SHOWN,
            "required": _approvals_required(ctx.project),
            "available": [a for a in views.available_actions(dep.state) if ctx.viewer.may(a)],
            "poll_ms": views.poll_ms(dep.state),
            "live_version": f"{dep.state.value}:{last}",
        }

    @staticmethod
    def _rollout(
        project: Project,
        details: dict[str, Any],
        rollout: dict[str, Any] | None,
        note: str | None,
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The rollout as OMEGA reports it: the running one, else the last one (best effort)."""
        from ashat.ops.status import rollout_status

        rollout_id = details.get("rollout_id")
        if rollout is None and note is None and rollout_id:
            try:
                rollout = rollout_status(project, str(rollout_id))
            except AshatError as e:
                return None, f"OMEGA did not answer ({e.message}): fleet progress unknown"
        back_id = rollout.get("rollback_rollout_id") if rollout else None
        if rollout is not None and back_id and "rollback" not in rollout:
            # the rollout itself is shown even when its rollback's progress is unknown
            with contextlib.suppress(AshatError):
                rollout = {**rollout, "rollback": rollout_status(project, str(back_id))}
        return rollout, note

    def deployment(self, ctx: Ctx) -> Response:
        notice = views.NOTICES.get(ctx.request.query_params.get("done", ""))
        return self.render(
            ctx.request, "deployment.html", 200, ctx.viewer, notice=notice, **self._deployment(ctx)
        )

    def live(self, ctx: Ctx) -> Response:
        page = self._deployment(ctx)
        fragment = self.env.get_template("_rollout.html").render(
            rollout=page["rollout"],
            rollout_note=page["rollout_note"],
            rollouts=page["rollouts"],
            dep=page["dep"],
        )
        dep = page["dep"]
        body = {
            "update_id": dep.id,
            "state": dep.state.value,
            "reason": dep.reason,
            "version": page["live_version"],
            "poll_ms": page["poll_ms"],
            "rollout": page["rollout"],
            "rollout_note": page["rollout_note"],
            "rollouts": page["rollouts"],
            "html": {"rollout": fragment},
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def servers(self, ctx: Ctx) -> Response:
        from ashat.ops.status import check_servers

        rows = sorted(ctx.project.store.servers(), key=lambda s: views.tier_rank(s.tier))
        health = check_servers(ctx.project)
        return self.render(
            ctx.request, "servers.html", 200, ctx.viewer, servers=rows, health=health
        )

    def mainframes(self, ctx: Ctx) -> Response:
        from ashat.ops.fleet import hold_text
        from ashat.ops.status import fleet_mainframes

        error, status = None, 200
        rows: list[dict[str, Any]] = []
        try:
            rows = fleet_mainframes(ctx.project).get("mainframes") or []
        except AshatError as e:
            error, status = e.message, status_of(e)
        now = dt.datetime.now(dt.UTC)
        for m in rows:
            m["seen_ago"] = views.age(m.get("last_seen"), now)
            m["held"] = hold_text(m["hold"]) if m.get("hold") else None
        rows.sort(key=lambda m: str(m.get("mainframe_id")))
        return self.render(
            ctx.request,
            "mainframes.html",
            status,
            ctx.viewer,
            mainframes=rows,
            error=error,
            releases=views.tally(rows, "current"),
            licenses=views.tally(rows, "license_status"),
        )

    # -- actions ----------------------------------------------------------------------------

    def act(self, action: views.Action, ctx: Ctx) -> Response:
        """The confirmation page of ``action`` (GET), or the action itself (POST)."""
        from ashat.ids import validate_update_id

        validate_update_id(ctx.update_id)
        text = _typed(ctx.form.get(action.field, ""), lines=action.field == "comment")
        if ctx.request.method == "POST":
            try:
                validate_body(COMPONENTS[action.schema], {action.field: text or None})
                if action.name == "approve" and _has_root(ctx.project):
                    if "signature" not in ctx.form:  # step 1: what to sign, and with what
                        return self._to_sign(ctx, action, text or None)
                    done = self._approve_signed(ctx)
                else:
                    done = self._do(action, ctx, text or None)
            except AshatError as e:
                return self._confirm(ctx, action, status_of(e), error=e.message, text=text)
            return RedirectResponse(f"/deployments/{ctx.update_id}?done={done}", 303, PAGE_HEADERS)
        return self._confirm(ctx, action, 200, text=text)

    def _confirm(
        self, ctx: Ctx, action: views.Action, status: int, *, text: str, error: str | None = None
    ) -> Response:
        dep = ctx.project.workflow(ctx.viewer.name).store.require(ctx.update_id)
        checks = ctx.project.store.latest_checks(dep.id)
        approvals = ctx.project.store.approvals(dep.id)
        return self.render(
            ctx.request,
            "confirm.html",
            status,
            ctx.viewer,
            action=action,
            dep=dep,
            checks=checks,
            approvals=approvals,
            required=_approvals_required(ctx.project),
            offered=action.name in views.available_actions(dep.state),
            text=text,
            error=error,
        )

    # -- passkeys ------------------------------------------------------------------------

    def _site(self, request: Request) -> tuple[str, str]:
        """The relying party (the host) and the origin the browser names."""
        url = request.url
        return url.hostname or "localhost", f"{url.scheme}://{url.netloc}"

    def _challenge(self, viewer: Viewer, purpose: str) -> bytes:
        import hashlib
        import hmac

        return hmac.new(
            self.secret, f"{purpose}\0{viewer.session.id}".encode(), hashlib.sha256
        ).digest()

    def passkeys(self, ctx: Ctx) -> Response:
        """The user's passkeys (GET); register the one the browser made (POST)."""
        from ashat.trust.root import now_iso
        from ashat.trust.webauthn import b64url, public_from_registration

        users = UserStore(ctx.project.store)
        rp_id, origin = self._site(ctx.request)
        challenge = self._challenge(ctx.viewer, "passkey-register")
        error, done = None, ctx.request.query_params.get("done")
        if ctx.request.method == "POST":
            try:
                key, credential_id = public_from_registration(
                    ctx.form.get("attestation_object", ""),
                    ctx.form.get("client_data_json", ""),
                    challenge=challenge,
                    rp_id=rp_id,
                    origin=origin,
                )
            except AshatError as e:
                error = e.message
            else:
                users.add_passkey(
                    ctx.viewer.name, credential_id, key.keyid, key.to_text(), now_iso()
                )
                return RedirectResponse("/passkeys?done=registered", 303, PAGE_HEADERS)
        options = {
            "challenge": b64url(challenge),
            "rp": {"id": rp_id, "name": "ashat"},
            "user": {
                "id": b64url(ctx.viewer.name.encode("utf-8")),
                "name": ctx.viewer.name,
                "displayName": ctx.viewer.name,
            },
            "pubKeyCredParams": [
                {"type": "public-key", "alg": -7},
                {"type": "public-key", "alg": -8},
            ],
            "attestation": "none",
            "authenticatorSelection": {"residentKey": "preferred", "userVerification": "required"},
            "excludeCredentials": [
                {"type": "public-key", "id": k["credential_id"]}
                for k in users.passkeys(ctx.viewer.name)
            ],
        }
        return self.render(
            ctx.request,
            "passkeys.html",
            400 if error else 200,
            ctx.viewer,
            keys=users.passkeys(ctx.viewer.name),
            options=options,
            error=error,
            done=done,
            in_root=self._root_keyids(ctx.project),
        )

    def passkey_line(self, ctx: Ctx) -> Response:
        keyid = ctx.request.path_params["keyid"]
        for k in UserStore(ctx.project.store).passkeys(ctx.viewer.name):
            if k["keyid"] == keyid:
                return Response(
                    k["public"] + "\n",
                    media_type="text/plain; charset=utf-8",
                    headers={**PAGE_HEADERS, "Content-Disposition":
                             f'attachment; filename="{ctx.viewer.name}-passkey.pub"'},
                )  # fmt: skip
        return self.render(ctx.request, "error.html", 404, ctx.viewer, error="no such passkey")

    def _root_keyids(self, project: Project) -> set[str]:
        from ashat.ops.trust import TrustDir

        trust = TrustDir.of_project(project.root)
        if not trust.exists():
            return set()
        return set(trust.current().roles["approvers"].keyids)

    def _to_sign(self, ctx: Ctx, action: views.Action, comment: str | None) -> Response:
        """Step 1 of a passkey approval: the statement, and the challenge that signs it."""
        import json

        from ashat.canonical import canonical_json
        from ashat.ops.approve import approval_to_sign
        from ashat.trust.statements import APPROVAL_NAMESPACE
        from ashat.trust.webauthn import b64url, challenge_for

        in_root = self._root_keyids(ctx.project)
        mine = [
            k
            for k in UserStore(ctx.project.store).passkeys(ctx.viewer.name)
            if k["keyid"] in in_root
        ]
        if not mine:
            return self._confirm(
                ctx, action, 409, text=comment or "",
                error=f"{ctx.viewer.name} has no passkey in the root of trust: register one "
                "under Passkeys and have a root key holder add it (ashat trust add-key "
                "approvers …), or approve with your key: deploy approve --key",
            )  # fmt: skip
        signed = approval_to_sign(ctx.project, ctx.update_id, ctx.viewer.name, comment)
        rp_id, _ = self._site(ctx.request)
        options = {
            "challenge": b64url(challenge_for(APPROVAL_NAMESPACE, canonical_json(signed))),
            "rpId": rp_id,
            "allowCredentials": [{"type": "public-key", "id": k["credential_id"]} for k in mine],
            "userVerification": "required",
        }
        dep = ctx.project.store.require(ctx.update_id)
        return self.render(
            ctx.request,
            "sign.html",
            200,
            ctx.viewer,
            dep=dep,
            signed=signed,
            signed_json=json.dumps(signed, sort_keys=True),
            options=options,
        )

    def _approve_signed(self, ctx: Ctx) -> str:
        """Step 2: the assertion is the approval's signature; the chain check decides."""
        import json

        from ashat.ops.approve import run_approve
        from ashat.trust.webauthn import assertion_signature

        form = ctx.form
        keys = {
            k["credential_id"]: k["keyid"]
            for k in UserStore(ctx.project.store).passkeys(ctx.viewer.name)
        }
        keyid = keys.get(form.get("credential_id", ""))
        if keyid is None:
            raise InvalidInput("the browser signed with a passkey not registered to you")
        try:
            signed = json.loads(form.get("signed", ""))
        except (ValueError, RecursionError) as e:
            raise InvalidInput("the approval statement sent back is not JSON") from e
        sig = assertion_signature(
            form.get("authenticator_data", ""), form.get("client_data_json", ""),
            form.get("signature", ""),
        )  # fmt: skip
        statement = {"signed": signed, "signatures": [{"keyid": keyid, "sig": sig}]}
        outcome = run_approve(
            ctx.project, ctx.update_id, actor=ctx.viewer.name, wait=False, statement=statement
        )
        return _approve_notice(outcome)

    def _do(self, action: views.Action, ctx: Ctx, text: str | None) -> str:
        """Run the operation as the signed-in user; return the notice to show after it."""
        actor = ctx.viewer.name
        if action.name == "approve":
            from ashat.ops.approve import run_approve

            outcome = run_approve(ctx.project, ctx.update_id, actor=actor, comment=text, wait=False)
            return _approve_notice(outcome)
        if action.name == "rollback":
            from ashat.ops.rollback import run_rollback

            run_rollback(ctx.project, ctx.update_id, text, actor=actor)
            return "rolled-back"
        from ashat.ops.cancel import run_cancel

        run_cancel(ctx.project, ctx.update_id, text, actor=actor)
        return "cancelled"


def _typed(text: str, *, lines: bool) -> str:
    """What a person typed in a textarea, as the verbs take it: a browser sends each line
    break as CRLF; a comment keeps its lines (LF), a reason is one line (breaks as spaces)."""
    text = text.replace("\r\n", "\n").strip()
    return text if lines else " ".join(part.strip() for part in text.split("\n") if part.strip())


def _approve_notice(outcome: Any) -> str:
    """The notice after an approval: resumed, counted (and whether more are needed), or one
    the approver had given already (it counts once; the new comment is not kept)."""
    if outcome.recorded is None:
        return "resumed"
    if not outcome.recorded.counted:
        return "approval-repeated"
    return "approval-recorded" if outcome.waiting_for else "approved"


def _has_root(project: Project) -> bool:
    from ashat.ops.trust import TrustDir

    return TrustDir.of_project(project.root).exists()


def _approvals_required(project: Project) -> int | None:
    from ashat.workflow.approve import ApprovalPolicy

    try:
        return ApprovalPolicy.parse(project.config().table("approval")).required
    except AshatError:
        return None  # a malformed [approval]: approving says why
