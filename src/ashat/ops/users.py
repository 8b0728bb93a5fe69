"""Users, roles and API tokens of the control plane (``ashat users``, ``/v1/users``).

Roles are ordered; each includes the ones below it::

    viewer    reads deployments, checks, approvals, events, servers, the fleet, the audit
    deployer  + verifies and cancels deployments
    approver  + approves and rolls back (the approver is the authenticated user)
    admin     + configures servers and manages users

A token is ``ashat_`` and 32 random bytes (URL-safe base64), shown once when issued; the
store keeps only its sha256 (enough for a random secret of that size: nothing to brute
force, and a stolen store yields no usable token). Issuing a new token replaces the old.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from enum import StrEnum

from ashat.errors import InvalidInput, NotFound
from ashat.ops.project import Project
from ashat.store.users import User, UserStore
from ashat.workflow.ports import SystemClock, iso

TOKEN_PREFIX = "ashat_"
TOKEN_BYTES = 32
USER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class UserRole(StrEnum):
    VIEWER = "viewer"
    DEPLOYER = "deployer"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(UserRole).index(self)

    def allows(self, needed: UserRole) -> bool:
        """Whether this role may do what ``needed`` may (higher roles include lower ones)."""
        return self.rank >= needed.rank


class NoSuchUser(NotFound):
    kind = "no_such_user"


def parse_role(value: str) -> UserRole:
    try:
        return UserRole(value)
    except ValueError as e:
        raise InvalidInput(
            f"unknown role {value!r}: expected one of {', '.join(r.value for r in UserRole)}"
        ) from e


def validate_user_name(name: str) -> str:
    if not isinstance(name, str) or USER_NAME_RE.fullmatch(name) is None:
        raise InvalidInput(
            f"invalid user name {str(name)[:80]!r}: 1-64 characters of letters, digits, "
            "'.', '_', '@' or '-', starting with a letter or digit"
        )
    return name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return iso(SystemClock().now())


def add_user(project: Project, name: str, role: str, *, actor: str | None = None) -> User:
    """Add ``name`` with ``role`` (no token yet). Raises InvalidInput or AlreadyExists."""
    from ashat.project import current_actor

    validate_user_name(name)
    r = parse_role(role)
    return UserStore(project.store).add(name, r.value, current_actor(actor), _now())


def issue_token(project: Project, name: str, *, actor: str | None = None) -> tuple[User, str]:
    """A new token for ``name``, replacing any older one; the token is returned only here."""
    from ashat.project import current_actor

    validate_user_name(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    users = UserStore(project.store)
    if not users.set_token(name, hash_token(token), current_actor(actor), _now()):
        raise NoSuchUser(f"no user {name!r}", user=name)
    user = users.get(name)
    assert user is not None
    return user, token


def list_users(project: Project) -> list[User]:
    return UserStore(project.store).list()


def remove_user(project: Project, name: str, *, actor: str | None = None) -> User:
    """Remove ``name``. Raises NoSuchUser, or Refused for the last admin."""
    from ashat.project import current_actor

    validate_user_name(name)
    users = UserStore(project.store)
    user = users.get(name)
    if user is None:
        raise NoSuchUser(f"no user {name!r}", user=name)
    if not users.remove(name, current_actor(actor), _now(), keep_one=UserRole.ADMIN.value):
        raise NoSuchUser(f"no user {name!r}", user=name)
    return user


def authenticate(project: Project, token: str) -> User | None:
    """The user whose token this is, or None (unknown, malformed, or replaced)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    return UserStore(project.store).by_token_hash(hash_token(token))
