"""OMEGA's side of the metric analysis between waves (``ashat/bake.py`` has the policy and
the decision): asking Prometheus, through the one outgoing HTTP seam.

:func:`evaluate` runs every query of a baking wave's policy (``GET /api/v1/query``) and says
whether one broke its bound (the rollout halts), or could not be evaluated (the wave waits).
:func:`check_queries` asks Prometheus to parse each query when a rollout is requested, so a
query it cannot parse is refused before anything starts; a Prometheus that does not answer
then is not a refusal (the wave will wait for it).
"""

from __future__ import annotations

import json
from typing import Any

from ashat.agent.errors import RequestInvalid
from ashat.bake import BakePolicy, Evaluation, values_of
from ashat.transport import outgoing
from ashat.transport.errors import TransportError

QUERY_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 1024 * 1024  # of a Prometheus answer: an instant query's is small
MAX_SHOWN_CHARS = 300  # of what an evaluation keeps of an error (it is shown in statuses)


def _ask(http: Any, prometheus: str, query: str) -> tuple[int, Any]:
    """One instant query; its status and JSON (None if not JSON). The answer is read under
    a size and a total-time limit: the URL comes from a rollout request, so OMEGA reads
    no more of what answers there than a query's result needs."""
    url = f"{prometheus}/api/v1/query"
    with http.stream("GET", url, params={"query": query}) as r:
        raw = outgoing.read_answer(r, url, max_bytes=MAX_ANSWER_BYTES, total_s=QUERY_TIMEOUT_S)
        status = r.status_code
    try:
        return status, json.loads(raw)
    except (ValueError, RecursionError):
        return status, None


def _short(text: str) -> str:
    return " ".join(text.split())[:MAX_SHOWN_CHARS]


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
                return Evaluation(at, error=_short(outgoing.failure(e, policy.prometheus).message))
            except TransportError as e:  # over the size or time limit
                return Evaluation(at, error=_short(e.message))
            except (ValueError, KeyError, TypeError, IndexError) as e:
                return Evaluation(at, error=_short(f"{q.name}: {e}"))
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
            except (httpx.HTTPError, TransportError):
                return  # not answering now: the wave will wait for it, not refused
            if status == 400 and isinstance(answer, dict) and answer.get("errorType") == "bad_data":
                raise RequestInvalid(
                    f"analysis {q.name}: Prometheus cannot parse {q.query!r}: "
                    f"{_short(str(answer.get('error')))}",
                    analysis=q.name,
                )
