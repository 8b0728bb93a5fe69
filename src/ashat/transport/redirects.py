"""Redirects read nothing: the transports under every client of :mod:`.outgoing`.

httpx reads a redirect's whole body before it follows the redirect, with no bound: a
mirror, a site cache or anyone on the path could answer ``307`` with an endless body and
hold gigabytes of a mainframe's memory per download (a review: 18 GB). ashat never needs
a redirect's body, so these transports close it unread and hand httpx an empty one; the
status, the headers and the ``Location`` it follows are untouched.

Given a :class:`~ashat.transport.hosts.HostList` (a mainframe's ``--blob-host``), they also
refuse to follow a redirect to a host it does not list: :class:`RedirectRefused`, raised
before any request goes there.
"""

from __future__ import annotations

import httpx

from ashat.transport.hosts import HostList

DROPPED = ("content-length", "transfer-encoding")  # of a body no longer there


def _emptied(response: httpx.Response, request: httpx.Request) -> httpx.Response:
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in DROPPED]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"",
        request=request,
        extensions=response.extensions,
    )


def _redirect(response: httpx.Response) -> bool:
    return 300 <= response.status_code < 400 and "location" in response.headers


class RedirectRefused(httpx.TransportError):
    """A redirect to a host the client may not be sent to (not in its :class:`HostList`)."""


def _check(response: httpx.Response, request: httpx.Request, hosts: HostList | None) -> None:
    """Raise :class:`RedirectRefused` if ``hosts`` does not list where ``response`` sends."""
    if hosts is None:
        return
    try:
        target = request.url.join(response.headers["location"])
    except httpx.InvalidURL as e:
        raise RedirectRefused("a redirect to an address that is not a URL", request=request) from e
    if not hosts.allows(target.scheme, target.host, target.port):
        raise RedirectRefused(
            f"a redirect to {target.host} (port {target.port or 'default'}), which no "
            "--blob-host lists: not followed",
            request=request,
        )


class RedirectsUnread(httpx.BaseTransport):
    """``inner``, with each redirect's body closed unread (and, given ``hosts``, only a
    redirect to one of them followed)."""

    def __init__(self, inner: httpx.BaseTransport, hosts: HostList | None = None) -> None:
        self.inner = inner
        self.hosts = hosts

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not _redirect(response):
            return response
        response.close()
        _check(response, request, self.hosts)
        return _emptied(response, request)

    def close(self) -> None:
        self.inner.close()


class AsyncRedirectsUnread(httpx.AsyncBaseTransport):
    """``inner``, with each redirect's body closed unread (and, given ``hosts``, only a
    redirect to one of them followed)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, hosts: HostList | None = None) -> None:
        self.inner = inner
        self.hosts = hosts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not _redirect(response):
            return response
        await response.aclose()
        _check(response, request, self.hosts)
        return _emptied(response, request)

    async def aclose(self) -> None:
        await self.inner.aclose()
