"""The bodies of OMEGA's fleet routes, checked: pure parsing into frozen values.

Each ``parse`` raises :class:`~ashat.agent.errors.RequestInvalid` (400) naming the field at
fault; the service (:mod:`.omega`) then only sees well-formed requests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ashat.agent.errors import RequestInvalid
from ashat.bake import NO_BAKE, BakePolicy, PolicyError
from ashat.canonical import canonical_json
from ashat.fleet.license import CHANNEL_RE
from ashat.ids import UPDATE_ID_RE
from ashat.waves import check_waves

DEFAULT_WAVES = (10, 50, 100)
DEFAULT_MAX_FAILURE_RATIO = 0.2
DEFAULT_WAVE_TIMEOUT_S = 600.0
MAX_WAVE_TIMEOUT_S = 7 * 24 * 3600.0
MIN_WAVE_TIMEOUT_S = 0.01
MAX_REASON_CHARS = 2000
MAX_RECORD_BYTES = 512 * 1024  # bytes of canonical approval record (evidence, roots)
_LICENSE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_ROLLOUT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise RequestInvalid(f"{key!r} must be a number from {lo:g} to {hi:g}, not {value!r}")
    return float(value)


def update_id(value: Any, key: str) -> str:
    if not isinstance(value, str) or not UPDATE_ID_RE.fullmatch(value):
        raise RequestInvalid(f"{key!r} must be an update id, not {str(value)[:80]!r}")
    return value


def reason(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestInvalid("'reason' must be a string or null")
    return value[:MAX_REASON_CHARS]


def wave_timeout(body: Mapping[str, Any]) -> float:
    return number(
        body, "wave_timeout_s", DEFAULT_WAVE_TIMEOUT_S, MIN_WAVE_TIMEOUT_S, MAX_WAVE_TIMEOUT_S
    )


def approval_record(for_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The approval record of ``POST /v1/releases/{id}/approve``: an object for ``for_id``."""
    update_id(for_id, "update id")
    record = body.get("approval")
    if not isinstance(record, dict):
        raise RequestInvalid("'approval' must be the approval record (a JSON object)")
    if record.get("update_id", for_id) != for_id:
        raise RequestInvalid(
            f"the approval record is for {str(record.get('update_id'))[:80]!r}, not {for_id}"
        )
    sequence = record.get("sequence")
    if sequence is not None and (isinstance(sequence, bool) or not isinstance(sequence, int)):
        raise RequestInvalid("the approval record's 'sequence' must be an integer or null")
    try:
        size = len(canonical_json(record))
    except (TypeError, ValueError) as e:
        raise RequestInvalid(f"the approval record is not plain JSON ({e})") from e
    if size > MAX_RECORD_BYTES:
        raise RequestInvalid(f"the approval record is over {MAX_RECORD_BYTES} bytes")
    return dict(record)


def license_id(body: Mapping[str, Any]) -> str:
    """The ``license_id`` of ``POST /v1/fleet/revocations``."""
    value = body.get("license_id")
    if not isinstance(value, str) or not _LICENSE_ID_RE.fullmatch(value):
        raise RequestInvalid("'license_id' must be a license id")
    return value


