"""PUBLIC's verification statement: what it signs with its verifier key (``--verifier-key``).

``POST /v1/releases/{id}/attest`` ends every ``deploy verify`` run. The control side sends
the latest result of each check, the checks required and the ``[verify]`` settings; PUBLIC
signs a statement (:func:`ashat.trust.statements.verification_signed`) only when

- ``id`` is the release it runs now (the manifest digest and sequence are its own);
- every server-side check it ran itself (modules, database, security) is reported with
  the status and summary PUBLIC saw: a control server that claims "passed" for a check
  PUBLIC saw fail, or never ran against this release, or words PUBLIC's run did not say,
  gets a refusal, not a signature;
- for a passed Health Check, its app is alive and answering now.

What those checks ran with is PUBLIC's to say, not the caller's: the Module Load Test loads
the modules of the release's signed ``[app]`` only, and the statement's ``settings`` for
``security`` (``allow``, ``advisories``) and ``database`` (its URL with the password
hidden, ``url_env``, the schema query and version) are the inputs of PUBLIC's own last run
of each, whatever the request says — so an approver reading the statement sees an
``allow = ["*"]`` that hid every finding, and a password is never signed into it.

The checks that run from the control side (API, performance, the security scan's headers)
are signed as reported: PUBLIC cannot see their requests. docs/SECURITY.md says what that
leaves to the approvers, who sign the statement's digest after reading it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ashat.agent.errors import AgentError, NoSuchRelease, RequestInvalid
from ashat.bundle.keys import SigningKey
from ashat.trust.keys import sign_ed25519
from ashat.trust.statements import VERIFICATION_NAMESPACE, sign, verification_signed

SERVER_SIDE = ("modules", "database", "security")
MAX_RESULTS = 100


class AttestRefused(AgentError):
    """PUBLIC will not sign: what it is asked to vouch for is not what it saw."""

    status = 409
    kind = "attest_refused"
    exit_code = 3


class NoVerifierKey(AgentError):
    status = 409
    kind = "no_verifier_key"
    exit_code = 3


@dataclass(frozen=True)
class OwnRun:
    """PUBLIC's last run of one server-side check: what it said, and what it ran with."""

    status: str
    summary: str
    inputs: dict[str, Any]  # the statement's settings of the check (:func:`inputs_of`)


class OwnResults:
    """The server-side checks this agent ran, by release: the last run of each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, OwnRun]] = {}

    def note(self, update_id: str, name: str, answer: Mapping[str, Any], body: Any) -> None:
        run = OwnRun(
            str(answer.get("status")), str(answer.get("summary") or ""), inputs_of(name, body)
        )
        with self._lock:
            self._seen.setdefault(update_id, {})[name] = run
            while len(self._seen) > 16:  # releases verified long ago
                self._seen.pop(next(iter(self._seen)))

    def of(self, update_id: str) -> dict[str, OwnRun]:
        with self._lock:
            return dict(self._seen.get(update_id, {}))


def inputs_of(name: str, body: Any) -> dict[str, Any]:
    """What a server-side check's request asked it to run with, as the statement's
    ``settings[name]`` shows it: ``security``'s ``allow`` and ``advisories``; ``database``'s
    URL (password hidden), ``url_env``, query and expected version. Nothing for ``modules``
    (the release's signed ``[app]`` names them). A malformed body (the check said
    ``error``) shows as it came, minus a URL's password."""
    body = body if isinstance(body, Mapping) else {}
    if name == "security":
        return {"allow": body.get("allow") or [], "advisories": body.get("advisories")}
    if name == "database":
        from ashat.agent.checks.database import display_url  # as the check shows it

        url = body.get("url")
        keys = ("url_env", "schema_version_query", "expect_schema_version")
        shown = {k: body.get(k) for k in keys}
        return {"url": display_url(url) if isinstance(url, str) and url else None, **shown}
    return {}


