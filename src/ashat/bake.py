"""Bake time and metric analysis between waves (issue 19): the policy, its checks, and the
decision. Pure: no clock, no network; both the control side (``[distribution]`` in
``ashat.toml``) and OMEGA (the rollout request) parse the policy here, so one owner says
what is valid.

Once every mainframe of a wave has installed, the rollout does not start the next wave (or
end) at once: it *bakes* for ``bake_s`` seconds while OMEGA evaluates each analysis query
against Prometheus (every :data:`ANALYSIS_EVERY_S`). A query whose value leaves its bound
halts the rollout (and, with ``auto_rollback``, rolls back who installed); the wave goes on
only after a bake of ``bake_s`` whose last evaluation, taken after the bake ended, passed.
A query that cannot be evaluated (Prometheus down, no data) never passes: the wave waits,
and fails at its ``wave_timeout_s`` saying why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ashat.ids import HTTP_URL_RE

ANALYSIS_EVERY_S = 2.0  # how often OMEGA evaluates the queries of a baking wave
MAX_BAKE_S = 86_400.0
MAX_QUERIES = 20
MAX_QUERY_CHARS = 2000
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class PolicyError(ValueError):
    """What is wrong with a bake policy, in one sentence naming the key."""


@dataclass(frozen=True)
class Query:
    """One analysis: a PromQL expression and the bound every sample must keep."""

    name: str
    query: str
    max: float | None = None
    min: float | None = None

    def judge(self, values: list[float]) -> str | None:
        """Why ``values`` (one per series) break the bound, or None."""
        for v in values:
            if math.isnan(v):
                return f"{self.name} is NaN"
            if self.max is not None and v > self.max:
                return f"{self.name} = {v:g}, above its max {self.max:g}"
            if self.min is not None and v < self.min:
                return f"{self.name} = {v:g}, below its min {self.min:g}"
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "query": self.query}
        if self.max is not None:
            out["max"] = self.max
        if self.min is not None:
            out["min"] = self.min
        return out


@dataclass(frozen=True)
class BakePolicy:
    bake_s: float = 0.0
    prometheus: str | None = None
    queries: tuple[Query, ...] = ()

    @property
    def active(self) -> bool:
        return self.bake_s > 0 or bool(self.queries)

    @classmethod
    def parse(cls, table: Mapping[str, Any], where: str) -> BakePolicy:
        """``bake_s``, ``prometheus`` and ``analysis`` of ``table`` (``where`` names it in
        errors: ``[distribution]`` or the request). Raises :class:`PolicyError`."""
        bake_s = table.get("bake_s", 0)
        if (
            isinstance(bake_s, bool)
            or not isinstance(bake_s, int | float)
            or not (0 <= bake_s <= MAX_BAKE_S)
        ):
            raise PolicyError(f"{where}.bake_s must be 0-{MAX_BAKE_S:g} seconds, not {bake_s!r}")
        prometheus = table.get("prometheus")
        if prometheus is not None and (
            not isinstance(prometheus, str) or not HTTP_URL_RE.fullmatch(prometheus)
        ):
            raise PolicyError(f"{where}.prometheus must be an http(s) URL, not {prometheus!r}")
        raw = table.get("analysis", [])
        if not isinstance(raw, list) or len(raw) > MAX_QUERIES:
            raise PolicyError(f"{where}.analysis must be a list of at most {MAX_QUERIES} tables")
        queries = tuple(_query(q, f"{where}.analysis #{i + 1}") for i, q in enumerate(raw))
        names = [q.name for q in queries]
        if len(set(names)) != len(names):
            raise PolicyError(f"{where}.analysis: each name may appear once, not {names}")
        if queries and prometheus is None:
            raise PolicyError(f"{where}.analysis needs {where}.prometheus, the URL to query")
        if queries and bake_s <= 0:
            raise PolicyError(f"{where}.analysis needs {where}.bake_s > 0: how long to watch")
        return cls(float(bake_s), prometheus.rstrip("/") if prometheus else None, queries)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bake_s": self.bake_s}
        if self.prometheus is not None:
            out["prometheus"] = self.prometheus
        if self.queries:
            out["analysis"] = [q.to_json() for q in self.queries]
        return out


NO_BAKE = BakePolicy()  # the next wave starts as soon as this one installed


def _query(raw: Any, where: str) -> Query:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where} must be a table with name, query and max or min")
    unknown = sorted(set(raw) - {"name", "query", "max", "min"})
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r} (name, query, max, min)")
    name, query = raw.get("name"), raw.get("query")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise PolicyError(f"{where}.name must be a short name (letters, digits, _ . -)")
    if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY_CHARS:
        raise PolicyError(f"{where} ({name}).query must be a PromQL expression")
    bounds = {}
    for key in ("max", "min"):
        value = raw.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise PolicyError(f"{where} ({name}).{key} must be a number, not {value!r}")
        bounds[key] = float(value)
    if not bounds:
        raise PolicyError(f"{where} ({name}) needs max or min: the bound its value must keep")
    if "max" in bounds and "min" in bounds and bounds["min"] > bounds["max"]:
        raise PolicyError(f"{where} ({name}): min {bounds['min']:g} is above max {bounds['max']:g}")
    return Query(name, query.strip(), bounds.get("max"), bounds.get("min"))


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of every query: when, and what went wrong (None: all passed)."""

    at: float  # seconds since the epoch
    failed: str | None = None  # a bound broken: halts the rollout
    error: str | None = None  # could not evaluate (Prometheus, no data): the wave waits

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "failed": self.failed, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(float(data["at"]), data.get("failed"), data.get("error"))


def decide(
    policy: BakePolicy,
    started_at: float,
    last: Evaluation | None,
    now: float,
    wave_started_at: float,
    wave_timeout_s: float,
) -> tuple[str, str | None]:
    """``("wait", None)``, ``("pass", None)`` or ``("fail", reason)`` for a wave baking
    since ``started_at`` whose last evaluation is ``last``."""
    if last is not None and last.failed is not None:
        return "fail", f"analysis failed during the bake: {last.failed}"
    baked = now - started_at >= policy.bake_s
    judged_after = last is not None and last.at >= started_at + policy.bake_s and last.error is None
    if baked and (not policy.queries or judged_after):
        return "pass", None
    if now - wave_started_at >= wave_timeout_s:
        why = last.error if last is not None and last.error else "no evaluation yet"
        return "fail", (
            f"the wave's analysis could not pass within wave_timeout_s ({wave_timeout_s:g} s): "
            f"{why}"
        )
    return "wait", None


def values_of(answer: Any) -> list[float]:
    """The sample values of a Prometheus ``/api/v1/query`` answer. Raises ValueError for an
    answer that is not a success, or one with no data (which must never pass)."""
    if not isinstance(answer, Mapping) or answer.get("status") != "success":
        error = answer.get("error") if isinstance(answer, Mapping) else None
        raise ValueError(f"Prometheus refused the query: {error or 'not a success answer'}")
    data = answer.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [float(result[1])]
    if kind == "vector" and isinstance(result, list):
        values = [float(s["value"][1]) for s in result]
        if not values:
            raise ValueError("the query returned no data")
        return values
    raise ValueError(f"a {kind} result: the query must give a number or an instant vector")
