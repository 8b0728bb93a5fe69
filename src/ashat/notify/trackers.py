"""``[[tasks.update]]``: the trackers told when a deployment reaches a state (issue 21).

::

    [[tasks.update]]
    tracker = "jira"                          # jira | github | gitlab
    url = "https://acme.atlassian.net"        # jira, gitlab: the site (required; a GitLab
                                              # task on another host is skipped); github: its
                                              # API (default https://api.github.com)
    token_file = "/etc/ashat/jira.token"      # read on the machine that sends
    user = "ashat@acme.com"                   # jira: Basic auth with an API token; without:
                                              # Bearer (a personal access token)
    events = ["verified", "approved", "completed", "rolled_back"]
    transition = "31"                         # jira: also apply this transition

For each deployment task of the tracker's kind (:mod:`ashat.workflow.tasks`) a comment is
posted — Jira's ``POST /rest/api/3/issue/{key}/comment`` (an Atlassian Document Format
body) and optionally ``POST /rest/api/3/issue/{key}/transitions``; GitHub's ``POST
/repos/{owner}/{repo}/issues/{n}/comments``; GitLab's ``POST
/api/v4/projects/{path}/issues/{iid}/notes`` — by the notification dispatcher: in the
background, with retries, a failure recorded as a ``notify.failed`` event, never blocking
the deployment. Parsing and the requests are pure; the token is read when sending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ashat.errors import InvalidInput
from ashat.workflow.models import Change
from ashat.workflow.states import State

TRACKERS = ("jira", "github", "gitlab")
GITHUB_API = "https://api.github.com"
KEYS = frozenset(
    {"tracker", "url", "token_file", "user", "events", "transition", "retries", "timeout_s"}
)
DEFAULT_EVENTS = ("verified", "approved", "completed", "rolled_back")


@dataclass(frozen=True)
class TrackerUpdate:
    index: int
    tracker: str
    url: str | None
    token_file: str
    events: frozenset[str]
    user: str | None = None
    transition: str | None = None
    retries: int = 3
    timeout_s: float = 10.0

    def label(self) -> str:
        host = urlsplit(self.url).netloc if self.url else "(the task's host)"
        return f"{self.tracker} {host}"

    def token(self) -> str:
        """The token, read now from ``token_file``; raises :class:`InvalidInput`."""
        try:
            with open(self.token_file, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as e:
            raise InvalidInput(
                f"[[tasks.update]] #{self.index + 1}: cannot read token_file "
                f"{self.token_file}: {e.strerror or e}"
            ) from e
        if not value:
            raise InvalidInput(f"[[tasks.update]] #{self.index + 1}: {self.token_file} is empty")
        return value

    def headers(self, token: str) -> dict[str, str]:
        if self.tracker == "gitlab":
            return {"PRIVATE-TOKEN": token}
        if self.tracker == "github":
            return {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        if self.user:  # Jira Cloud: the account's email and an API token
            import base64

            basic = base64.b64encode(f"{self.user}:{token}".encode()).decode("ascii")
            return {"Authorization": f"Basic {basic}", "Accept": "application/json"}
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def parse_updates(tables: Any) -> list[TrackerUpdate]:
    """The ``[[tasks.update]]`` array (None: none); raise naming the first wrong key."""
    if tables is None:
        return []
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InvalidInput("tasks.update in ashat.toml must be an array of tables")
    known = {s.value for s in State}
    out = []
    for i, t in enumerate(tables):
        where = f"[[tasks.update]] #{i + 1}"
        unknown = set(t) - KEYS
        if unknown:
            raise InvalidInput(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        tracker = t.get("tracker")
        if tracker not in TRACKERS:
            raise InvalidInput(
                f"{where}.tracker must be one of {', '.join(TRACKERS)}, not {tracker!r}"
            )
        url = t.get("url")
        if url is not None:
            parts = urlsplit(str(url))
            if (
                not isinstance(url, str)
                or parts.scheme not in ("http", "https")
                or not parts.hostname
            ):
                raise InvalidInput(f"{where}.url must be an http(s) URL, not {url!r}")
            url = url.rstrip("/")
        elif tracker in ("jira", "gitlab"):
            # never the host a --task URL names: whoever pushes would choose where the
            # token goes
            raise InvalidInput(f"{where}: a {tracker} tracker needs url (its site)")
        token_file = t.get("token_file")
        if not isinstance(token_file, str) or not token_file:
            raise InvalidInput(f"{where}.token_file must name the file holding the token")
        events = t.get("events", list(DEFAULT_EVENTS))
        if not isinstance(events, list) or not events or not all(e in known for e in events):
            raise InvalidInput(
                f"{where}.events must be deployment states ({', '.join(sorted(known))})"
            )
        user = t.get("user")
        if user is not None and (tracker != "jira" or not isinstance(user, str) or not user):
            raise InvalidInput(f"{where}.user is the Jira account (jira only)")
        transition = t.get("transition")
        if transition is not None:
            if tracker != "jira" or not str(transition).isdigit():
                raise InvalidInput(f"{where}.transition is a Jira transition id (jira only)")
            transition = str(transition)
        retries, timeout = t.get("retries", 3), t.get("timeout_s", 10)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise InvalidInput(f"{where}.retries must be an integer 0-10")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 60
        ):
            raise InvalidInput(f"{where}.timeout_s must be a number of seconds in (0, 60]")
        out.append(
            TrackerUpdate(
                i,
                tracker,
                url,
                token_file,
                frozenset(events),
                user,
                transition,
                retries,
                float(timeout),
            )
        )
    return out


def comment_text(change: Change, project: str) -> str:
    dep = change.deployment
    why = f" Reason: {dep.reason}" if dep.reason else ""
    return (
        f"ashat ({project}): deployment {dep.id} is now {dep.state.value}, by {change.actor}"
        f" — {dep.description}.{why}"
    )


def requests_for(update: TrackerUpdate, change: Change, project: str) -> list[dict[str, Any]]:
    """``{"method", "url", "json"}`` for each of the deployment's tasks of this tracker."""
    text = comment_text(change, project)
    out: list[dict[str, Any]] = []
    for task in change.deployment.details.get("tasks") or []:
        if task.get("kind") != update.tracker:
            continue
        if update.tracker == "jira":
            base = f"{update.url}/rest/api/3/issue/{quote(task['key'])}"
            doc = {"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": text}]}
            ]}  # fmt: skip
            out.append({"method": "POST", "url": f"{base}/comment", "json": {"body": doc}})
            if update.transition:
                body = {"transition": {"id": update.transition}}
                out.append({"method": "POST", "url": f"{base}/transitions", "json": body})
        elif update.tracker == "github":
            api = update.url or GITHUB_API
            url = f"{api}/repos/{task['repo']}/issues/{task['number']}/comments"
            out.append({"method": "POST", "url": url, "json": {"body": text}})
        else:
            if update.url is None or task.get("host") != update.url:
                continue  # an issue on another GitLab: its token is not ours to send
            host = update.url
            project_path = quote(task["project"], safe="")
            url = f"{host}/api/v4/projects/{project_path}/issues/{task['iid']}/notes"
            out.append({"method": "POST", "url": url, "json": {"body": text}})
    return out


def encode(requests: list[dict[str, Any]]) -> bytes:
    return json.dumps(requests, sort_keys=True).encode("utf-8")