def signed_settings(reported: Mapping[str, Any], own: Mapping[str, OwnRun]) -> dict[str, Any]:
    """The ``[verify]`` settings the statement carries: the caller's, with each server-side
    check's inputs replaced by those of PUBLIC's own run (keys without a value left out),
    and a database URL PUBLIC did not run dropped with its password."""
    out = dict(reported)
    for name in ("security", "database"):
        section = reported.get(name)
        merged = dict(section) if isinstance(section, Mapping) else {}
        merged.pop("url", None)
        run = own.get(name)
        for key, value in (run.inputs if run is not None else {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if merged or name in reported:
            out[name] = merged
    return out


def _results(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    results = body.get("results")
    if not isinstance(results, list) or not results or len(results) > MAX_RESULTS:
        raise RequestInvalid(f"'results' must be a list of 1-{MAX_RESULTS} check results")
    out = []
    for r in results:
        if not isinstance(r, dict) or not all(
            isinstance(r.get(k), str) for k in ("name", "status", "summary")
        ):
            raise RequestInvalid("each result must have a name, a status and a summary")
        out.append(r)
    return out


def attest(
    *,
    key: SigningKey | None,
    update_id: str,
    current: str | None,
    manifest_digest: str,
    sequence: int,
    app_healthy: bool | None,
    own: Mapping[str, OwnRun],
    body: Mapping[str, Any],
    at: str,
) -> dict[str, Any]:
    """The signed verification statement, or AttestRefused / NoVerifierKey / RequestInvalid."""
    if key is None:
        raise NoVerifierKey(
            "this PUBLIC has no verifier key: start it with --verifier-key FILE "
            "(ashat keys generate verifier)"
        )
    if current != update_id:
        raise NoSuchRelease(
            f"PUBLIC runs {current or 'nothing'}, not {update_id}: it signs only what it runs",
            update_id=update_id,
        )
    results = _results(body)
    required = body.get("required")
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        raise RequestInvalid("'required' must be a list of check names")
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        raise RequestInvalid("'settings' must be an object")
    names = [r["name"] for r in results]
    if len(set(names)) != len(names):
        raise RequestInvalid("'results' names a check twice")
    for r in results:
        name, status = r["name"], r["status"]
        if name in SERVER_SIDE and status in ("passed", "skipped"):
            _as_seen(update_id, name, status, r["summary"], own.get(name))
        if name == "health" and status in ("passed", "skipped") and app_healthy is False:
            raise AttestRefused(f"the Health Check is reported {status}; {update_id}'s app is down")
        if name == "health" and status == "skipped" and app_healthy is not None:
            raise AttestRefused(
                f"the Health Check is reported skipped, but {update_id} runs an app to check"
            )
    signed = verification_signed(
        update_id=update_id,
        sequence=sequence,
        manifest_digest=manifest_digest,
        results=results,
        required=required,
        settings=signed_settings(settings, own),
        verifier=f"public {key.keyid}",
        at=at,
    )
    return sign(
        signed,
        VERIFICATION_NAMESPACE,
        lambda ns, msg: (key.keyid, sign_ed25519(key, ns, msg)),
    )


def _as_seen(update_id: str, name: str, status: str, summary: str, seen: OwnRun | None) -> None:
    """Refuse a server-side check reported ``status`` (passed or skipped) with ``summary``
    unless PUBLIC's own last run of it said so. The security scan's report adds the
    control side's findings (headers, certificate) after PUBLIC's own summary."""
    if seen is None:
        raise AttestRefused(
            f"the {name} check is reported {status}, but PUBLIC did not run it against "
            f"{update_id} since it started: run 'deploy verify {update_id}' again"
        )
    if name == "security":
        if seen.status not in ("passed", "skipped"):
            raise AttestRefused(
                f"the security scan is reported {status}; PUBLIC's own scan of {update_id} "
                f"said {seen.status}"
            )
        if summary != seen.summary and not summary.startswith(seen.summary + "; "):
            raise AttestRefused(
                f"the security scan is reported as {summary[:200]!r}; PUBLIC's own scan of "
                f"{update_id} said {seen.summary[:200]!r}"
            )
        return
    if seen.status != status:
        raise AttestRefused(
            f"the {name} check is reported {status}; PUBLIC saw {seen.status} for {update_id}"
        )
    if summary != seen.summary:
        raise AttestRefused(
            f"the {name} check is reported as {summary[:200]!r}; PUBLIC's own run against "
            f"{update_id} said {seen.summary[:200]!r}"
        )
