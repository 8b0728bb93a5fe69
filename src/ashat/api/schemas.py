"""The JSON Schemas of the API's bodies (OpenAPI 3.1 components, JSON Schema 2020-12).

They are the one description of the wire: ``/openapi.json`` publishes them, and request
bodies are validated against them before a handler runs, so the document cannot drift
from what the server accepts.
"""

from __future__ import annotations

from typing import Any

from ashat.errors import InvalidInput
from ashat.ids import SAFE_TEXT_PATTERN, check_text
from ashat.ops.users import UserRole
from ashat.workflow.states import State

STATES = [s.value for s in State]
ROLES = [r.value for r in UserRole]
UPDATE_ID_PATTERN = "^[a-z0-9][a-z0-9._-]{0,63}$"
TIER_PATTERN = r"^(public|omega(@[a-z][a-z0-9-]{0,31})?)$"  # ids.validate_tier
USER_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
# What validate_server_url accepts, as a pattern: http(s), a host, a port 1-65535, a path.
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
SERVER_URL_PATTERN = (
    f"^https?://[A-Za-z0-9]([A-Za-z0-9.-]{{0,252}})?(:{_PORT})?(/[A-Za-z0-9._~/-]*)?$"
)
SERVER_NAME_PATTERN = "^[!-~]([ -~]{0,98}[!-~])?$"  # printable ASCII, no outer spaces
TOKEN_PATTERN = "^[!-~]{1,4096}$"  # one word of printable ASCII
DIGEST_PATTERN = "^[0-9a-f]{64}$"
MAX_DIGESTS = 50_000  # per /v1/blobs/missing request, as on the agent


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def text(max_length: int, min_length: int = 0) -> dict[str, Any]:
    """Free text a person wrote (a reason, a comment): no NUL, which PostgreSQL cannot store,
    nor a control character or bidirectional override (:func:`ashat.ids.check_text`; a
    newline passes here, and the verbs that take one line refuse it, naming the field)."""
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, "pattern": SAFE_TEXT}
    if min_length:
        schema["minLength"] = min_length
    return schema


NO_NUL = "^[^\\u0000]*$"
SAFE_TEXT = SAFE_TEXT_PATTERN


def _mismatch(pattern: str, instance: str) -> str:
    """Why ``instance`` does not match ``pattern``; free text is not quoted back."""
    if "\x00" in instance and pattern in (NO_NUL, SAFE_TEXT):
        return "must not contain a NUL character"
    if pattern == SAFE_TEXT:
        try:
            check_text(instance, "it", lines=True)
        except InvalidInput as e:
            return e.message.removeprefix("it ")
    return f"{instance!r} does not match {pattern!r}"


STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}
BOOL: dict[str, Any] = {"type": "boolean"}
OBJ: dict[str, Any] = {"type": "object"}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
    }


