"""The newest root of trust a host has verified, kept on its disk (OMEGA's, a mainframe's).

It starts from the root the operator installed (``--root FILE``, TUF's bootstrap root,
which must be signed by a threshold of its own root keys) and from the versions this host
verified since, in ``DIR/trust/N.root.json``. :meth:`HeldRoot.offer` takes a chain of
versions (each release carries its project's, inside OMEGA's approval record) and keeps
any newer version that chains from the one held; an older version, a version that skips
one, or one not signed by the thresholds is ignored, never trusted. Writes are atomic.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ashat.errors import AshatError
from ashat.project import write_private
from ashat.trust.root import Root, TrustRefused, load_trusted, parse_root, update

log = logging.getLogger("ashat.trust")


class HeldRoot:
    def __init__(self, bootstrap: Path, directory: Path) -> None:
        """Raises TrustRefused (the installed root does not hold) or OSError."""
        self.directory = directory
        self._lock = threading.Lock()
        first = bootstrap.read_bytes()
        root = load_trusted(first)
        self._chain: list[tuple[int, bytes]] = [(root.version, first)]
        versions = [
            (int(m.group(1)), path)
            for path in directory.glob("*.root.json")
            if (m := re.fullmatch(r"(\d{1,9})\.root\.json", path.name))
        ]
        for _, path in sorted(versions):
            try:
                candidate = parse_root(path.read_bytes())
                if candidate.version == root.version + 1:
                    data = path.read_bytes()
                    root = update(root, data)
                    self._chain.append((root.version, data))
            except (TrustRefused, OSError, ValueError) as e:
                log.error("ignoring %s: %s", path, e)
        self._root = root

    @property
    def root(self) -> Root:
        with self._lock:
            return self._root

    def current(self, now: dt.datetime) -> Root:
        """The root in force; TrustRefused (``expired``) if it has expired: a host whose root
        expired installs nothing until a newer one comes."""
        root = self.root
        if now >= root.expires:
            raise TrustRefused(
                "expired",
                f"the root of trust held here (version {root.version}) expired at "
                f"{root.expires.isoformat()}: nothing is installed until a newer root comes",
            )
        return root

    def offer(self, chain: Iterable[Any]) -> Root:
        """Take the newer versions of ``chain`` (root documents, oldest first) that chain
        from the one held. Returns the root held after. Never raises for a bad chain: it
        only does not move (and says why in the log)."""
        root, why = self.offer_quietly(chain)
        if why is not None:
            log.warning("a root offered was not taken: %s", why)
        return root

    def offer_quietly(self, chain: Iterable[Any]) -> tuple[Root, str | None]:
        """:meth:`offer`, returning why a bad chain was not taken instead of logging it (a
        caller offered many chains at once logs once)."""
        why: str | None = None
        with self._lock:
            root = self._root
            for doc in chain:
                try:
                    data = doc.encode("utf-8") if isinstance(doc, str) else _bytes(doc)
                    version = parse_root(data).version
                    if version <= root.version:
                        continue
                    new = update(root, data)
                except (TrustRefused, ValueError, TypeError) as e:
                    why = str(e)
                    break
                write_private(self.directory / f"{new.version}.root.json", new.to_bytes(), 0o644)
                log.info("root of trust: now version %d", new.version)
                self._chain.append((new.version, data))
                root = new
            self._root = root
            return root, why

    def newer_than(self, version: int) -> list[Any]:
        """The verified versions after ``version``, oldest first, as JSON documents."""
        with self._lock:
            return [json.loads(data) for v, data in self._chain if v > version]


def _bytes(doc: Any) -> bytes:
    if not isinstance(doc, dict):
        raise TypeError("a root must be a JSON object or its text")
    return json.dumps(doc).encode("utf-8")


def held_root(root_file: Path | None, data: Path) -> HeldRoot | None:
    """The root of trust a host holds (``--root``, and what it verified since in
    ``DATA/trust/``), or None without ``--root``. Raises AshatError naming the file."""
    if root_file is None:
        return None
    try:
        return HeldRoot(root_file, data / "trust")
    except TrustRefused as e:
        raise AshatError(f"--root {root_file}: {e.message}") from e
    except OSError as e:
        raise AshatError(f"--root {root_file}: cannot read it ({e.strerror})") from e
