"""Blob tickets: what a mainframe shows a site cache instead of its license.

A site's caching proxy (a mainframe's ``--blob-cache``) passes each blob or pack request it
cannot answer from its copy on to OMEGA, ``Authorization`` and all, so OMEGA can check
who asks. With a license there, whoever runs the cache held every site mainframe's
license, which also polls OMEGA, takes its directives and reports as that mainframe.

A ticket is what the mainframe sends there instead: an envelope (:mod:`.envelope`) of kind
``blob_ticket`` that OMEGA signs with its own key, for a license it has just checked
(``GET /v1/fleet/blob-ticket``, asked of OMEGA itself). Its payload names the license
(``license_id``, ``mainframe_id``, ``channels``, ``region``, ``license_expires_at``) and the
ticket's own ``expires_at``, :data:`TTL_S` later at most, and the license's issuer key
(``license_keyid``), which OMEGA must still trust. OMEGA takes a ticket for blob
and pack downloads only (``GET /v1/blobs/{sha256}``, ``GET /v1/packs/…``), and judges the
license it stands for afresh on every request, as it judges a license: revoked, expired,
another channel or region is refused. So a ticket leaked by a cache fetches, for minutes,
the blobs of approved releases, as its license could, and nothing else.
Pure: keys, tokens and times in, a token or a :class:`~.license.License` out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from ashat.bundle.keys import PublicKey, SigningKey
from ashat.clock import iso_seconds
from ashat.clock import parse as parse_time
from ashat.fleet.envelope import seal
from ashat.fleet.license import License, LicenseRefused, unseal_or_refuse

KIND = "blob_ticket"
TTL_S = 600  # seconds a ticket is good for; a mainframe asks for the next one before then


def issue_ticket(
    key: SigningKey, lic: License, now: dt.datetime, ttl_s: float = TTL_S
) -> tuple[str, dt.datetime]:
    """A ticket for the (checked) license ``lic``, signed with OMEGA's ``key``, and when it
    expires: ``ttl_s`` from ``now``, or with the license if that is sooner."""
    expires = min(now + dt.timedelta(seconds=ttl_s), parse_time(lic.expires_at))
    expires = expires.replace(microsecond=0)  # as written
    payload: dict[str, Any] = {
        "license_id": lic.license_id,
        "mainframe_id": lic.mainframe_id,
        "channels": list(lic.channels),
        "region": lic.region,
        "license_expires_at": lic.expires_at,
        "license_keyid": lic.keyid,  # its issuer's key, which OMEGA must still trust
        "issued_at": iso_seconds(now),
        "expires_at": iso_seconds(expires),
    }
    return seal(KIND, payload, key), expires


def read_ticket(token: str, trusted: Mapping[str, PublicKey]) -> tuple[License, dt.datetime]:
    """The license ``token`` stands for (to be judged as that license would be) and when
    the ticket expires (:func:`check_live`), if a key in ``trusted`` (OMEGA's) signed it.
    Raises :class:`~.license.LicenseRefused`: ``ticket_forged`` or ``ticket_malformed``."""
    p = unseal_or_refuse(token, KIND, trusted, prefix="ticket_")
    try:
        region = p["region"]
        lic = License(
            license_id=str(p["license_id"]),
            mainframe_id=str(p["mainframe_id"]),
            customer="",  # not in a ticket: nothing judges it
            channels=tuple(str(c) for c in p["channels"]),
            issued_at=str(p["issued_at"]),
            expires_at=str(p["license_expires_at"]),
            keyid=str(p["license_keyid"]),  # the license's issuer, not OMEGA
            region=str(region) if region is not None else None,
        )
        parse_time(lic.expires_at)
        expires = parse_time(str(p["expires_at"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LicenseRefused("ticket_malformed", f"blob ticket payload is malformed: {e}") from e
    return lic, expires


def check_live(lic: License, expires: dt.datetime, now: dt.datetime) -> License:
    """``lic`` if its ticket (expiring at ``expires``) has not expired at ``now``. Raises
    :class:`~.license.LicenseRefused` (``ticket_expired``)."""
    if expires <= now:
        raise LicenseRefused(
            "ticket_expired",
            f"the blob ticket of license {lic.license_id} expired at {iso_seconds(expires)}: "
            "ask OMEGA for a new one (GET /v1/fleet/blob-ticket)",
        )
    return lic
