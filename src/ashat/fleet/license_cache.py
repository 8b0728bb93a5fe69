"""Licenses (and blob tickets) OMEGA has authenticated, remembered by token: one Ed25519
check per token.

A mainframe sends the same token on every poll, report and blob request; verifying its
signature each time was most of the CPU OMEGA spent on a blob ``GET``. A token's signature
and payload never change, so :meth:`TokenCache.read` checks them once and keeps what they
say until the cache is full (least recently used first). What may change is judged on
every request (:func:`~.license.judge_license`: expiry, revocation, channel; a ticket's own
expiry), never cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

MAX_TOKENS = 65536  # tokens remembered (a license is about 500 bytes, a ticket 1 KB)

T = TypeVar("T")


class TokenCache(Generic[T]):
    """What ``read(token)`` said of each token it did not refuse, the last ``size`` ones."""

    def __init__(self, read: Callable[[str], T], size: int = MAX_TOKENS) -> None:
        self._read = read
        self.size = size
        self._known: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, token: str) -> T | None:
        """What ``token`` says if it was authenticated before, else None."""
        with self._lock:
            got = self._known.get(token)
            if got is not None:
                self._known.move_to_end(token)
            return got

    def read(self, token: str) -> T:
        """What ``token`` says, authenticated (nothing that changes is judged).

        Raises what ``read`` raises (:class:`~.license.LicenseRefused`: ``forged``,
        ``malformed``); a refused token is not remembered.
        """
        got = self.known(token)
        if got is not None:
            return got
        got = self._read(token)
        with self._lock:
            self._known[token] = got
            while len(self._known) > self.size:
                self._known.popitem(last=False)
        return got
