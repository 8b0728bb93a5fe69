"""Redirects read nothing: the transports under every client of :mod:`.outgoing`.

httpx reads a redirect's whole body before it follows the redirect, with no bound: a
mirror, a site cache or anyone on the path could answer ``307`` with an endless body and
hold gigabytes of a mainframe's memory per download (a review: 18 GB). ashat never needs
a redirect's body, so these transports close it unread and hand httpx an empty one; the
status, the headers and the ``Location`` it follows are untouched.
"""

from __future__ import annotations

import httpx

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


class RedirectsUnread(httpx.BaseTransport):
    """``inner``, with each redirect's body closed unread."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not _redirect(response):
            return response
        response.close()
        return _emptied(response, request)

    def close(self) -> None:
        self.inner.close()


class AsyncRedirectsUnread(httpx.AsyncBaseTransport):
    """``inner``, with each redirect's body closed unread."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not _redirect(response):
            return response
        await response.aclose()
        return _emptied(response, request)

    async def aclose(self) -> None:
        await self.inner.aclose()
