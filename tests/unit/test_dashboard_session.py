"""Dashboard sessions (:mod:`ashat.api.session`): signed cookies that name a user and never
hold a token, end with the token or the lifetime, and resist tampering; the CSRF and origin
checks; the server secret kept 0600."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from ashat.api.session import (
    MAX_AGE_S,
    Session,
    SessionCodec,
    csrf_matches,
    load_secret,
    same_origin,
)
from ashat.errors import InvalidInput
from ashat.store.store import Store
from ashat.store.users import User

SECRET = b"k" * 32
NOW = 2_000_000_000.0


def user(name: str = "bob", token_hash: str | None = "ab" * 32) -> User:
    return User(name, "approver", token_hash, "2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "t")


def test_a_session_round_trips_and_names_the_user_not_the_token() -> None:
    codec = SessionCodec(SECRET)
    s = codec.new(user(), NOW)
    value = codec.encode(s)
    assert codec.decode(value, NOW + 10) == s
    payload = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert payload["u"] == "bob" and "ab" * 32 not in value
    assert codec.belongs_to(s, user())
    assert len(s.csrf) >= 40 and codec.new(user(), NOW).csrf != s.csrf


def test_sessions_end_with_the_token_the_user_or_the_lifetime() -> None:
    codec = SessionCodec(SECRET)
    s = codec.new(user(), NOW)
    assert not codec.belongs_to(s, user(token_hash="cd" * 32))  # a new token
    assert not codec.belongs_to(s, user(token_hash=None))
    assert not codec.belongs_to(s, None)  # removed
    assert not codec.belongs_to(s, user(name="eve"))
    value = codec.encode(s)
    assert codec.decode(value, NOW + MAX_AGE_S + 1) is None
    assert codec.decode(value, NOW - 3600) is None  # issued in the future


def test_another_servers_secret_or_a_changed_byte_is_no_session() -> None:
    codec = SessionCodec(SECRET)
    value = codec.encode(codec.new(user(), NOW))
    assert SessionCodec(b"x" * 32).decode(value, NOW) is None
    for i in range(len(value)):
        changed = value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]
        assert codec.decode(changed, NOW) is None, i


def test_a_forged_payload_with_a_valid_mac_shape_is_refused() -> None:
    codec = SessionCodec(SECRET)
    body = {"u": "ada", "f": "0" * 64, "c": "x", "t": int(NOW)}
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    assert codec.decode(payload + "." + "A" * 43, NOW) is None


@given(st.text(max_size=3000))
def test_decoding_never_raises(value: str) -> None:
    assert SessionCodec(SECRET).decode(value, NOW) is None


def test_malformed_payloads_under_a_valid_mac_are_refused() -> None:
    codec = SessionCodec(SECRET)
    for body in ([], {"u": 1, "f": "", "c": "", "t": 1}, {"u": "a", "f": "", "c": "", "t": True}):
        payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
        assert codec.decode(f"{payload}.{codec._mac(payload)}", NOW) is None


def test_csrf_matches_only_the_sessions_token() -> None:
    s = Session("bob", "f", "tok-123", int(NOW))
    assert csrf_matches(s, "tok-123")
    for bad in (None, "", "tok-124", "tok-123 ", "tök"):
        assert not csrf_matches(s, bad)


def _request(headers: dict[str, str], scheme: str = "http") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http", "method": "POST", "path": "/x", "headers": raw, "scheme": scheme,
        "server": ("127.0.0.1", 8800), "query_string": b"",
    }  # fmt: skip
    return Request(scope)


def test_same_origin() -> None:
    host = {"Host": "ctl.example:8800"}
    assert same_origin(_request(host))  # no Origin, no Referer: the CSRF token decides
    assert same_origin(_request({**host, "Origin": "http://ctl.example:8800"}))
    assert same_origin(_request({**host, "Referer": "http://ctl.example:8800/deployments/x"}))
    assert same_origin(_request({**host, "Origin": "https://ctl.example:8800"}, "https"))
    for origin in ("http://evil.example", "null", "https://ctl.example:8800", ""):
        assert not same_origin(_request({**host, "Origin": origin})), origin
    assert not same_origin(_request({**host, "Referer": "http://evil.example/ctl.example:8800"}))


def test_the_secret_is_made_once_0600_and_kept(tmp_path: Path) -> None:
    state = tmp_path / ".ashat"
    first = load_secret(state)
    path = state / "secrets" / "session.key"
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(state) == first
    path.chmod(0o644)
    with pytest.raises(InvalidInput, match="open to others"):
        load_secret(state)
    path.chmod(0o600)
    path.write_text("not hex\n")
    with pytest.raises(InvalidInput, match="not a session secret"):
        load_secret(state)


def test_servers_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    state = tmp_path / ".ashat"
    got: list[bytes] = []
    threads = [threading.Thread(target=lambda: got.append(load_secret(state))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1
    assert os.listdir(state / "secrets") == ["session.key"]  # no temporary file left


def test_an_unwritable_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / ".ashat"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(InvalidInput, match="session secret"):
        load_secret(blocker)


def test_an_ended_session_is_kept_until_it_would_have_expired(store: Store) -> None:
    """On SQLite and PostgreSQL: signing out records the session's id; ending it twice is
    harmless; ends past their expiry are forgotten at the next one."""
    from ashat.store.users import UserStore

    users = UserStore(store)
    codec = SessionCodec(SECRET)
    old, new = codec.new(user(), NOW - MAX_AGE_S - 10), codec.new(user(), NOW)
    assert old.id != new.id and len(new.id) == 64 and new.csrf not in new.id
    users.end_session(old.id, codec.expires_at(old), int(NOW - MAX_AGE_S))
    users.end_session(old.id, codec.expires_at(old), int(NOW - MAX_AGE_S))
    assert users.session_ended(old.id) and not users.session_ended(new.id)
    users.end_session(new.id, codec.expires_at(new), int(NOW))
    assert users.session_ended(new.id)
    assert not users.session_ended(old.id)  # it expired anyway: the row is gone


def test_an_approval_that_did_not_count_is_not_called_recorded() -> None:
    """A review: bob approved twice (k = 2); the second was not counted and its comment
    dropped, yet the page said "Your approval was recorded"."""
    from types import SimpleNamespace

    from ashat.api.dashboard import _approve_notice
    from ashat.api.views import NOTICES

    def outcome(counted: bool | None, waiting: int) -> SimpleNamespace:
        recorded = None if counted is None else SimpleNamespace(counted=counted)
        return SimpleNamespace(recorded=recorded, waiting_for=waiting)

    assert _approve_notice(outcome(False, 1)) == "approval-repeated"
    assert "was not recorded" in NOTICES["approval-repeated"]
    assert _approve_notice(outcome(True, 1)) == "approval-recorded"
    assert _approve_notice(outcome(True, 0)) == "approved"
    assert _approve_notice(outcome(None, 0)) == "resumed"
