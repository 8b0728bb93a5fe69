"""Performance Baseline: N requests at concurrency C; p50/p95/p99 and error rate.

Fails over ``max_p95_ms`` or ``max_error_rate``, or when p95 regresses by more than
``max_regression`` (0.5 = 50 %) against the last *passed* run for the same path and tier.
The first run establishes the baseline. The workflow, not this check, stores a new
baseline, and only from a passed run.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import httpx

from ashat.verify.base import CheckConfigError, CheckContext, Outcome

DEFAULT_REQUESTS = 100
DEFAULT_CONCURRENCY = 4
BASELINE_FLOOR_MS = 1.0  # a stored baseline below this is judged as this (never divide by 0)


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in (0, 100])."""
    if not sorted_ms:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_ms)))
    return sorted_ms[rank - 1]


def _number(cfg: dict[str, Any], key: str, default: float | None, lo: float) -> float | None:
    value = cfg.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < lo:
        raise CheckConfigError(f"{key} must be a number >= {lo:g}, not {value!r}")
    return float(value)


def regression_verdict(
    p95: float, baseline: float | None, max_regression: float | None
) -> tuple[bool, str]:
    """(ok, note) of p95 against the stored baseline."""
    if max_regression is None:
        return True, "regression not judged (no max_regression)"
    if baseline is None:
        return True, "no baseline yet: a passed run establishes it"
    reference = max(baseline, BASELINE_FLOOR_MS)
    limit = reference * (1 + max_regression)
    change = p95 / reference - 1
    if p95 > limit:
        return False, (
            f"p95 {p95:.1f} ms regressed {change:+.0%} against baseline {baseline:.1f} ms "
            f"(allowed +{max_regression:.0%})"
        )
    return True, f"{change:+.0%} against baseline {baseline:.1f} ms"


class PerformanceCheck:
    name = "performance"
    title = "Performance Baseline"

    def run(self, ctx: CheckContext) -> Outcome:
        cfg = ctx.settings("performance")
        path = cfg.get("path")
        if not path:
            return Outcome.skipped("no [verify.performance] path configured")
        if not isinstance(path, str) or not path.startswith("/"):
            raise CheckConfigError("path must start with '/'")
        if ctx.app_url is None:
            return Outcome.failed("the release runs no app ([app].run), so nothing to measure")
        n = int(_number(cfg, "requests", DEFAULT_REQUESTS, 1) or DEFAULT_REQUESTS)
        c = int(_number(cfg, "concurrency", DEFAULT_CONCURRENCY, 1) or DEFAULT_CONCURRENCY)
        max_p95 = _number(cfg, "max_p95_ms", None, 0)
        max_err = _number(cfg, "max_error_rate", 0.0, 0) or 0.0
        max_reg = _number(cfg, "max_regression", None, 0)
        latencies, errors = self._load(ctx.app_url + path, n, min(c, n), ctx.timeout_s * 0.8)
        lat = sorted(latencies)
        done = len(lat) + errors
        if not lat:
            return Outcome.failed(f"all {done} requests to {path} failed", path=path, errors=errors)
        p50, p95, p99 = (percentile(lat, q) for q in (50, 95, 99))
        error_rate = errors / done
        baseline = ctx.baseline_p95_ms.get(path)
        details = {
            "path": path, "requests": done, "concurrency": c, "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2), "p99_ms": round(p99, 2), "error_rate": round(error_rate, 4),
            "baseline_p95_ms": baseline, "max_p95_ms": max_p95,
        }  # fmt: skip
        figures = f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms"
        problems = []
        if done < n:
            problems.append(f"only {done} of {n} requests finished in time")
        if max_p95 is not None and p95 > max_p95:
            problems.append(f"p95 {p95:.1f} ms over max_p95_ms {max_p95:g}")
        if error_rate > max_err:
            problems.append(f"error rate {error_rate:.1%} over {max_err:.1%}")
        ok, note = regression_verdict(p95, baseline, max_reg)
        details["regression"] = note
        if not ok:
            problems.append(note)
        if problems:
            return Outcome.failed("; ".join(problems), **details)
        return Outcome.passed(f"{figures} over {done} requests ({note})", **details)

    @staticmethod
    def _load(url: str, n: int, c: int, budget_s: float) -> tuple[list[float], int]:
        """Send ``n`` GETs over ``c`` workers; stop starting new ones after ``budget_s``."""
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        counter = iter(range(n))
        deadline = time.monotonic() + budget_s

        def worker(http: httpx.Client) -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                with lock:
                    if next(counter, None) is None:
                        return
                t0 = time.monotonic()
                try:
                    ok = http.get(url).status_code < 400
                except httpx.HTTPError:
                    ok = False
                ms = (time.monotonic() - t0) * 1000
                with lock:
                    if ok:
                        latencies.append(ms)
                    else:
                        errors += 1

        limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
        with httpx.Client(timeout=max(budget_s, 1.0), limits=limits) as http:
            threads = [threading.Thread(target=worker, args=(http,)) for _ in range(c)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return latencies, errors
