"""Task references a deployment carries (``deploy push --task REF``, issue 21), pure.

A reference is one of:

- a Jira issue key, ``SHOP-142``;
- a GitHub issue or pull request, ``https://github.com/OWNER/REPO/issues/N`` (or ``/pull/N``)
  or ``OWNER/REPO#N``;
- a GitLab issue, ``https://HOST/GROUP[/SUBGROUP…]/PROJECT/-/issues/N``;
- a free reference (a ticket of another tracker): letters, digits and ``._:-``, no spaces.

Anything that looks like one of the first three but is not one is refused, naming it, so
that a typo does not become a silent free reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ashat.errors import InvalidInput
from ashat.ids import check_text

MAX_TASKS = 20
JIRA = re.compile(r"[A-Z][A-Z0-9_]{0,30}-[1-9][0-9]{0,9}")
SHORT_GITHUB = re.compile(r"([A-Za-z0-9-]{1,39})/([A-Za-z0-9._-]{1,100})#([1-9][0-9]{0,9})")
FREE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
JIRA_LIKE = re.compile(r"[A-Z][A-Z0-9_]*-.*")  # a Jira key gone wrong, not a free reference
GITHUB_PATH = re.compile(
    r"/([A-Za-z0-9-]{1,39})/([A-Za-z0-9._-]{1,100})/(?:issues|pull)/([1-9][0-9]{0,9})"
)
HELP = (
    "a Jira key (SHOP-142), a GitHub issue (https://github.com/OWNER/REPO/issues/N or "
    "OWNER/REPO#N), a GitLab issue (https://HOST/GROUP/PROJECT/-/issues/N) or a free "
    "reference (letters, digits, ._:-)"
)


def parse_task(ref: str) -> dict[str, Any]:
    """The reference as the deployment records it: ``ref``, ``kind`` (jira, github, gitlab,
    other) and what a tracker needs. Raises :class:`InvalidInput`."""
    text = check_text(ref.strip(), "--task")
    if m := SHORT_GITHUB.fullmatch(text):
        return _github(text, m.group(1), m.group(2), int(m.group(3)))
    if text.startswith(("http://", "https://")):
        return _url(text)
    if JIRA.fullmatch(text):
        return {"ref": text, "kind": "jira", "key": text}
    if "#" in text or "/" in text or JIRA_LIKE.fullmatch(text) or not FREE.fullmatch(text):
        raise InvalidInput(f"--task {ref[:120]!r} is not a task reference: give {HELP}")
    return {"ref": text, "kind": "other"}


def parse_tasks(refs: Iterable[str]) -> list[dict[str, Any]]:
    """Each reference parsed, duplicates dropped, at most MAX_TASKS."""
    out: list[dict[str, Any]] = []
    for ref in refs:
        task = parse_task(ref)
        if task["ref"] not in {t["ref"] for t in out}:
            out.append(task)
    if len(out) > MAX_TASKS:
        raise InvalidInput(f"at most {MAX_TASKS} --task references, not {len(out)}")
    return out


def _github(ref: str, owner: str, repo: str, number: int) -> dict[str, Any]:
    return {"ref": ref, "kind": "github", "repo": f"{owner}/{repo}", "number": number}


def _url(ref: str) -> dict[str, Any]:
    parts = urlsplit(ref)
    path = parts.path.rstrip("/")
    if parts.hostname == "github.com":
        m = GITHUB_PATH.fullmatch(path)
        if m:
            return _github(ref, m.group(1), m.group(2), int(m.group(3)))
    else:
        m = re.fullmatch(
            r"/((?:[A-Za-z0-9._-]+/)+[A-Za-z0-9._-]+)/-/issues/([1-9][0-9]{0,9})", path
        )
        if m and parts.hostname and not parts.username:
            return {
                "ref": ref,
                "kind": "gitlab",
                "host": f"{parts.scheme}://{parts.netloc}",
                "project": m.group(1),
                "iid": int(m.group(2)),
            }
    raise InvalidInput(f"--task {ref[:120]!r} is not an issue's URL: give {HELP}")
