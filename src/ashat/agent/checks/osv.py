"""Pinned requirements against OSV advisories: parsing and matching, no I/O.

``requirements*.txt`` lines of the form ``name==version`` (extras, markers and ``--hash``
options allowed) are pins; comments, options, URLs and anything not pinned to one version
are ignored. An advisory is one OSV record (https://ossf.github.io/osv-schema/): its
``affected`` entries for the ``PyPI`` ecosystem match a pin by PEP 503 name and either the
explicit ``versions`` list or an ``ECOSYSTEM``/``SEMVER`` range, evaluated as the OSV spec
says (events sorted by version; ``introduced`` opens, ``fixed`` and ``last_affected``
close). Versions compare with :class:`packaging.version.Version`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

MAX_ADVISORY_BYTES = 16 * 1024 * 1024  # bytes per OSV file
RANGE_TYPES = ("ECOSYSTEM", "SEMVER")  # GIT ranges name commits, not versions
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")


class MalformedAdvisory(ValueError):
    """An advisory record does not follow the OSV schema; the message names the field."""


def canonical_name(name: str) -> str:
    """PEP 503 normalized project name: ``Foo.Bar_baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


# -- requirements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    file: str  # relative to the release
    line: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "file": self.file, "line": self.line}


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """(first line number, line) with ``\\`` continuations joined and comments removed."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, (pending + line).strip()
        pending = ""
    if pending.strip():
        yield start, pending.strip()


def parse_requirements(text: str, file: str) -> list[Pin]:
    """The ``name==version`` pins of a requirements file; everything else is ignored."""
    pins: list[Pin] = []
    for number, line in _logical_lines(text):
        if not line or line.startswith("-"):
            continue
        line = re.split(r"\s+--?[A-Za-z]", line, maxsplit=1)[0]  # --hash=... and the like
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        specs = list(req.specifier)
        if req.url or len(specs) != 1 or specs[0].operator not in ("==", "==="):
            continue
        version = specs[0].version
        if "*" in version or _version(version) is None:
            continue
        pins.append(Pin(canonical_name(req.name), version, file, number))
    return pins


# -- advisories ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str  # one of EVENT_KINDS
    version: Version


@dataclass(frozen=True)
class Affected:
    name: str  # canonical
    versions: frozenset[str]
    ranges: tuple[tuple[Event, ...], ...]  # each sorted by version

    def includes(self, version: str) -> bool:
        v = _version(version)
        if version in self.versions or (
            v is not None and any(_version(x) == v for x in self.versions)
        ):
            return True
        return v is not None and any(_in_range(v, events) for events in self.ranges)

    def fixed(self) -> list[str]:
        return sorted({str(e.version) for r in self.ranges for e in r if e.kind == "fixed"})


@dataclass(frozen=True)
class Advisory:
    id: str
    summary: str
    aliases: tuple[str, ...]
    affected: tuple[Affected, ...]  # PyPI entries only


def _closes(e: Event, v: Version) -> bool:
    """Whether ``e`` ends an open range at ``v``: ``fixed`` is excluded, ``last_affected`` not."""
    if e.kind == "fixed":
        return v >= e.version
    return e.kind == "last_affected" and v > e.version


def _in_range(v: Version, events: tuple[Event, ...]) -> bool:
    """OSV's ``IncludedInRange`` for events already sorted by version."""
    vulnerable = False
    for e in events:
        if e.kind == "introduced" and v >= e.version:
            vulnerable = True
        elif _closes(e, v):
            vulnerable = False
    return vulnerable


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
        raise MalformedAdvisory(f"{where}{key} must be a {names}")
    return value


def _events(raw: Any, where: str) -> tuple[Event, ...]:
    if not isinstance(raw, list):
        raise MalformedAdvisory(f"{where}events must be a list")
    events: list[Event] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or len(item) != 1:
            raise MalformedAdvisory(f"{where}events[{i}] must be an object with one event")
        ((kind, text),) = item.items()
        if kind not in EVENT_KINDS or not isinstance(text, str):
            raise MalformedAdvisory(f"{where}events[{i}] is not an OSV event")
        version = _version(text)
        # Versions that are not PEP 440 (old PyPI uploads) cannot be ordered: skip them.
        if version is not None and kind != "limit":
            events.append(Event(kind, version))
    return tuple(sorted(events, key=lambda e: e.version))