def closed(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """A request body: only these keys."""
    return {
        "type": "object",
        "properties": props,
        "required": required or [],
        "additionalProperties": False,
    }


COMPONENTS: dict[str, dict[str, Any]] = {
    "Error": obj(
        {"error": STR, "kind": STR},
        {"exit_code": INT, "details": OBJ},
    ),
    "Health": obj({"status": {"const": "ok"}, "version": STR}),
    "Deployment": obj(
        {
            "update_id": STR,
            "state": {"enum": STATES},
            "description": STR,
            "created_by": STR,
            "created_at": STR,
            "updated_at": STR,
            "reason": nullable(STR),
            "details": OBJ,
        }
    ),
    "Event": obj(
        {
            "seq": INT,
            "update_id": nullable(STR),
            "kind": STR,
            "actor": STR,
            "at": STR,
            "details": OBJ,
            "hash": STR,
        }
    ),
    "Lease": obj(
        {"tier": STR, "update_id": STR, "owner": STR, "acquired_at": STR, "expires_at": STR}
    ),
    "CheckResult": obj(
        {
            "name": STR,
            "title": STR,
            "status": {"enum": ["passed", "failed", "skipped", "error"]},
            "summary": STR,
            "details": OBJ,
            "duration_s": NUM,
        },
        {"run": INT, "at": STR},
    ),
    "Approval": obj({"user": STR, "at": STR, "comment": nullable(STR)}),
    "Rollout": obj({"rollout_id": STR, "state": STR}, {"update_id": STR, "totals": OBJ}),
    "Server": obj(
        {
            "tier": {"type": "string", "pattern": TIER_PATTERN},
            "name": STR,
            "url": STR,
            "token": nullable({"const": "configured"}),
            "ca_cert": nullable(STR),
            "updated_at": STR,
            "updated_by": STR,
        },
        {"reachable": BOOL, "health": OBJ, "authorized": BOOL, "error": STR},
    ),
    "User": obj(
        {
            "name": STR,
            "role": {"enum": ROLES},
            "token": nullable({"const": "issued"}),
            "token_issued_at": nullable(STR),
            "created_at": STR,
            "created_by": STR,
        }
    ),
    "Me": obj({"name": STR, "role": {"enum": ROLES}}),
    "DeploymentList": obj({"deployments": {"type": "array", "items": ref("Deployment")}}),
    "Overview": obj(
        {
            "active": {"type": "array", "items": ref("Deployment")},
            "recent": {"type": "array", "items": ref("Deployment")},
            "leases": {"type": "array", "items": ref("Lease")},
        }
    ),
    "DeploymentStatus": obj(
        {
            "deployment": ref("Deployment"),
            "next": {"type": "array", "items": {"enum": STATES}},
            "leases": {"type": "array", "items": ref("Lease")},
            "checks": {"type": "array", "items": ref("CheckResult")},
            "approvals": {"type": "array", "items": ref("Approval")},
            "rollout": nullable(ref("Rollout")),
            "rollout_note": nullable(STR),
            "rollouts": {"type": "array", "items": ref("Rollout")},
            "events": {"type": "array", "items": ref("Event")},
        }
    ),
    "EventList": obj({"update_id": STR, "events": {"type": "array", "items": ref("Event")}}),
    "VerifyResult": obj(
        {
            "update_id": STR,
            "state": {"enum": STATES},
            "passed": BOOL,
            "run": INT,
            "results": {"type": "array", "items": ref("CheckResult")},
            "checks": {"type": "array", "items": ref("CheckResult")},
            "missing": {"type": "array", "items": STR},
            "verification_digest": nullable(STR),
        }
    ),
    "ApprovalToSign": obj({"signed": OBJ, "namespace": STR, "verification": OBJ}),
    "ApproveResult": obj(
        {"update_id": STR, "state": {"enum": STATES}},
        {
            "approvals": {"type": "array", "items": ref("Approval")},
            "required": INT,
            "counted": BOOL,
            "holding": nullable(INT),
            "not_counted": {"type": "array", "items": STR},
            "waiting_for": INT,
            "rollout": nullable(OBJ),
            "bytes_relayed": INT,
            "waves": {"type": "array", "items": INT},
            "rollout_status": nullable(OBJ),
        },
    ),
    "RollbackResult": obj(
        {"update_id": STR, "state": {"enum": STATES}},
        {"restored": nullable(STR), "note": STR, "public": STR, "rollout": OBJ},
    ),
    "PushResult": obj(
        {
            "update_id": STR,
            "state": {"enum": STATES},
            "target": STR,
            "sequence": INT,
            "files": INT,
            "bytes_total": INT,
            "bytes_sent": INT,
            "blobs_sent": INT,
            "blobs_skipped": INT,
            "steps": {"type": "array", "items": obj({"step": STR, "detail": STR})},
        },
        {
            "duration_s": NUM,
            "resumed": BOOL,
            "public_previous": nullable(STR),
            "app": nullable(OBJ),
            "timings": {"type": "object", "additionalProperties": NUM},
        },
    ),
    "BlobsMissing": obj(
        {"missing": {"type": "array", "items": {"type": "string", "pattern": DIGEST_PATTERN}}}
    ),
    "PackStored": obj({"stored": INT, "blobs": INT, "bytes": INT}),
    "DeploymentChange": obj({"deployment": ref("Deployment")}),
    "Cancelled": obj({"deployment": ref("Deployment"), "public": STR}),
    "RolloutControlled": obj(
        {"deployment": ref("Deployment"), "action": STR, "rollout": ref("Rollout")}
    ),
    "ServerList": obj({"servers": {"type": "array", "items": ref("Server")}}),
    "ServerConfigured": obj({"server": ref("Server"), "replaced": nullable(ref("Server"))}),
    "AuditReport": obj(
        {"ok": BOOL, "events": INT, "broken_seq": nullable(INT), "reason": nullable(STR)},
        {"head": nullable(obj({"seq": INT, "hash": STR}))},
    ),
    "Mainframes": obj({"mainframes": {"type": "array", "items": OBJ}}),
    "UserList": obj({"users": {"type": "array", "items": ref("User")}}),
    "UserToken": obj({"user": ref("User"), "token": STR}),
    "UserRemoved": obj({"removed": ref("User")}),
    # request bodies
    # "only" lists check names: the enum is filled in by with_checks() when the server starts
    # (plug-ins add theirs).
    "VerifyRequest": closed(
        {"only": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 50}}
    ),
    "ApproveRequest": closed(
        {
            "comment": nullable(text(1000)),
            "wait": {"type": "boolean", "default": False},
            # deploy approve --to: a label selector the rollout goes to (deploy --via sends it)
            "to": nullable(text(1000)),
            # the approval statement the approver signed on their own machine (a project
            # with a root of trust takes no other approval)
            "statement": {
                "type": "object",
                "properties": {"signed": OBJ, "signatures": {"type": "array", "maxItems": 8}},
                "required": ["signed", "signatures"],
            },
        }
    ),
    "ApprovalToSignRequest": closed(
        {
            "keyid": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "comment": nullable(text(1000)),
        },
        ["keyid"],
    ),
    "BlobsMissingRequest": closed(
        {
            "digests": {
                "type": "array",
                "items": {"type": "string", "pattern": DIGEST_PATTERN},
                "maxItems": MAX_DIGESTS,
            }
        },
        ["digests"],
    ),
    "PushRequest": closed(
        {
            "description": text(1000, min_length=1),
            "manifest": {"type": "object"},
            "tasks": {
                "type": "array",
                "maxItems": 20,
                "items": text(300, min_length=1),
            },
        },
        ["description", "manifest"],
    ),
    "ReasonRequest": closed({"reason": nullable(text(500))}),
    "ServerRequest": closed(
        {
            "url": {"type": "string", "pattern": SERVER_URL_PATTERN, "maxLength": 2000},
            "name": {"type": "string", "pattern": SERVER_NAME_PATTERN},
            "token": {"type": "string", "pattern": TOKEN_PATTERN},
        },
        ["url", "name"],
    ),
    "UserRequest": closed(
        {"name": {"type": "string", "pattern": USER_NAME_PATTERN}, "role": {"enum": ROLES}},
        ["name", "role"],
    ),
}


