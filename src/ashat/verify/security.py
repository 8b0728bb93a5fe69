"""Security Scan: the release tree on the agent, the HTTP headers and TLS from here.

On the agent (``checks/security``): secrets in the tree (private keys, cloud access keys,
``password=``/token patterns, minus ``allow`` globs), world-writable files, and pinned
dependencies against OSV advisories: the agent's own snapshot (``ashat advisories update``)
and, if the project ships one, the release's directory ``advisories``. From the control
side: every header of ``require_headers`` on ``path`` (default the app's ``health_path``),
and for an https agent its certificate's validity and days to expiry (``min_cert_days``).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx

from ashat.transport import outgoing
from ashat.verify.agent_side import ask_agent
from ashat.verify.base import CheckConfigError, CheckContext, Outcome

DEFAULT_MIN_CERT_DAYS = 14


def certificate_findings(
    url: str, ca_cert: str | None, min_days: float, timeout_s: float
) -> dict[str, Any]:
    """Connect to ``url``'s TLS endpoint; report validity and days left (never raises)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    ctx = ssl.create_default_context(cafile=ca_cert) if ca_cert else ssl.create_default_context()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as e:
        return {"valid": False, "problem": f"certificate not valid: {e.verify_message}"}
    except (OSError, ssl.SSLError) as e:
        return {"valid": False, "problem": f"TLS handshake failed: {e}"}
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der or b"")
    expires = cert.not_valid_after_utc
    days = (expires - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    found: dict[str, Any] = {
        "valid": True,
        "expires_at": expires.isoformat(),
        "days_left": round(days, 1),
        "subject": cert.subject.rfc4514_string(),
    }
    if days < min_days:
        found["problem"] = f"certificate expires in {days:.1f} days (minimum {min_days:g})"
    return found


class SecurityCheck:
    name = "security"
    title = "Security Scan"

    def run(self, ctx: CheckContext) -> Outcome:
        cfg = ctx.settings("security")
        problems: list[str] = []
        details: dict[str, Any] = {}
        allow = cfg.get("allow", [])
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            raise CheckConfigError("allow must be a list of glob patterns")
        body: dict[str, Any] = {"allow": allow}
        if "advisories" in cfg:
            named = cfg["advisories"]
            if not isinstance(named, str):
                raise CheckConfigError("advisories must be a directory of the release")
            if named.startswith("/") or ".." in named.split("/"):
                raise CheckConfigError(
                    f"advisories {named!r} names a directory on PUBLIC; ashat.toml may only "
                    "name one the release ships. PUBLIC's own snapshot is its operator's: "
                    "ashat advisories update --data DATA (or ashat agent --advisories DIR)"
                )
            body["advisories"] = named
        tree = ask_agent(ctx, "security", body)
        details["tree"] = tree.details
        if tree.status in ("failed", "error"):
            problems.append(tree.summary)

        headers = cfg.get("require_headers", [])
        if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
            raise CheckConfigError("require_headers must be a list of header names")
        if headers and ctx.app_url is not None:
            path = str(cfg.get("path") or ctx.app.get("health_path") or "/")
            try:
                with outgoing.client(timeout_s=ctx.timeout_s * 0.5) as http:
                    resp = http.get(ctx.app_url + path)
                missing = [h for h in headers if h not in resp.headers]
            except httpx.HTTPError as e:
                missing = list(headers)
                problems.append(f"cannot fetch {path} for its headers: {type(e).__name__}")
            details["headers"] = {"path": path, "required": headers, "missing": missing}
            if missing:
                problems.append(f"missing security header(s) on {path}: {', '.join(missing)}")

        if ctx.agent_url.startswith("https://"):
            min_days = cfg.get("min_cert_days", DEFAULT_MIN_CERT_DAYS)
            if isinstance(min_days, bool) or not isinstance(min_days, int | float):
                raise CheckConfigError("min_cert_days must be a number")
            cert = certificate_findings(
                ctx.agent_url, ctx.ca_cert, float(min_days), ctx.timeout_s * 0.5
            )
            details["certificate"] = cert
            if "problem" in cert:
                problems.append(cert["problem"])

        if problems:
            return Outcome.failed("; ".join(problems), **details)
        parts = [tree.summary or "tree clean"]
        if "headers" in details:
            parts.append(f"{len(headers)} security headers present")
        if "certificate" in details:
            parts.append(f"certificate valid for {details['certificate']['days_left']:.0f} days")
        return Outcome.passed("; ".join(parts), **details)