def _affected(raw: Any, where: str) -> Affected | None:
    if not isinstance(raw, dict):
        raise MalformedAdvisory(f"{where} must be an object")
    package = _field(raw, "package", dict, where + ".") or {}
    ecosystem = _field(package, "ecosystem", str, where + ".package.")
    name = _field(package, "name", str, where + ".package.")
    versions = _field(raw, "versions", list, where + ".") or []
    if not all(isinstance(v, str) for v in versions):
        raise MalformedAdvisory(f"{where}.versions must be a list of strings")
    ranges: list[tuple[Event, ...]] = []
    for j, rng in enumerate(_field(raw, "ranges", list, where + ".") or []):
        here = f"{where}.ranges[{j}]"
        if not isinstance(rng, dict) or not isinstance(rng.get("type"), str):
            raise MalformedAdvisory(f"{here} must be an object with a type")
        events = _events(rng.get("events"), here + ".")
        if rng["type"] in RANGE_TYPES:
            ranges.append(events)
    if ecosystem is None or name is None or ecosystem.split(":")[0].lower() != "pypi":
        return None
    return Affected(canonical_name(name), frozenset(versions), tuple(ranges))


def parse_advisory(data: Any) -> Advisory | None:
    """One OSV record; None when it is withdrawn. Raises :class:`MalformedAdvisory`."""
    if not isinstance(data, dict):
        raise MalformedAdvisory("an advisory must be a JSON object")
    ident = data.get("id")
    if not isinstance(ident, str) or not ident:
        raise MalformedAdvisory("id must be a non-empty string")
    summary = _field(data, "summary", str, "") or ""
    if not summary:
        details = _field(data, "details", str, "") or ""
        summary = details.strip().splitlines()[0] if details.strip() else ""
    aliases = _field(data, "aliases", list, "") or []
    if not all(isinstance(a, str) for a in aliases):
        raise MalformedAdvisory("aliases must be a list of strings")
    affected = [
        a
        for i, raw in enumerate(_field(data, "affected", list, "") or [])
        if (a := _affected(raw, f"affected[{i}]")) is not None
    ]
    if data.get("withdrawn"):
        return None
    return Advisory(ident, summary, tuple(aliases), tuple(affected))


def parse_advisories(data: Any) -> list[Advisory]:
    """A file's records: one OSV object, or a list of them."""
    records = data if isinstance(data, list) else [data]
    out: list[Advisory] = []
    for i, record in enumerate(records):
        try:
            adv = parse_advisory(record)
        except MalformedAdvisory as e:
            raise MalformedAdvisory(f"[{i}]: {e}" if isinstance(data, list) else str(e)) from None
        if adv is not None:
            out.append(adv)
    return out


def vulnerabilities(pins: Iterable[Pin], advisories: Iterable[Advisory]) -> list[dict[str, Any]]:
    """Each pin some advisory affects: the pin's JSON plus ``advisories`` (id, summary,
    aliases, fixed versions), in pin order."""
    by_name: dict[str, list[tuple[Advisory, Affected]]] = {}
    for adv in advisories:
        for aff in adv.affected:
            by_name.setdefault(aff.name, []).append((adv, aff))
    found: list[dict[str, Any]] = []
    for pin in pins:
        hits: dict[str, dict[str, Any]] = {}
        for adv, aff in by_name.get(pin.name, []):
            if aff.includes(pin.version):
                entry = {"id": adv.id, "summary": adv.summary, "aliases": list(adv.aliases)}
                hit = hits.setdefault(adv.id, {**entry, "fixed": []})
                hit["fixed"] = sorted(set(hit["fixed"]) | set(aff.fixed()))
        if hits:
            found.append({**pin.to_json(), "advisories": list(hits.values())})
    return found
