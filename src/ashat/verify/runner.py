"""Run checks concurrently, each under its own timeout; never let one check sink the rest.

The wall time of a run is the slowest check plus a little overhead: every check starts at
once in its own thread, and the runner waits for each only until its deadline. A check
that overruns is reported as ``error`` (its thread is left to finish on its own; checks
bound their own I/O with the same timeout, so it does not linger).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from ashat.errors import RemoteError
from ashat.verify.base import STATUSES, Check, CheckConfigError, CheckContext, CheckResult, Outcome

DEFAULT_TIMEOUT_S = 30.0


def check_timeout(ctx_verify: dict[str, object], name: str) -> float:
    """``[verify.<name>] timeout_s``, else ``[verify] timeout_s``, else 30 s."""
    own = ctx_verify.get(name)
    for table in (own if isinstance(own, dict) else {}, ctx_verify):
        value = table.get("timeout_s")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return DEFAULT_TIMEOUT_S


def _run_one(check: Check, ctx: CheckContext) -> CheckResult:
    started = time.monotonic()
    try:
        outcome = check.run(ctx)
        if not isinstance(outcome, Outcome) or outcome.status not in STATUSES:
            outcome = Outcome("error", f"check returned {outcome!r}, not an Outcome")
    except CheckConfigError as e:
        outcome = Outcome("error", f"bad [verify.{check.name}] settings: {e}")
    except RemoteError as e:  # the server went away or refused us: not the check's bug
        outcome = Outcome("error", e.message.splitlines()[0][:300], {"kind": e.kind})
    except Exception as e:  # a check's bug or an unexpected answer: report, never crash
        summary = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        outcome = Outcome("error", summary, {"traceback": traceback.format_exc()[-4000:]})
    return CheckResult(
        check.name,
        check.title,
        outcome.status,
        outcome.summary,
        outcome.details,
        time.monotonic() - started,
    )


def run_checks(
    checks: Sequence[Check],
    make_ctx: Callable[[Check], CheckContext],
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run ``checks`` at once; return their results in the order given."""
    if not checks:
        return []
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="check")
    started = time.monotonic()
    futures: list[tuple[Check, CheckContext, Future[CheckResult]]] = []
    for check in checks:
        ctx = make_ctx(check)
        futures.append((check, ctx, pool.submit(_run_one, check, ctx)))
    results: list[CheckResult] = []
    try:
        for check, ctx, fut in futures:
            remaining = ctx.timeout_s - (time.monotonic() - started)
            try:
                result = fut.result(timeout=max(remaining, 0.0))
            except FutureTimeout:
                result = CheckResult(
                    check.name,
                    check.title,
                    "error",
                    f"timed out after {ctx.timeout_s:g}s",
                    {"timeout_s": ctx.timeout_s},
                    time.monotonic() - started,
                )
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results
