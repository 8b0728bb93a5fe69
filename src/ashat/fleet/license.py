"""Licenses: Ed25519-signed tokens that entitle one mainframe to updates on some channels.

A license is an envelope (:mod:`.envelope`) of kind ``license`` whose payload holds
``license_id``, ``mainframe_id``, ``customer``, ``channels``, ``issued_at`` and
``expires_at`` (ISO 8601 UTC). OMEGA checks one on every poll with :func:`check_license`;
each refusal names its reason (``expired``, ``revoked``, ``wrong_channel``,
``wrong_region``, ``forged``, ``malformed``, ``wrong_mainframe``) so both sides can say why
no update comes. A license may name a ``region``: only that region's OMEGA serves it.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashat.bundle.keys import PublicKey, SigningKey
from ashat.clock import iso_seconds
from ashat.clock import parse as parse_time
from ashat.errors import InvalidInput
from ashat.fleet.envelope import EnvelopeError, Forged, peek_payload, seal, unseal
from ashat.ids import validate_region
from ashat.labels import LabelError, check_labels

KIND = "license"
MAINFRAME_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
CHANNEL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class LicenseRefused(InvalidInput):
    """OMEGA will not serve this license; ``reason`` is one word, ``message`` a sentence."""

    kind = "license_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


@dataclass(frozen=True)
class License:
    license_id: str
    mainframe_id: str
    customer: str
    channels: tuple[str, ...]
    issued_at: str
    expires_at: str
    keyid: str
    region: str | None = None  # the OMEGA region it is served in (None: any)
    labels: Mapping[str, str] = field(default_factory=dict)  # for targeting (ashat/labels.py)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "license_id": self.license_id,
            "mainframe_id": self.mainframe_id,
            "customer": self.customer,
            "channels": list(self.channels),
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "keyid": self.keyid,
        }
        if self.labels:
            out["labels"] = dict(self.labels)
        return {**out, "region": self.region} if self.region else out


_iso = iso_seconds  # licenses are written to the second


def parse_expiry(text: str, now: dt.datetime) -> dt.datetime:
    """``YYYY-MM-DD`` (end of that day, UTC) or a full ISO 8601 time; must be after ``now``."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            when = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
        else:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if when.tzinfo is None:
                raise InvalidInput(f"--expires {text!r} needs a timezone (or give a date)")
        when = when.astimezone(dt.UTC)  # as it is written in the license
    except OverflowError as e:
        raise InvalidInput(f"--expires {text!r} is past the year 9999 (in UTC)") from e
    except ValueError as e:
        raise InvalidInput(f"--expires {text!r} is not a date (YYYY-MM-DD) or ISO time") from e
    if when <= now:
        raise InvalidInput(f"--expires {text!r} is in the past")
    return when


