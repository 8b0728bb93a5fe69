"""Blob tickets (fleet/tickets.py): what a mainframe shows a site cache instead of its
license. Signed by OMEGA, for the license it stands for, for minutes, and never a license."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest

from ashat.bundle.keys import SigningKey
from ashat.fleet.license import LicenseRefused, issue, read_license
from ashat.fleet.mainframe import (
    BlobRoutes,
    NoTicket,
    TicketAuth,
    before_tickets,
    ticket_answer,
)
from ashat.fleet.tickets import TTL_S, check_live, issue_ticket, read_ticket

NOW = dt.datetime(2026, 12, 8, 12, 0, 0, tzinfo=dt.UTC)
OMEGA = SigningKey.generate()
ISSUER = SigningKey.generate()
TRUSTED = {OMEGA.keyid: OMEGA.public}


def _license(expires: dt.datetime = NOW + dt.timedelta(days=30)) -> tuple[str, object]:
    return issue(
        ISSUER, "mf-1", "ACME", expires, ("stable", "beta"), now=NOW - dt.timedelta(days=1),
        license_id="lic-1", region="eu",
    )  # fmt: skip


def _reason(token: str, now: dt.datetime = NOW) -> str:
    with pytest.raises(LicenseRefused) as e:
        check_live(*read_ticket(token, TRUSTED), now)
    return e.value.reason


def test_a_ticket_stands_for_its_license_for_minutes() -> None:
    token, lic = _license()
    ticket, expires = issue_ticket(OMEGA, lic, NOW)  # type: ignore[arg-type]
    assert expires == NOW + dt.timedelta(seconds=TTL_S)
    assert token not in ticket and "ACME" not in ticket  # not the license, nor its customer
    got, until = read_ticket(ticket, TRUSTED)
    assert until == expires
    assert check_live(got, until, NOW + dt.timedelta(seconds=TTL_S - 1)) == got
    assert (got.license_id, got.mainframe_id, got.channels, got.region) == (
        "lic-1", "mf-1", ("beta", "stable"), "eu",
    )  # fmt: skip
    assert got.expires_at == lic.expires_at  # type: ignore[attr-defined]
    assert got.keyid == ISSUER.keyid  # the license's issuer, which OMEGA must still trust
    # it expires, and never outlives its license
    assert _reason(ticket, NOW + dt.timedelta(seconds=TTL_S)) == "ticket_expired"
    _, soon = _license(expires=NOW + dt.timedelta(seconds=30))
    _, expires = issue_ticket(OMEGA, soon, NOW)  # type: ignore[arg-type]
    assert expires == NOW + dt.timedelta(seconds=30)


def test_only_omegas_own_unaltered_tickets_are_taken() -> None:
    token, lic = _license()
    assert _reason(issue_ticket(SigningKey.generate(), lic, NOW)[0]) == "ticket_forged"  # type: ignore[arg-type]
    ticket, _ = issue_ticket(OMEGA, lic, NOW)  # type: ignore[arg-type]
    kind, body, sig = ticket.split(".")
    other, _ = issue_ticket(OMEGA, _license()[1], NOW + dt.timedelta(seconds=1))  # type: ignore[arg-type]
    assert _reason(f"{kind}.{other.split('.')[1]}.{sig}") == "ticket_forged"  # a body swapped
    assert _reason(f"{kind}.{body}x.{sig}") == "ticket_malformed"
    assert _reason("blob_ticket") == "ticket_malformed"
    # a license is no ticket, and a ticket no license
    assert _reason(token) == "ticket_malformed"
    with pytest.raises(LicenseRefused) as e:
        read_license(ticket, {ISSUER.keyid: ISSUER.public, OMEGA.keyid: OMEGA.public})
    assert e.value.reason == "malformed"


# -- the mainframe's side: TicketAuth on its client of the site cache ---------------------


class _Fetches:
    """What OMEGA gives each time the mainframe asks it for a ticket, and how often."""

    def __init__(self, *answers: tuple[str, float] | None) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def __call__(self) -> tuple[str, float] | None:
        self.asked += 1
        await asyncio.sleep(0.01)  # an answer takes a moment: others wait for this one
        return self.answers.pop(0)


async def _send(auth: TicketAuth, status: int = 200, redirected: bool = False) -> str:
    """One request through ``auth``'s flow, answered ``status``; what it carried, or
    ``"NoTicket"`` where the flow raised that instead (a try the download makes again)."""
    request = httpx.Request("GET", "https://cache.site.example/v1/blobs/" + "0" * 64)
    flow = auth.async_auth_flow(request)
    try:
        sent = await flow.__anext__()
    except NoTicket:
        return "NoTicket (not sent)"
    response = httpx.Response(status, request=sent)
    if redirected:
        response.history = [httpx.Response(307, request=sent)]
    try:
        await flow.asend(response)
    except StopAsyncIteration:  # never sent again: that would read the refusal's body
        return sent.headers["authorization"]
    except NoTicket:
        return f"NoTicket after {sent.headers['authorization']}"
    raise AssertionError("the flow sent the request again")


def test_the_mainframe_shows_the_cache_one_ticket_until_it_nears_its_end_or_is_refused() -> None:
    async def run() -> None:
        fetch = _Fetches(("Ticket a", 600.0), ("Ticket b", 600.0), ("Ticket b", 600.0), None,
                         ("Ticket c", 30.0), ("Ticket d", 600.0))  # fmt: skip
        auth = TicketAuth(fetch)
        # downloads side by side: one ticket asked for, all carry it
        assert await asyncio.gather(*(_send(auth) for _ in range(5))) == ["Ticket a"] * 5
        assert fetch.asked == 1
        assert await _send(auth, 403, redirected=True) == "Ticket a"  # a mirror's refusal
        # OMEGA's, through the cache: dropped, and the download tries again with another
        assert await _send(auth, 401) == "NoTicket after Ticket a"
        assert await _send(auth, 403) == "NoTicket after Ticket b" and fetch.asked == 2
        # OMEGA gives the same one again (within its minute): refused twice is a refusal,
        # handed on for the download to report
        assert await _send(auth, 403) == "Ticket b" and fetch.asked == 3
        assert await _send(auth) == "NoTicket (not sent)"  # OMEGA gave none: nothing sent
        assert await _send(auth) == "Ticket c"  # asked again at once
        assert await _send(auth) == "Ticket d"  # c ends within the margin: not used again
        assert await _send(auth) == "Ticket d"
        assert fetch.asked == 6

    asyncio.run(run())


def test_a_ticket_taken_before_an_install_and_refused_at_once_is_asked_for_once_more() -> None:
    """Each install first makes sure of a ticket (``ready()``, BlobRoutes), so no request
    knows whether its ticket is new: one refused is asked for once more, and the same
    ticket refused again is the refusal the download reports."""

    async def run() -> list[str]:
        auth = TicketAuth(_Fetches(("Ticket a", 600.0), ("Ticket a", 600.0)))
        assert await auth.ready()
        return [await _send(auth, 403), await _send(auth, 403)]

    assert asyncio.run(run()) == ["NoTicket after Ticket a", "Ticket a"]


class _Route:
    """A downloader that notes which route an install took."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    async def fetch_all(self, wanted: object, pack: object = None) -> None:
        self.seen.append(self.name)


