"""OMEGA's side of the metric analysis between waves (``ashat/bake.py`` has the policy and
the decision): asking Prometheus, through the one outgoing HTTP seam.

:func:`evaluate` runs every query of a baking wave's policy (``GET /api/v1/query``) and says
whether one broke its bound (the rollout halts), or could not be evaluated (the wave waits).
:func:`check_queries` asks Prometheus to parse each query when a rollout is requested, so a
query it cannot parse is refused before anything starts; a Prometheus that does not answer
then is not a refusal (the wave will wait for it).
"""

from __future__ import annotations

from typing import Any

from ashat.agent.errors import RequestInvalid
from ashat.bake import BakePolicy, Evaluation, values_of
from ashat.transport import outgoing

QUERY_TIMEOUT_S = 10.0


def _ask(http: Any, prometheus: str, query: str) -> tuple[int, Any]:
    r = http.get(f"{prometheus}/api/v1/query", params={"query": query})
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, None


def evaluate(policy: BakePolicy, at: float) -> Evaluation:
    """Every query of ``policy`` now; the first broken bound, or the first error."""
    import httpx

    assert policy.prometheus is not None  # BakePolicy.parse requires it with queries
    with outgoing.client(timeout_s=QUERY_TIMEOUT_S) as http:
        for q in policy.queries:
            try:
                _, answer = _ask(http, policy.prometheus, q.query)
                values = values_of(answer)
            except httpx.HTTPError as e:
                return Evaluation(at, error=outgoing.failure(e, policy.prometheus).message)
            except (ValueError, KeyError, TypeError, IndexError) as e:
                return Evaluation(at, error=f"{q.name}: {e}")
            if (why := q.judge(values)) is not None:
                return Evaluation(at, failed=why)
    return Evaluation(at)


def check_queries(policy: BakePolicy) -> None:
    """Refuse (:class:`RequestInvalid`) a query Prometheus says it cannot parse."""
    import httpx

    if not policy.queries or policy.prometheus is None:
        return
    with outgoing.client(timeout_s=QUERY_TIMEOUT_S) as http:
        for q in policy.queries:
            try:
                status, answer = _ask(http, policy.prometheus, q.query)
            except httpx.HTTPError:
                return  # not answering now: the wave will wait for it, not refused
            if status == 400 and isinstance(answer, dict) and answer.get("errorType") == "bad_data":
                raise RequestInvalid(
                    f"analysis {q.name}: Prometheus cannot parse {q.query!r}: "
                    f"{str(answer.get('error'))[:300]}",
                    analysis=q.name,
                )