def issue(
    key: SigningKey,
    mainframe_id: str,
    customer: str,
    expires_at: dt.datetime,
    channels: Collection[str] = ("stable",),
    now: dt.datetime | None = None,
    license_id: str | None = None,
    region: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[str, License]:
    """A new signed license token and its parsed form; with ``region``, only that region's
    OMEGA (``ashat agent --role omega --region``) serves it; ``labels`` (``ring=pilot``)
    are the mainframe's for targeting (ashat/labels.py)."""
    if not MAINFRAME_ID_RE.fullmatch(mainframe_id):
        raise InvalidInput(f"invalid mainframe id {mainframe_id!r}: [a-z0-9][a-z0-9._-]{{0,63}}")
    customer = customer.strip()
    if not customer or len(customer) > 200 or not customer.isprintable():
        raise InvalidInput("the customer name must be 1-200 printable characters")
    chans = sorted(set(channels))
    if not chans or not all(CHANNEL_RE.fullmatch(c) for c in chans):
        raise InvalidInput(f"invalid channel(s) {chans}: [a-z0-9][a-z0-9_-]{{0,31}}")
    now = now or dt.datetime.now(dt.UTC)
    payload: dict[str, Any] = {
        "license_id": license_id or f"lic-{secrets.token_hex(8)}",
        "mainframe_id": mainframe_id,
        "customer": customer,
        "channels": chans,
        "issued_at": _iso(now),
        "expires_at": _iso(expires_at),
    }
    if region is not None:
        payload["region"] = validate_region(region)
    if labels:
        try:
            payload["labels"] = check_labels(labels)
        except LabelError as e:
            raise InvalidInput(f"--label: {e}") from e
    token = seal(KIND, payload, key)
    return token, _from_payload({**payload, "keyid": key.keyid})


def _from_payload(p: dict[str, Any]) -> License:
    try:
        lic = License(
            license_id=str(p["license_id"]),
            mainframe_id=str(p["mainframe_id"]),
            customer=str(p["customer"]),
            channels=tuple(str(c) for c in p["channels"]),
            issued_at=str(p["issued_at"]),
            expires_at=str(p["expires_at"]),
            keyid=str(p["keyid"]),
            region=str(p["region"]) if p.get("region") is not None else None,
            labels=check_labels(p.get("labels") or {}),
        )
        parse_time(lic.expires_at)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LicenseRefused("malformed", f"license payload is malformed: {e}") from e
    return lic


def unseal_or_refuse(
    token: str, kind: str, trusted: Mapping[str, PublicKey], prefix: str = ""
) -> dict[str, Any]:
    """The payload of ``token``, a ``kind`` envelope signed by a ``trusted`` key; else
    :class:`LicenseRefused`, ``forged`` or ``malformed`` (after ``prefix``)."""
    try:
        return unseal(token, kind, trusted)
    except Forged as e:
        raise LicenseRefused(f"{prefix}forged", e.message) from e
    except EnvelopeError as e:
        raise LicenseRefused(f"{prefix}malformed", e.message) from e


def read_license(token: str, trusted: Mapping[str, PublicKey]) -> License:
    """Parse and authenticate a token (no expiry or revocation judgement)."""
    return _from_payload(unseal_or_refuse(token, KIND, trusted))


def peek_license(token: str) -> License:
    """Parse a token WITHOUT checking its signature: for the mainframe holding it, which
    has no license key and needs only its own id (OMEGA authenticates it on every poll).

    Raises :class:`LicenseRefused` (``malformed``).
    """
    try:
        payload = peek_payload(token, KIND)
    except EnvelopeError as e:
        raise LicenseRefused("malformed", e.message) from e
    return _from_payload(payload)


def check_license(
    token: str,
    trusted: Mapping[str, PublicKey],
    *,
    now: dt.datetime,
    revoked: Collection[str] = (),
    channel: str | None = None,
    mainframe_id: str | None = None,
    region: str | None = None,
) -> License:
    """The license if OMEGA may serve it now; else :class:`LicenseRefused` with the reason."""
    lic = read_license(token, trusted)
    return judge_license(
        lic, now=now, revoked=revoked, channel=channel, mainframe_id=mainframe_id, region=region
    )


def judge_license(
    lic: License,
    *,
    now: dt.datetime,
    revoked: Collection[str] = (),
    channel: str | None = None,
    mainframe_id: str | None = None,
    region: str | None = None,
) -> License:
    """``lic`` (authenticated) if OMEGA (of ``region``, if it has one) may serve it now;
    else :class:`LicenseRefused`."""
    if mainframe_id is not None and lic.mainframe_id != mainframe_id:
        raise LicenseRefused(
            "wrong_mainframe",
            f"license {lic.license_id} is for mainframe {lic.mainframe_id}, not {mainframe_id}",
        )
    if lic.license_id in revoked:
        raise LicenseRefused("revoked", f"license {lic.license_id} has been revoked")
    expires = parse_time(lic.expires_at)
    if expires <= now:
        raise LicenseRefused("expired", f"license {lic.license_id} expired at {lic.expires_at}")
    if channel is not None and channel not in lic.channels:
        raise LicenseRefused(
            "wrong_channel",
            f"license {lic.license_id} covers channel(s) {', '.join(lic.channels)}, "
            f"not {channel!r}",
        )
    if lic.region is not None and region is not None and lic.region != region:
        raise LicenseRefused(
            "wrong_region",
            f"license {lic.license_id} is for region {lic.region}; this OMEGA serves {region}",
        )
    return lic


MAX_LICENSE_BYTES = 64 * 1024  # bytes of a license file


def read_license_file(path: Path) -> tuple[str, str, str]:
    """The ``--license`` file's token, and the mainframe id and license id it names.

    The signature is not checked here — a mainframe has no license key; OMEGA checks it on
    every poll. Raises :class:`InvalidInput` naming the file, never quoting the token.
    """
    from ashat.agent.config import read_option_file

    data = read_option_file(path, "--license", MAX_LICENSE_BYTES)
    token = data.decode("utf-8", "replace").strip()
    try:
        lic = peek_license(token)
    except LicenseRefused as e:
        raise InvalidInput(f"--license file {path} does not hold a license: {e.message}") from e
    return token, lic.mainframe_id, lic.license_id
