"""Validation of the identifiers a user types: update ids, tier names, people's names."""

from __future__ import annotations

import re

from ashat.errors import InvalidInput

HTTP_URL_RE = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")  # a server's URL, in options
UPDATE_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
TIERS = ("public", "omega")
REGION_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")  # an OMEGA region: eu, us-east
APP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")  # [app] name; a host agent's --apps
APP_NAME_RULE = (
    "lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 40"
)


def validate_update_id(value: str) -> str:
    """Return ``value`` if it is a valid update id, else raise :class:`InvalidInput`."""
    if not isinstance(value, str) or UPDATE_ID_RE.fullmatch(value) is None:
        raise InvalidInput(
            f"invalid update id {value!r}: use 1-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


# What free text a person writes may not hold: control characters (C0 but tab and, where
# lines are allowed, newline; DEL; C1) and the bidirectional overrides and isolates. Printed
# to another user's terminal they move the cursor, erase lines, set the clipboard (OSC 52)
# or reverse text: a description could forge a "Reviewed-by" line under it.
_CONTROL = "\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069"
UNSAFE_TEXT_RE = re.compile(f"[{_CONTROL}\\n]")
UNSAFE_LINES_RE = re.compile(f"[{_CONTROL}]")
SAFE_TEXT_PATTERN = f"^[^\\u0000{_CONTROL}]*$"  # the same, for a JSON schema (ECMA-262)


def check_text(value: str, what: str, *, lines: bool = False) -> str:
    """``value`` if it holds no control character (a newline only with ``lines``) nor
    bidirectional override, else :class:`InvalidInput` naming ``what`` and the first one."""
    found = (UNSAFE_LINES_RE if lines else UNSAFE_TEXT_RE).search(value)
    if found is not None:
        raise InvalidInput(
            f"{what} may not contain control characters "
            f"(U+{ord(found.group()):04X} at character {found.start() + 1})"
        )
    return value


def validate_app_name(value: str) -> str:
    """Return ``value`` if it can be an ``[app] name`` (the name a host agent's ``--apps``
    serves it by), else raise :class:`InvalidInput`."""
    if not isinstance(value, str) or APP_NAME_RE.fullmatch(value) is None:
        raise InvalidInput(f"app name {value!r}: {APP_NAME_RULE}")
    return value


def app_name_from(text: str) -> str:
    """An app name made from ``text`` (a directory's name): "My Shop" gives "my-shop"."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:40].rstrip("-_")
    return name or "app"


def validate_tier(value: str) -> str:
    """``public``, ``omega``, or ``omega@REGION``: the OMEGA of one region."""
    if value in TIERS:
        return value
    tier, _, region = value.partition("@") if isinstance(value, str) else ("", "", "")
    if tier == "omega" and REGION_RE.fullmatch(region):
        return value
    raise InvalidInput(
        f"unknown tier {value!r}: expected one of {', '.join(TIERS)} (or omega@REGION)"
    )


def validate_region(value: str) -> str:
    if not isinstance(value, str) or REGION_RE.fullmatch(value) is None:
        raise InvalidInput(
            f"invalid region {value!r}: use 1-32 characters of a-z, 0-9 or '-', starting "
            "with a letter"
        )
    return value


def omega_tier(region: str | None) -> str:
    """The tier of the OMEGA serving ``region`` (``omega`` without regions)."""
    return f"omega@{validate_region(region)}" if region else "omega"


def tier_label(tier: str) -> str:
    """``PUBLIC``, ``OMEGA``, ``OMEGA (eu)``: a tier as people read it."""
    name, _, region = tier.partition("@")
    return f"{name.upper()} ({region})" if region else name.upper()


def configure_args(tier: str) -> str:
    """What ``deploy configure`` takes to set ``tier``: ``omega <url> <name> --region eu``."""
    name, _, region = tier.partition("@")
    return f"{name} <url> <name>" + (f" --region {region}" if region else "")


def same_person(name: str) -> str:
    """What two names of one person have in common: people's names (key names, users) are
    compared ignoring case, so Bob's laptop key "Bob" and his hardware key "bob" are one
    approver, and neither approves what "bob" released."""
    return name.casefold()
