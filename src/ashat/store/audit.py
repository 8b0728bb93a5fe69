"""The audit hash chain, as pure functions over event rows.

Each event's hash is ``sha256(prev_hash || canonical_json(body))`` where ``body`` holds the
event's sequence number, deployment, kind, actor, time and details. The sequence number is
hashed too, so a deleted or reordered row breaks the next link; the chain head (last seq and
hash, kept in its own row) catches rows deleted from the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from ashat.canonical import canonical_json
from ashat.workflow.models import ChainReport, Event

GENESIS_HASH = "0" * 64


def event_body(
    seq: int, deployment_id: str | None, kind: str, actor: str, at: str, details: dict[str, Any]
) -> dict[str, Any]:
    return {
        "seq": seq,
        "deployment_id": deployment_id,
        "kind": kind,
        "actor": actor,
        "at": at,
        "details": details,
    }


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(body)).hexdigest()


def verify_chain(
    events: Iterable[Event], head_seq: int, head_hash: str, at: tuple[int, str] | None = None
) -> ChainReport:
    """Walk ``events`` (in seq order) and report the first broken link, if any.

    ``at``: an event's ``(seq, hash)`` recorded outside the store (an earlier report's
    head). The chain's hash is not keyed, so a writer of the store can re-hash every event
    after one they changed, and move the head; an anchor kept elsewhere finds that, for the
    events up to it, and a chain cut short below it."""
    prev_hash = GENESIS_HASH
    expected_seq = 1
    count = 0
    for ev in events:
        count += 1
        label = f"event #{ev.seq} ({ev.kind}, {ev.at})"
        if at is not None and ev.seq == at[0] and ev.hash != at[1]:
            return ChainReport(
                False,
                count,
                ev.seq,
                f"{label} is not the event recorded as #{at[0]} (hash {at[1][:16]}…): the "
                "chain was rewritten from it or before",
            )
        if ev.seq != expected_seq:
            return ChainReport(
                False,
                count,
                expected_seq,
                f"event #{expected_seq} is missing: the chain jumps from "
                f"#{expected_seq - 1} to #{ev.seq} (deleted)",
            )
        if ev.prev_hash != prev_hash:
            return ChainReport(
                False,
                count,
                ev.seq,
                f"{label} does not link to the event before it (prev_hash altered, "
                "or an earlier event was replaced)",
            )
        body = event_body(ev.seq, ev.deployment_id, ev.kind, ev.actor, ev.at, ev.details)
        if chain_hash(prev_hash, body) != ev.hash:
            return ChainReport(False, count, ev.seq, f"{label} does not match its hash (altered)")
        prev_hash = ev.hash
        expected_seq += 1
    last_seq = expected_seq - 1
    if at is not None and at[0] > last_seq:
        return ChainReport(
            False,
            count,
            last_seq + 1,
            f"the chain ends at #{last_seq}, before #{at[0]} recorded: events were removed "
            "from its end (the head moved with them)",
        )
    if last_seq != head_seq or prev_hash != head_hash:
        if head_seq > last_seq:
            return ChainReport(
                False,
                count,
                last_seq + 1,
                f"events #{last_seq + 1}..#{head_seq} are missing from the end of the chain "
                "(deleted)",
            )
        return ChainReport(
            False,
            count,
            last_seq,
            f"the chain head (#{head_seq}) does not match the last event (#{last_seq}) (altered)",
        )
    return ChainReport(True, count, head=(last_seq, prev_hash) if last_seq else None)
