"""Validation of the identifiers a user types: update ids and tier names."""

from __future__ import annotations

import re

from ashat.errors import InvalidInput

HTTP_URL_RE = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")  # a server's URL, in options
UPDATE_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
TIERS = ("public", "omega")


def validate_update_id(value: str) -> str:
    """Return ``value`` if it is a valid update id, else raise :class:`InvalidInput`."""
    if not isinstance(value, str) or UPDATE_ID_RE.fullmatch(value) is None:
        raise InvalidInput(
            f"invalid update id {value!r}: use 1-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def validate_tier(value: str) -> str:
    if value not in TIERS:
        raise InvalidInput(f"unknown tier {value!r}: expected one of {', '.join(TIERS)}")
    return value
