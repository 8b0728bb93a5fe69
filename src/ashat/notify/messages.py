"""What a webhook receives for a state change, and how it is signed (pure).

``json``: one object (``schema`` ``ashat.notification/1``) with the event (the state
reached), the deployment, who and when. ``slack``: ``{"text": ...}``, what a Slack incoming
webhook posts. With a secret, ``X-Ashat-Signature: sha256=<hex>`` is the HMAC-SHA256 of the
exact body bytes under that secret; a receiver recomputes it and compares in constant time.
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
        "deployment": dep.to_json(),
    }


def slack_text(change: Change, project: str) -> str:
    dep = change.deployment
    was = f" (was {change.previous.value})" if change.previous else ""
    text = f"[{project}] *{dep.id}* is now *{dep.state.value}*{was}, by {change.actor}"
    text += f": {dep.description}"
    if dep.reason:
        text += f"\nReason: {dep.reason}"
    return text


def render(change: Change, project: str, fmt: str) -> Message:
    data: dict[str, Any] = (
        {"text": slack_text(change, project)} if fmt == "slack" else payload(change, project)
    )
    body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return Message(change.deployment.state.value, change.deployment.id, change.actor, body)


def signature(secret: str, body: bytes) -> str:
    """The value of the signature header for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)
