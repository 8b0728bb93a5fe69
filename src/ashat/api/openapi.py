"""``/openapi.json``: the OpenAPI 3.1 document, generated from the endpoint table and the
component schemas, so it describes exactly the routes, roles, parameters and bodies the
server has."""

from __future__ import annotations

from typing import Any

from ashat import __version__
from ashat.api.routes import ENDPOINTS, Endpoint
from ashat.api.schemas import COMPONENTS, ref

AUTH_ERRORS = {
    401: "No bearer token, or one that is unknown (no changes were made)",
    403: "The user's role is too weak for this operation (no changes were made)",
}
ERROR_TEXT = {
    400: "Invalid input (exit code 2)",
    404: "No such deployment, user or route (exit code 2)",
    408: "The body came too slowly (exit code 2)",
    413: "The body is over the size limit (exit code 2)",
    409: "Refused by the state machine, a policy, a lost race or a held tier (exit code 3)",
    422: "The operation ran and failed (exit code 1)",
    502: "PUBLIC or OMEGA unreachable, unauthorized or answering nonsense (exit code 4)",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(ep: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": ep.operation_id,
        "summary": ep.summary,
        "responses": {
            str(ep.status): {"description": "Success", "content": _json(ref(ep.response))}
        },
    }
    if ep.role is None:
        op["security"] = []
    else:
        op["security"] = [{"bearer": []}]
        op["x-ashat-role"] = ep.role.value
        op["description"] = f"Needs the role {ep.role.value} or higher."
    params = []
    for p in ep.params:
        param: dict[str, Any] = {
            "name": p.name,
            "in": p.where,
            "required": p.where == "path",
            "schema": dict(p.schema),
        }
        if p.description:
            param["description"] = p.description
        if p.where == "query" and p.default is not None:
            param["schema"]["default"] = p.default
        params.append(param)
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {"required": ep.body_required, "content": _json(ref(ep.body))}
    if ep.stream is not None:
        stream = {"type": "string", "contentMediaType": "application/octet-stream"}
        op["requestBody"] = {"required": False, "content": {"application/octet-stream": {
            "schema": stream}}}  # fmt: skip
    statuses = set(ep.errors) | {404}  # any path may be unknown
    if ep.body is not None or ep.params or ep.stream is not None:
        statuses.add(400)
    if ep.body is not None or ep.stream is not None:  # read under a size limit and a pace
        statuses |= {408, 413}
    if ep.role is not None:
        statuses |= set(AUTH_ERRORS)
    for status in sorted(statuses):
        text = AUTH_ERRORS.get(status) or ERROR_TEXT[status]
        op["responses"][str(status)] = {"description": text, "content": _json(ref("Error"))}
    return op


def document(components: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The document; ``components`` are the schemas (default: without the check names)."""
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format)",
            "security": [],
            "responses": {
                "200": {"description": "Metrics", "content": {"text/plain": {"schema": {}}}}
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({})}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ashat control plane",
            "version": __version__,
            "description": (
                "The deployment workflow over HTTP: the same services as the deploy CLI, "
                "acting as the user whose bearer token is sent. Roles: viewer < deployer < "
                "approver < admin, each including the ones before. Errors are "
                '{"error", "kind"}.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components or COMPONENTS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from 'ashat users token NAME'",
                }
            },
        },
    }