def with_checks(names: list[str]) -> dict[str, dict[str, Any]]:
    """The components, with the check names this server knows in ``VerifyRequest``."""
    out = dict(COMPONENTS)
    out["VerifyRequest"] = closed(
        {"only": {"type": "array", "items": {"enum": names}, "maxItems": 50, "uniqueItems": True}}
    )
    return out


SECRET_FIELDS = frozenset({"token"})  # a refusal names their rule, never their value


def validate_body(schema: dict[str, Any], body: Any) -> None:
    """Check a request body against its schema. Raises :class:`InvalidInput` naming where
    (and, but for a secret field, what was given)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator_class()(schema).iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the body"
        if SECRET_FIELDS.intersection(str(p) for p in error.absolute_path):
            rule = f"{error.validator} {error.validator_value!r}"
            raise InvalidInput(
                f"invalid request body at {where}: does not satisfy {rule[:200]} "
                "(the value is a secret: not shown)"
            )
        raise InvalidInput(f"invalid request body at {where}: {error.message[:300]}")


_VALIDATOR: Any = None


def _validator_class() -> Any:
    """Draft 2020-12 whose ``pattern`` is ECMA-262's, as the schemas are published: ``$``
    ends the string. Python's ``$`` also matches before a final newline, which let
    ``"<digest>\\n"`` through to the agents (a review found it)."""
    global _VALIDATOR
    if _VALIDATOR is None:
        import re

        import jsonschema

        def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
            if not validator.is_type(instance, "string"):
                return
            python = (
                patrn[:-1] + r"\Z" if patrn.endswith("$") and not patrn.endswith("\\$") else patrn
            )
            if re.search(python, instance) is None:
                yield jsonschema.ValidationError(_mismatch(patrn, instance))

        _VALIDATOR = jsonschema.validators.extend(
            jsonschema.Draft202012Validator, {"pattern": pattern}
        )
    return _VALIDATOR