@pytest.mark.parametrize(
    ("tickets", "ticketless", "route"),
    [
        ([("Ticket a", 600.0)], False, "cache"),
        ([None], False, "cache"),  # OMEGA busy a moment: the tries ask again, via the cache
        ([None], True, "omega"),  # an OMEGA that gives none: around the cache, no license in it
    ],
)
def test_only_an_omega_without_tickets_sends_an_install_around_the_cache(
    tickets: list[tuple[str, float] | None], ticketless: bool, route: str
) -> None:
    """A ticket not had for a moment (OMEGA loaded at a rollout's start) must not send a
    whole release's bytes from OMEGA itself (a review: one 503 did, for every mainframe of
    the site that asked then)."""
    seen: list[str] = []
    said: list[str] = []
    routes = BlobRoutes(
        _Route("omega", seen),  # type: ignore[arg-type]
        _Route("cache", seen),  # type: ignore[arg-type]
        TicketAuth(_Fetches(*tickets)),
        said=said.append,
        ticketless=lambda: ticketless,
    )
    asyncio.run(routes.fetch_all([]))
    assert seen == said == [route]


def test_what_omegas_ticket_answer_gives() -> None:
    good = {"ticket": "blob_ticket.e30.c2ln", "expires_at": "2026-12-08T12:10:00Z",
            "expires_in": 600}  # fmt: skip
    assert ticket_answer(200, good) == ("Ticket blob_ticket.e30.c2ln", 600.0)
    for status, body in [
        (200, {**good, "ticket": "a\nb"}),  # a header it could split
        (200, {**good, "ticket": "ticket\u00e9"}),
        (200, {**good, "expires_in": "600"}),
        (200, {"ticket": 5}),
        (200, ["x"]),
        (403, {"error": "license revoked", "reason": "revoked"}),
        (500, None),
    ]:
        assert ticket_answer(status, body) is None, (status, body)


def test_an_omega_from_before_tickets_is_told_apart_from_a_refusal() -> None:
    """Its middleware answers the route as a bearer's: 401 ``unauthenticated`` (a license
    route never does, to a license), or there is no route at all (404); a refused license
    is 403, and gets the license sent nowhere."""
    assert before_tickets(404, None)
    assert before_tickets(
        401, {"error": "missing or wrong bearer token", "kind": "unauthenticated"}
    )
    assert not before_tickets(401, {"kind": "license_refused"})
    assert not before_tickets(403, {"reason": "revoked", "kind": "license_refused"})
    assert not before_tickets(500, None) and not before_tickets(401, None)