@dataclass(frozen=True)
class RolloutRequest:
    """``POST /v1/fleet/rollouts``."""

    update_id: str
    channel: str = "stable"
    waves: tuple[int, ...] = DEFAULT_WAVES
    max_failure_ratio: float = DEFAULT_MAX_FAILURE_RATIO
    wave_timeout_s: float = DEFAULT_WAVE_TIMEOUT_S
    auto_rollback: bool = True
    pause_after: tuple[int, ...] = ()  # waves (0-based) after which it waits for resume
    bake: BakePolicy = NO_BAKE  # bake_s, prometheus, analysis (ashat/bake.py)
    selector: str | None = None  # "to": the mainframes it is for (ashat/labels.py)
    rings: tuple[str, ...] = ()  # selectors whose mainframes go first, a wave each, in order

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> RolloutRequest:
        channel = body.get("channel", "stable")
        if not isinstance(channel, str) or not CHANNEL_RE.fullmatch(channel):
            raise RequestInvalid(f"'channel' must be a channel name, not {str(channel)[:40]!r}")
        waves = body.get("waves", list(DEFAULT_WAVES))
        try:
            checked = check_waves(waves if isinstance(waves, list) else [])
        except ValueError as e:
            raise RequestInvalid(f"'waves': {e}") from e
        auto = body.get("auto_rollback", True)
        if not isinstance(auto, bool):
            raise RequestInvalid("'auto_rollback' must be true or false")
        gates = body.get("pause_after", [])
        if (
            not isinstance(gates, list)
            or not all(isinstance(g, int) and not isinstance(g, bool) for g in gates)
            or gates != sorted(set(gates))
            or not all(0 <= g < len(checked) - 1 for g in gates)
        ):
            raise RequestInvalid(
                "'pause_after' must be increasing wave indexes before the last wave, "
                f"not {str(gates)[:60]}"
            )
        try:
            bake = BakePolicy.parse(body, "the request")
        except PolicyError as e:
            raise RequestInvalid(str(e)) from e
        return cls(
            update_id=update_id(body.get("update_id"), "update_id"),
            channel=channel,
            waves=checked,
            max_failure_ratio=number(
                body, "max_failure_ratio", DEFAULT_MAX_FAILURE_RATIO, 0.0, 1.0
            ),
            wave_timeout_s=wave_timeout(body),
            auto_rollback=auto,
            pause_after=tuple(gates),
            bake=bake,
            selector=_selector(body.get("to")),
            rings=_rings(body.get("rings")),
        )


def _selector(value: Any) -> str | None:
    """``to``: a label selector, kept in its canonical spelling; None (or ``*``): all."""
    from ashat.labels import LabelError, parse_selector

    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestInvalid("'to' must be a label selector, e.g. \"ring=pilot\"")
    try:
        selector = parse_selector(value)
    except LabelError as e:
        raise RequestInvalid(f"'to': {e}") from e
    return None if selector.everyone else str(selector)


MAX_RINGS = 10


def _rings(value: Any) -> tuple[str, ...]:
    """``rings``: up to ten selectors, each one wave before the percentage waves."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_RINGS:
        raise RequestInvalid(f"'rings' must be a list of at most {MAX_RINGS} label selectors")
    rings = [_selector(v) for v in value]
    if any(r is None for r in rings) or len(set(rings)) != len(rings):
        raise RequestInvalid("'rings' must be distinct selectors, none of them '*' (the rest)")
    return tuple(str(r) for r in rings)


@dataclass(frozen=True)
class RollbackRequest:
    """``POST /v1/fleet/rollback``."""

    from_id: str
    to_id: str | None
    reason: str
    wave_timeout_s: float | None = None  # None: the release's own rollout's

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> RollbackRequest:
        to_id = body.get("to")
        return cls(
            from_id=update_id(body.get("from"), "from"),
            to_id=None if to_id is None else update_id(to_id, "to"),
            reason=reason(body.get("reason")) or "operator rollback",
            wave_timeout_s=wave_timeout(body) if body.get("wave_timeout_s") is not None else None,
        )


@dataclass(frozen=True)
class Report:
    """``POST /v1/fleet/report``."""

    rollout_id: str
    update_id: str
    installed: bool
    reason: str | None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Report:
        rollout_id = body.get("rollout_id")
        if not isinstance(rollout_id, str) or not _ROLLOUT_ID_RE.fullmatch(rollout_id):
            raise RequestInvalid("'rollout_id' must be a rollout id")
        status = body.get("status")
        if status not in ("installed", "failed"):
            raise RequestInvalid(f"'status' must be 'installed' or 'failed', not {status!r}")
        return cls(
            rollout_id=rollout_id,
            update_id=update_id(body.get("update_id"), "update_id"),
            installed=status == "installed",
            reason=reason(body.get("reason")),
        )

    @property
    def status(self) -> str:
        return "installed" if self.installed else "failed"
