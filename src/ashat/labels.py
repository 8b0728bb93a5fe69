"""Labels and selectors: which mainframes a rollout, a pin or a listing is about.

A mainframe's labels come from three places, later ones winning:

- its **license** (``ashat license issue --label ring=pilot``), signed by the issuer;
- the **control side**, on OMEGA (``ashat fleet label mf-7 site=berlin``);
- **facts** OMEGA knows or the mainframe reports on each poll, which nobody sets: ``id``,
  ``customer``, ``region``, ``channel`` (one value per channel of its license), ``os``,
  ``arch``, ``python``, ``ashat``.

A selector is a comma-separated list of requirements, all of which must hold (the shape of
Kubernetes label selectors): ``ring=pilot``, ``ring!=pilot``, ``site in (berlin,paris)``,
``site notin (berlin)``, ``gpu`` (has the label), ``!gpu`` (has it not); ``*`` (or nothing)
selects every mainframe. A selector never matches on a label a mainframe does not have,
except through ``!=``, ``notin`` and ``!``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KEY_RE = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")
VALUE_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._+-]{0,61}[A-Za-z0-9])?")
FACTS = ("id", "customer", "region", "channel", "os", "arch", "python", "ashat")
MAX_LABELS = 64  # per mainframe, set on OMEGA or in a license
MAX_SELECTOR_CHARS = 1000
ALL = "*"

Labels = Mapping[str, frozenset[str]]  # key -> its values (one, but for channel)


class LabelError(ValueError):
    """A label or selector that does not parse; the message names the part at fault."""


def check_key(key: str) -> str:
    if not KEY_RE.fullmatch(key):
        raise LabelError(
            f"label key {key[:70]!r}: lower-case letters, digits, '.', '_', '/', '-', "
            "starting and ending with a letter or digit, at most 63"
        )
    return key


def check_value(key: str, value: str) -> str:
    if not VALUE_RE.fullmatch(value):
        raise LabelError(
            f"label {key}={value[:70]!r}: the value is letters, digits, '.', '_', '+', '-', "
            "starting and ending with a letter or digit, at most 63"
        )
    return value


def parse_assignments(items: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """``["ring=pilot", "site-"]`` -> labels to set and keys to remove (``KEY-``, as
    ``kubectl label`` writes it). Facts cannot be set: they are what the mainframe is."""
    set_: dict[str, str] = {}
    remove: list[str] = []
    for item in items:
        if "=" in item:
            key, _, value = item.partition("=")
            set_[check_key(key)] = check_value(key, value)
        elif item.endswith("-"):
            remove.append(check_key(item[:-1]))
        else:
            raise LabelError(f"{item[:70]!r}: write KEY=VALUE to set a label, KEY- to remove it")
    for key in [*set_, *remove]:
        if key in FACTS:
            raise LabelError(
                f"{key!r} is a fact of the mainframe ({', '.join(FACTS)}), not a label to set"
            )
    if len(set_) > MAX_LABELS:
        raise LabelError(f"{len(set_)} labels: at most {MAX_LABELS}")
    return set_, remove


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels as a license or a store holds them; raises :class:`LabelError`."""
    if len(labels) > MAX_LABELS:
        raise LabelError(f"{len(labels)} labels: at most {MAX_LABELS}")
    return dict(parse_assignments(f"{k}={v}" for k, v in labels.items())[0])


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "absent"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Labels) -> bool:
        have = labels.get(self.key)
        if self.op == "exists":
            return have is not None
        if self.op == "absent":
            return have is None
        if self.op == "in":
            return have is not None and bool(have & self.values)
        return have is None or not (have & self.values)  # notin, !=

    def __str__(self) -> str:
        values = ",".join(sorted(self.values))
        if self.op == "exists":
            return self.key
        if self.op == "absent":
            return f"!{self.key}"
        if len(self.values) == 1:
            return f"{self.key}{'=' if self.op == 'in' else '!='}{values}"
        return f"{self.key} {self.op} ({values})"


@dataclass(frozen=True)
class Selector:
    """All of ``requirements`` (none: every mainframe)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Labels) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def everyone(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements) or ALL


_SET_RE = re.compile(r"\s*(\S+?)\s+(in|notin)\s*\(([^()]*)\)\s*")
_EQ_RE = re.compile(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(\S+?)\s*")
_HAS_RE = re.compile(r"\s*(!?)\s*([^=!\s(),]+)\s*")


def _terms(text: str) -> list[str]:
    """Split on the commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise LabelError(f"selector {text!r}: a ')' without its '('")
        elif c == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    if depth:
        raise LabelError(f"selector {text!r}: a '(' without its ')'")
    return [*terms, text[start:]]


@functools.lru_cache(maxsize=1024)
def parse_selector(text: str | None) -> Selector:
    """A selector from its text; raises :class:`LabelError` naming the term at fault.
    (Cached: OMEGA matches the same few selectors on every poll.)"""
    if text is None or text.strip() in ("", ALL):
        return Selector()
    if len(text) > MAX_SELECTOR_CHARS:
        raise LabelError(f"a selector is at most {MAX_SELECTOR_CHARS} characters")
    requirements = []
    for term in _terms(text):
        if m := _SET_RE.fullmatch(term):
            key, op, inside = m.groups()
            values = [v.strip() for v in inside.split(",")]
            if not values or any(not v for v in values):
                raise LabelError(f"selector term {term.strip()!r}: an empty value in ( )")
            checked = frozenset(check_value(key, v) for v in values)
            requirements.append(Requirement(check_key(key), op, checked))
        elif m := _EQ_RE.fullmatch(term):
            key, op, value = m.groups()
            check_key(key)
            requirements.append(
                Requirement(
                    key, "notin" if op == "!=" else "in", frozenset([check_value(key, value)])
                )
            )
        elif m := _HAS_RE.fullmatch(term):
            negated, key = m.groups()
            requirements.append(Requirement(check_key(key), "absent" if negated else "exists"))
        else:
            raise LabelError(
                f"selector term {term.strip()!r} is not KEY=VALUE, KEY!=VALUE, "
                "KEY in (A,B), KEY notin (A,B), KEY or !KEY"
            )
    return Selector(tuple(sorted(requirements, key=str)))  # one spelling for one selector


def labels_of(
    facts: Mapping[str, str | Iterable[str]],
    license_labels: Mapping[str, str],
    set_labels: Mapping[str, str],
) -> dict[str, frozenset[str]]:
    """A mainframe's labels: its license's, then those set on OMEGA, then its facts."""
    out: dict[str, frozenset[str]] = {}
    for source in (license_labels, set_labels):
        out.update((k, frozenset([v])) for k, v in source.items())
    for key, value in facts.items():
        out[key] = frozenset([value] if isinstance(value, str) else value)
    return out


def flat(labels: Labels) -> dict[str, str]:
    """For showing: each key's values joined by commas."""
    return {k: ",".join(sorted(v)) for k, v in sorted(labels.items())}
