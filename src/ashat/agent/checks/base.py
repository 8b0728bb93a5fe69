"""What the agent's server-side checks share: the result shape, body validation, deadlines.

A check answers ``{"status", "summary", "details"}`` (the JSON the control side's
:func:`ashat.verify.agent_side.ask_agent` reads). A malformed request body is not an
exception for the route to handle: :func:`guarded` turns :class:`BadBody` (and anything a
check did not expect) into an ``error`` result whose summary names the field at fault.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

Status = Literal["passed", "failed", "skipped", "error"]
CheckFunction = Callable[..., dict[str, Any]]  # (release_dir, body, env, **context)

DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 3600.0
MAX_SUMMARY_CHARS = 500

log = logging.getLogger(__name__)

# Environment names whose values are treated as secrets when scrubbing text shown to users.
_SECRET_NAME_RE = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I)
_MIN_SCRUBBED_LEN = 4  # shorter values would blot out ordinary words


class BadBody(ValueError):
    """A request body field is missing, of the wrong type or out of range."""


def result(status: Status, summary: str, **details: Any) -> dict[str, Any]:
    """A check's answer; the summary is kept to one line."""
    line = " ".join(summary.split())
    if len(line) > MAX_SUMMARY_CHARS:
        line = line[: MAX_SUMMARY_CHARS - 1] + "…"
    return {"status": status, "summary": line, "details": details}


def guarded(name: str) -> Callable[[CheckFunction], CheckFunction]:
    """Make a check answer ``error`` instead of raising (bad body or a bug in the check)."""

    def wrap(fn: CheckFunction) -> CheckFunction:
        @functools.wraps(fn)
        def run(
            release_dir: Path, body: dict[str, Any], env: Mapping[str, str], **context: Any
        ) -> dict[str, Any]:
            if not isinstance(body, dict):
                return result("error", f"the {name} check's body must be a JSON object")
            try:
                return fn(release_dir, body, env, **context)
            except BadBody as e:
                return result("error", f"bad {name} check request: {e}")
            except Exception as e:
                # Only the type: messages may carry what the app's environment holds.
                log.exception("the %s check crashed", name)
                return result("error", f"the {name} check crashed: {type(e).__name__}")

        return run

    return wrap


def timeout_of(body: Mapping[str, Any]) -> float:
    """``body["timeout_s"]`` in seconds (default 30); raises :class:`BadBody`."""
    value = body.get("timeout_s", DEFAULT_TIMEOUT_S)
    if value is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadBody("timeout_s must be a number of seconds")
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_S:
        raise BadBody(f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g} seconds")
    return float(value)


def optional_str(body: Mapping[str, Any], key: str) -> str | None:
    """``body[key]`` if it is a non-empty string, None if absent or null; else :class:`BadBody`."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadBody(f"{key} must be a string")
    return value or None


def str_list(body: Mapping[str, Any], key: str, *, max_items: int = 1000) -> list[str]:
    """``body[key]`` as a list of strings (absent or null: empty); else :class:`BadBody`."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadBody(f"{key} must be a list of strings")
    if len(value) > max_items:
        raise BadBody(f"{key} has {len(value)} entries, more than {max_items}")
    return list(value)


def release_root(release_dir: Path) -> Path:
    """The release directory, resolved; raises :class:`BadBody` if it is not a directory."""
    root = Path(release_dir).resolve()
    if not root.is_dir():
        raise BadBody(f"release directory {release_dir} does not exist")
    return root


class Deadline:
    """A point in time a check must finish by (monotonic clock)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at


def elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


def url_secrets(url: str) -> list[str]:
    """The password of a URL (as written and percent-decoded) and ``password=`` query values."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password, parts = None, None
    if password:
        found += [password, unquote(password)]
    if parts is not None and parts.query:
        for pair in parts.query.split("&"):
            key, _, value = pair.partition("=")
            if key.lower() in ("password", "sslpassword") and value:
                found += [value, unquote(value)]
    return found


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """Values of the environment that must never be shown: secret-named variables and the
    passwords inside URL-valued ones."""
    found: list[str] = []
    for key, value in env.items():
        if _SECRET_NAME_RE.search(key) and len(value) >= _MIN_SCRUBBED_LEN:
            found.append(value)
        if "://" in value and "@" in value:
            found += [s for s in url_secrets(value) if len(s) >= _MIN_SCRUBBED_LEN]
    return found


def app_env_secrets(app_env: Mapping[str, str]) -> list[str]:
    """Every value of the app's environment (``--app-env``) long enough to be told from an
    ordinary word, whatever its name, and the passwords inside URL-valued ones: the agent
    shows none of them, anywhere (a configuration error echoing the whole config must not
    leak ``STRIPE_KEY`` through the check summary into the audit trail)."""
    found = [v for v in app_env.values() if len(v) >= _MIN_SCRUBBED_LEN]
    return found + env_secrets(app_env)


def scrub_json(value: Any, secrets: list[str]) -> Any:
    """``value`` (plain JSON) with every secret in its strings replaced by ``***``."""
    if not secrets:
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, list):
        return [scrub_json(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: scrub_json(v, secrets) for k, v in value.items()}
    return value


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***`` (longest first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
