"""Licenses and signed envelopes: every refusal reason, and tokens that cannot be replayed."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ashat.bundle.keys import SigningKey
from ashat.errors import InvalidInput
from ashat.fleet.envelope import EnvelopeError, Forged, seal, trusted_map, unseal
from ashat.fleet.license import LicenseRefused, check_license, issue, parse_expiry

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
KEY = SigningKey.generate()
TRUSTED = trusted_map([KEY.public])


def make(**kw: object) -> str:
    args: dict = {
        "mainframe_id": "mf-1",
        "customer": "ACME",
        "expires_at": NOW + dt.timedelta(days=30),
    }
    args.update(kw)
    token, _ = issue(KEY, now=NOW, **args)  # type: ignore[arg-type]
    return token


def test_valid_license_round_trips() -> None:
    lic = check_license(make(channels=["stable", "beta"]), TRUSTED, now=NOW, channel="beta")
    assert lic.mainframe_id == "mf-1" and lic.channels == ("beta", "stable")
    assert lic.keyid == KEY.keyid


@pytest.mark.parametrize(
    ("kw", "check", "reason"),
    [
        ({}, {"now": NOW + dt.timedelta(days=31)}, "expired"),
        ({"license_id": "lic-x"}, {"revoked": {"lic-x"}}, "revoked"),
        ({}, {"channel": "beta"}, "wrong_channel"),
        ({}, {"mainframe_id": "mf-2"}, "wrong_mainframe"),
    ],
)
def test_refusals_name_their_reason(kw: dict, check: dict, reason: str) -> None:
    args = {"now": NOW, **check}
    with pytest.raises(LicenseRefused) as e:
        check_license(make(**kw), TRUSTED, **args)
    assert e.value.reason == reason


def test_license_signed_by_another_key_is_forged() -> None:
    other = SigningKey.generate()
    token, _ = issue(other, "mf-1", "ACME", NOW + dt.timedelta(days=1), now=NOW)
    with pytest.raises(LicenseRefused) as e:
        check_license(token, TRUSTED, now=NOW)
    assert e.value.reason == "forged"


def test_altered_payload_is_forged() -> None:
    kind, body, sig = make().split(".")
    import base64
    import json

    raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw["expires_at"] = "2099-01-01T00:00:00Z"
    from ashat.canonical import canonical_json

    forged_body = base64.urlsafe_b64encode(canonical_json(raw)).rstrip(b"=").decode()
    with pytest.raises(LicenseRefused) as e:
        check_license(f"{kind}.{forged_body}.{sig}", TRUSTED, now=NOW)
    assert e.value.reason == "forged"


@pytest.mark.parametrize("token", ["", "a.b", "license.!!!.???", "x" * 70000])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(LicenseRefused) as e:
        check_license(token, TRUSTED, now=NOW)
    assert e.value.reason == "malformed"


def test_envelope_kind_cannot_be_swapped() -> None:
    token = seal("directive", {"a": 1}, KEY)
    assert unseal(token, "directive", TRUSTED)["a"] == 1
    swapped = "license" + token[len("directive") :]
    with pytest.raises(Forged):
        unseal(swapped, "license", TRUSTED)
    with pytest.raises(EnvelopeError):
        unseal(token, "license", TRUSTED)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"mainframe_id": "Bad Id"}, "invalid mainframe id"),
        ({"customer": " "}, "customer name"),
        ({"channels": ["Not OK"]}, "invalid channel"),
    ],
)
def test_issue_refuses_bad_fields(kw: dict, fragment: str) -> None:
    with pytest.raises(InvalidInput) as e:
        make(**kw)
    assert fragment in e.value.message


def test_parse_expiry() -> None:
    assert parse_expiry("2026-12-31", NOW) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert parse_expiry("2027-01-01T00:00:00Z", NOW).year == 2027
    for bad in ("2020-01-01", "tomorrow", "2027-01-01T00:00:00", "9999-12-31",
                "9999-12-31T23:00:00-05:00"):  # fmt: skip
        with pytest.raises(InvalidInput):
            parse_expiry(bad, NOW)


# --- properties: any license round-trips; any change to its token is refused -------------

_ids = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
_channels = st.lists(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True), min_size=1)
_customers = st.text(min_size=1, max_size=40).filter(lambda c: c.strip() and c.isprintable())


@settings(max_examples=60)
@given(
    mainframe_id=_ids,
    customer=_customers,
    channels=_channels,
    days=st.integers(1, 3650),
    license_id=_ids,
)
def test_any_issued_license_reads_back_as_issued(
    mainframe_id: str, customer: str, channels: list[str], days: int, license_id: str
) -> None:
    token, lic = issue(
        KEY,
        mainframe_id,
        customer,
        NOW + dt.timedelta(days=days),
        channels,
        now=NOW,
        license_id=license_id,
    )
    assert token.isprintable() and " " not in token  # one line in a file or a header
    back = check_license(token, TRUSTED, now=NOW, channel=channels[0], mainframe_id=mainframe_id)
    assert back == lic
    assert (back.mainframe_id, back.customer, back.license_id) == (
        mainframe_id,
        customer.strip(),
        license_id,
    )
    assert back.channels == tuple(sorted(set(channels)))


TOKEN = make(channels=["stable", "beta"], license_id="lic-prop")
_token_chars = st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/!"
)


@st.composite
def token_mutations(draw: st.DrawFn) -> str:
    at = draw(st.integers(0, len(TOKEN) - 1))
    how = draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
    if how == "replace":
        c = draw(_token_chars.filter(lambda c: c != TOKEN[at]))
        return TOKEN[:at] + c + TOKEN[at + 1 :]
    if how == "insert":
        return TOKEN[:at] + draw(_token_chars) + TOKEN[at:]
    if how == "delete":
        return TOKEN[:at] + TOKEN[at + 1 :]
    other = draw(st.integers(0, len(TOKEN) - 1).filter(lambda j: TOKEN[j] != TOKEN[at]))
    chars = list(TOKEN)
    chars[at], chars[other] = chars[other], chars[at]
    return "".join(chars)


def test_the_unmutated_token_is_accepted() -> None:
    assert check_license(TOKEN, TRUSTED, now=NOW).license_id == "lic-prop"


@settings(max_examples=400)
@given(token_mutations())
def test_any_change_to_a_license_token_is_refused(mutated: str) -> None:
    with pytest.raises(LicenseRefused) as e:
        check_license(mutated, TRUSTED, now=NOW)
    assert e.value.reason in ("forged", "malformed")


def test_another_spelling_of_the_signature_is_refused() -> None:
    """The last base64url character of a 64-byte signature carries 2 bits; the other 4 are
    ignored by the stdlib decoder, so three other characters decode to the same bytes."""
    kind, body, sig = TOKEN.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    raw = base64.urlsafe_b64decode(sig + "==")
    twins = [
        sig[:-1] + c
        for c in alphabet
        if c != sig[-1] and base64.urlsafe_b64decode(sig[:-1] + c + "==") == raw
    ]
    assert twins
    with pytest.raises(LicenseRefused) as e:
        check_license(f"{kind}.{body}.{twins[0]}", TRUSTED, now=NOW)
    assert e.value.reason == "malformed"
