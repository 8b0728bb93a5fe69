"""Server plumbing the two kinds of server share: the agents (PUBLIC, OMEGA, a mainframe) and
the control server (``ashat serve``).

- :mod:`.errors`: the refusals a server answers with, each with its HTTP status, and the
  JSON shape ``{"error": "<one line>", "kind": ..., ...}``.
- :mod:`.body`: request bodies read under a size limit (refused by their declared length
  before any byte is read), JSON objects among them.
- :mod:`.middleware`: bearer-token authentication, request metrics by route, and the
  minimum pace of request bodies (:class:`UploadPace`).
- :mod:`.handlers`: Starlette's own errors (no route, wrong method) and a client that went
  away, answered the one way.
- :mod:`.serve`: the listening socket, TLS files checked before serving, and uvicorn run
  until SIGTERM or SIGINT with a clean exit 0.

It knows neither the agent, the fleet nor the control plane; they build on it
(``lint-imports`` keeps it so).
"""
