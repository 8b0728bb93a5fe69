"""``ashat serve``: the control-plane HTTP API over the same operations as the ``deploy`` CLI.

::

    runner.py    uvicorn, signals, ready line            (the click command: cli/serve_cmd.py)
    app.py       the Starlette app: auth, roles, bodies  routes.py   the endpoint table + handlers
    schemas.py   JSON Schemas of the bodies              openapi.py  /openapi.json from the table
    metrics.py   /metrics                                errors.py   exit code -> HTTP status
    dashboard.py the web pages at /                      views.py    what the pages show (pure)
    session.py   signed session cookies, CSRF, origin    templates/, static/   Jinja2, CSS, JS

Routes (JSON; ``role`` is the weakest that may call it; higher roles include lower ones)::

    GET    /v1/health                          open      liveness
    GET    /openapi.json, /metrics             open
    GET    /v1/me                              viewer
    GET    /v1/status                          viewer    in flight, leases, recently ended
    GET    /v1/deployments?limit&state         viewer    history
    GET    /v1/deployments/{id}?events         viewer    with checks, approvals, events, rollout
    GET    /v1/deployments/{id}/events         viewer    every audit event of it
    POST   /v1/deployments/{id}/verify         deployer  {"only": [...]}
    POST   /v1/deployments/{id}/cancel         deployer  {"reason"}
    POST   /v1/deployments/{id}/approve        approver  {"comment", "wait"}: as the caller
    POST   /v1/deployments/{id}/rollback       approver  {"reason"}
    POST   /v1/deployments/{id}/pause|resume|abort|retry   approver  {"reason"}
    GET    /v1/servers?check                   viewer
    PUT    /v1/servers/{tier}                  admin     {"url", "name", "token"}
    GET    /v1/audit/verify                    viewer
    GET    /v1/fleet/mainframes                viewer    via OMEGA
    GET    /v1/fleet/rollouts/{rollout_id}     viewer    via OMEGA
    GET    /v1/users                           admin
    POST   /v1/users                           admin     {"name", "role"}
    POST   /v1/users/{name}/token              admin     -> {"token"}, shown once
    DELETE /v1/users/{name}                    admin

The dashboard (``/``, ``/login``, ``/deployments/...``, ``/servers``, ``/mainframes``) is
described in :mod:`.dashboard`: the same operations, signed in with a token once, then a
session cookie.
"""
