"""Licenses OMEGA has authenticated, remembered by token: one Ed25519 check per license.

A mainframe sends the same token on every poll, report and blob request; verifying its
signature each time was most of the CPU OMEGA spent on a blob ``GET``. A token's signature
and payload never change, so :meth:`LicenseCache.read` checks them once and keeps the
:class:`~.license.License` until it expires or the cache is full (least recently used
first). What may change is judged on every request
(:func:`~.license.judge_license`: expiry, revocation, channel), never cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping

from ashat.bundle.keys import PublicKey
from ashat.fleet.license import License, read_license

MAX_LICENSES = 65536  # tokens remembered (a token is about 500 bytes)


class LicenseCache:
    def __init__(self, trusted: Mapping[str, PublicKey], size: int = MAX_LICENSES) -> None:
        self.trusted = dict(trusted)
        self.size = size
        self._known: OrderedDict[str, License] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, token: str) -> License | None:
        """The license of ``token`` if it was authenticated before, else None."""
        with self._lock:
            lic = self._known.get(token)
            if lic is not None:
                self._known.move_to_end(token)
            return lic

    def read(self, token: str) -> License:
        """The authenticated license of ``token`` (expiry and revocation not judged).

        Raises :class:`~.license.LicenseRefused` (``forged``, ``malformed``); a refused
        token is not remembered.
        """
        with self._lock:
            lic = self._known.get(token)
            if lic is not None:
                self._known.move_to_end(token)
                return lic
        lic = read_license(token, self.trusted)
        with self._lock:
            self._known[token] = lic
            while len(self._known) > self.size:
                self._known.popitem(last=False)
        return lic
