"""Users of the control-plane API in the control store: name, role, and the sha256 of their
token. Every change is an audit event (``user.added``, ``user.token_issued``,
``user.removed``) in the same transaction; no event ever carries a token or its hash."""

from __future__ import annotations

import builtins  # the method named `list` shadows the builtin in the class body
from dataclasses import dataclass
from typing import Any

from ashat.errors import Refused
from ashat.ids import same_person
from ashat.store.db import Row
from ashat.store.store import Store
from ashat.workflow.errors import AlreadyExists

_COLS = "name, role, token_hash, token_issued_at, created_at, created_by"


@dataclass(frozen=True)
class User:
    name: str
    role: str
    token_hash: str | None
    token_issued_at: str | None
    created_at: str
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "token": "issued" if self.token_hash else None,
            "token_issued_at": self.token_issued_at,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


def _user(row: Row) -> User:
    return User(*row)


class UserStore:
    """The ``users`` table over a :class:`Store` (whose audit chain it appends to)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    def get(self, name: str) -> User | None:
        row = self.db.query_one(f"SELECT {_COLS} FROM users WHERE name = ?", (name,))
        return _user(row) if row else None

    def by_token_hash(self, token_hash: str) -> User | None:
        row = self.db.query_one(f"SELECT {_COLS} FROM users WHERE token_hash = ?", (token_hash,))
        return _user(row) if row else None

    def list(self) -> list[User]:
        return [_user(r) for r in self.db.query(f"SELECT {_COLS} FROM users ORDER BY name")]

    def count_role(self, role: str) -> int:
        row = self.db.query_one("SELECT COUNT(*) FROM users WHERE role = ?", (role,))
        return int(row[0]) if row else 0

    def add(self, name: str, role: str, actor: str, at: str) -> User:
        """Insert a user without a token; raises :class:`AlreadyExists`, also for a name
        that differs from a user's only in case: the approval rules count people's names
        ignoring case (``ashat.ids.same_person``), so "Bob" would approve as bob."""
        with self.db.transaction():
            if self.get(name) is not None:
                raise AlreadyExists(f"user {name!r} already exists", user=name)
            for other in self.list():
                if same_person(other.name) == same_person(name):
                    raise AlreadyExists(
                        f"user {other.name!r} already exists, and {name!r} is the same name to "
                        "the approval rules (they ignore case)",
                        user=other.name,
                    )
            self.db.execute(
                f"INSERT INTO users ({_COLS}) VALUES (?, ?, NULL, NULL, ?, ?)",
                (name, role, at, actor),
            )
            self.store.append_event("user.added", actor, at, {"user": name, "role": role})
        user = self.get(name)
        assert user is not None
        return user

    def set_token(self, name: str, token_hash: str, actor: str, at: str) -> bool:
        """Replace ``name``'s token hash (the old token stops working); False if no such user."""
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE users SET token_hash = ?, token_issued_at = ? WHERE name = ?",
                (token_hash, at, name),
            )
            if changed != 1:
                return False
            self.store.append_event("user.token_issued", actor, at, {"user": name})
        return True

    def remove(self, name: str, actor: str, at: str, *, keep_one: str | None = None) -> bool:
        """Delete ``name`` (and so its token); False if there was no such user. With
        ``keep_one`` (a role), refuse (:class:`~ashat.errors.Refused`) to remove the last
        user of that role: counted in the removal's transaction, so two removals at once
        cannot both see another one left."""
        with self.db.transaction():
            user = self.get(name)
            if user is None:
                return False
            if user.role == keep_one and self.count_role(keep_one) <= 1:
                raise Refused(
                    f"{name} is the last {keep_one}: add another {keep_one} before removing "
                    "this one",
                    user=name,
                )
            self.db.execute("DELETE FROM users WHERE name = ?", (name,))
            self.store.append_event("user.removed", actor, at, {"user": name, "role": user.role})
        return True

    # -- passkeys ----------------------------------------------------------------------------

    def add_passkey(self, name: str, credential_id: str, keyid: str, public: str, at: str) -> bool:
        """Keep ``name``'s passkey (its public line), with an event; False if the credential
        was registered already."""
        with self.db.transaction():
            if self.db.query_one(
                "SELECT 1 FROM passkeys WHERE credential_id = ?", (credential_id,)
            ):
                return False
            self.db.execute(
                "INSERT INTO passkeys (credential_id, user_name, keyid, public, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (credential_id, name, keyid, public, at),
            )
            self.store.append_event("passkey.registered", name, at, {"user": name, "keyid": keyid})
        return True

    def passkeys(self, name: str) -> builtins.list[dict[str, str]]:
        rows = self.db.query(
            "SELECT credential_id, keyid, public, created_at FROM passkeys "
            "WHERE user_name = ? ORDER BY created_at",
            (name,),
        )
        return [
            {"credential_id": r[0], "keyid": r[1], "public": r[2], "created_at": r[3]} for r in rows
        ]

    # -- dashboard sessions ended by signing out ---------------------------------------------

    def end_session(self, session_id: str, expires_at: int, now: int) -> None:
        """Refuse session ``session_id`` from now until ``expires_at`` (when its cookie
        expires anyway); forget the ended sessions already past theirs."""
        with self.db.transaction():
            self.db.execute("DELETE FROM ended_sessions WHERE expires_at < ?", (now,))
            self.db.execute(
                "INSERT INTO ended_sessions (id, expires_at) VALUES (?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (session_id, expires_at),
            )

    def session_ended(self, session_id: str) -> bool:
        row = self.db.query_one("SELECT 1 FROM ended_sessions WHERE id = ?", (session_id,))
        return row is not None
