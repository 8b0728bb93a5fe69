"""What a webhook (or a mailbox) receives for a state change, and how it is signed (pure).

``json``: one object (``schema`` ``ashat.notification/1``) with the event (the state
reached), the deployment, who and when. ``slack``: ``{"text": ...}``, what a Slack incoming
webhook posts. ``teams``: a message with one Adaptive Card (1.4), what a Microsoft Teams
Workflows webhook ("Post to a channel when a webhook request is received") takes.
``email``: a subject, a plain-text and an HTML part (:func:`email_parts`), sent over SMTP.
``sms``: one line (:func:`sms_text`), through a provider's Messages API (Twilio's shape).
With a secret, ``X-Ashat-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body
bytes under that secret; a receiver recomputes it and compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from ashat.workflow.models import Change

SCHEMA = "ashat.notification/1"
SIGNATURE_HEADER = "X-Ashat-Signature"
EVENT_HEADER = "X-Ashat-Event"
DELIVERY_HEADER = "X-Ashat-Delivery"


@dataclass(frozen=True)
class Message:
    event: str  # the state reached
    update_id: str
    actor: str
    body: bytes


def payload(change: Change, project: str) -> dict[str, Any]:
    dep = change.deployment
    return {
        "schema": SCHEMA,
        "event": dep.state.value,
        "project": project,
        "update_id": dep.id,
        "state": dep.state.value,
        "previous_state": change.previous.value if change.previous else None,
        "actor": change.actor,
        "at": change.at,
        "reason": dep.reason,
        "tasks": [t.get("ref") for t in dep.details.get("tasks") or []],
        "deployment": dep.to_json(),
    }


def slack_escape(text: str) -> str:
    """``text`` as Slack shows it literally: ``&``, ``<`` and ``>`` escaped, as Slack's
    message formatting asks, so a description cannot mention ``<!channel>`` or hide a link
    behind other words (``<https://…|Approve here>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(change: Change, project: str) -> str:
    dep = change.deployment
    was = f" (was {change.previous.value})" if change.previous else ""
    text = f"[{project}] *{dep.id}* is now *{dep.state.value}*{was}, by {change.actor}"
    text += f": {dep.description}"
    if dep.reason:
        text += f"\nReason: {dep.reason}"
    return slack_escape(text)


ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


def _plain(text: str, **style: Any) -> dict[str, Any]:
    """A RichTextBlock of one TextRun: shown as written (a TextBlock and a fact's value read
    Markdown, so a description could hide a link behind other words)."""
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text, **style}]}


def teams_card(change: Change, project: str) -> dict[str, Any]:
    """A Teams message holding one Adaptive Card: a headline, what people wrote (the
    description, the reason) as plain text, and the facts."""
    dep = change.deployment
    facts = [
        {"title": "State", "value": dep.state.value},
        {"title": "Was", "value": change.previous.value if change.previous else "new"},
        {"title": "By", "value": change.actor},
        {"title": "At", "value": change.at},
        {"title": "Project", "value": project},
    ]
    written = [_plain(dep.description, isSubtle=True)]
    if dep.reason:
        written.append(_plain(f"Reason: {dep.reason}"))
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": f"{dep.id} is now {dep.state.value}",
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            *written,
            {"type": "FactSet", "facts": facts},
        ],
    }
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
    }


def email_parts(change: Change, project: str) -> dict[str, str]:
    """``subject``, ``text`` and ``html`` of the email for ``change`` (HTML escaped)."""
    from html import escape

    dep = change.deployment
    facts = [
        ("State", dep.state.value),
        ("Was", change.previous.value if change.previous else "new"),
        ("By", change.actor),
        ("At", change.at),
        ("Description", dep.description),
    ]
    if dep.reason:
        facts.append(("Reason", dep.reason))
    text = f"{dep.id} is now {dep.state.value} ({project})\n\n" + "".join(
        f"{k}: {v}\n" for k, v in facts
    )
    rows = "".join(
        f"<tr><th align=left>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts
    )
    html = (
        f"<html><body><p><b>{escape(dep.id)}</b> is now <b>{escape(dep.state.value)}</b> "
        f"({escape(project)})</p><table>{rows}</table></body></html>"
    )
    return {"subject": f"[{project}] {dep.id} is {dep.state.value}", "text": text, "html": html}


def sms_text(change: Change, project: str) -> str:
    """One line, short enough for one SMS segment when the names are."""
    dep = change.deployment
    why = f": {dep.reason}" if dep.reason else ""
    return f"[{project}] {dep.id} is now {dep.state.value}, by {change.actor}{why}"[:300]


def render(change: Change, project: str, fmt: str) -> Message:
    data: dict[str, Any]
    if fmt == "sms":
        data = {"text": sms_text(change, project)}
    elif fmt == "email":
        data = email_parts(change, project)
    elif fmt == "slack":
        data = {"text": slack_text(change, project)}
    elif fmt == "teams":
        data = teams_card(change, project)
    else:
        data = payload(change, project)
    body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return Message(change.deployment.state.value, change.deployment.id, change.actor, body)


def signature(secret: str, body: bytes) -> str:
    """The value of the signature header for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)
