"""The audit hash chain (pure, then through a real SQLite store), and the validation of the
two things a user types that end up in it: server URLs and update ids."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ashat.errors import InvalidInput
from ashat.ids import UPDATE_ID_RE, validate_tier, validate_update_id
from ashat.store.audit import GENESIS_HASH, chain_hash, event_body, verify_chain
from ashat.store.store import Store
from ashat.workflow.models import Event
from ashat.workflow.ports import Clock
from ashat.workflow.service import Workflow
from ashat.workflow.states import State
from ashat.workflow.urls import validate_server_url

# -- the pure chain -------------------------------------------------------------------------


def make_chain(details: list[dict[str, object]]) -> list[Event]:
    events, prev = [], GENESIS_HASH
    for i, d in enumerate(details, start=1):
        dep = f"u{i % 3}"
        at = f"2030-01-01T00:00:{i % 60:02d}.000000Z"
        digest = chain_hash(prev, event_body(i, dep, "note", "alice", at, d))
        events.append(Event(i, dep, "note", "alice", at, d, prev, digest))
        prev = digest
    return events


def head(events: list[Event]) -> tuple[int, str]:
    return (events[-1].seq, events[-1].hash) if events else (0, GENESIS_HASH)


def test_empty_chain_is_intact() -> None:
    report = verify_chain([], 0, GENESIS_HASH)
    assert report.ok and report.events == 0 and report.broken_seq is None


def test_intact_chain() -> None:
    events = make_chain([{"n": i} for i in range(10)])
    report = verify_chain(events, *head(events))
    assert report.ok
    assert report.events == 10
    assert report.to_json() == {
        "ok": True,
        "events": 10,
        "broken_seq": None,
        "reason": None,
        "head": {"seq": 10, "hash": events[-1].hash},
    }


def rehashed(events: list[Event], seq: int, details: dict[str, object]) -> list[Event]:
    """What a writer of the store can do: change event ``seq`` and hash every one after it
    again (the hash is not keyed)."""
    out, prev = list(events[: seq - 1]), events[seq - 2].hash if seq > 1 else GENESIS_HASH
    for ev in events[seq - 1 :]:
        d = details if ev.seq == seq else ev.details
        digest = chain_hash(prev, event_body(ev.seq, ev.deployment_id, ev.kind, ev.actor, ev.at, d))
        out.append(dataclasses.replace(ev, details=d, prev_hash=prev, hash=digest))
        prev = digest
    return out


def test_a_rehashed_chain_is_found_only_against_a_head_kept_elsewhere() -> None:
    events = make_chain([{"n": i} for i in range(10)])
    kept = verify_chain(events, *head(events)).head  # printed, and recorded elsewhere
    assert kept == (10, events[-1].hash)
    forged = rehashed(events, 3, {"n": "changed"})
    assert verify_chain(forged, *head(forged)).ok  # the chain alone cannot tell
    report = verify_chain(forged, *head(forged), at=kept)
    assert not report.ok and report.broken_seq == 10
    assert "not the event recorded as #10" in (report.reason or "")
    report = verify_chain(forged, *head(forged), at=(2, events[1].hash))  # before the change
    assert report.ok
    cut = events[:7]  # the tail dropped, the head moved with it
    report = verify_chain(cut, *head(cut), at=kept)
    assert not report.ok and "ends at #7, before #10 recorded" in (report.reason or "")


def test_hash_covers_prev_hash_and_canonical_body() -> None:
    body = event_body(1, None, "k", "a", "t", {"b": 1, "a": [1, "é"]})
    assert chain_hash(GENESIS_HASH, body) == chain_hash(GENESIS_HASH, dict(reversed(body.items())))
    assert chain_hash(GENESIS_HASH, body) != chain_hash("1" * 64, body)


def test_altered_details() -> None:
    events = make_chain([{"n": i} for i in range(6)])
    h = head(events)
    events[3] = dataclasses.replace(events[3], details={"n": 99})
    report = verify_chain(events, *h)
    assert not report.ok
    assert report.broken_seq == 4
    assert "#4" in (report.reason or "") and "altered" in (report.reason or "")


def test_deleted_middle_event() -> None:
    events = make_chain([{"n": i} for i in range(6)])
    h = head(events)
    del events[2]
    report = verify_chain(events, *h)
    assert not report.ok
    assert report.broken_seq == 3
    assert "missing" in (report.reason or "")


def test_deleted_first_event() -> None:
    events = make_chain([{"n": i} for i in range(3)])
    h = head(events)
    report = verify_chain(events[1:], *h)
    assert (report.ok, report.broken_seq) == (False, 1)


def test_deleted_last_event() -> None:
    events = make_chain([{"n": i} for i in range(6)])
    h = head(events)
    report = verify_chain(events[:-1], *h)
    assert not report.ok
    assert report.broken_seq == 6
    assert "end of the chain" in (report.reason or "")


def test_all_events_deleted() -> None:
    events = make_chain([{"n": i} for i in range(3)])
    report = verify_chain([], *head(events))
    assert (report.ok, report.broken_seq) == (False, 1)


def test_altered_prev_hash() -> None:
    events = make_chain([{"n": i} for i in range(6)])
    h = head(events)
    events[4] = dataclasses.replace(events[4], prev_hash="f" * 64)
    report = verify_chain(events, *h)
    assert (report.ok, report.broken_seq) == (False, 5)
    assert "does not link" in (report.reason or "")


def test_recomputed_hash_still_breaks_the_next_link() -> None:
    events = make_chain([{"n": i} for i in range(6)])
    h = head(events)
    e = events[2]
    forged = {"n": "forged"}
    digest = chain_hash(
        e.prev_hash, event_body(e.seq, e.deployment_id, e.kind, e.actor, e.at, forged)
    )
    events[2] = dataclasses.replace(e, details=forged, hash=digest)
    report = verify_chain(events, *h)
    assert (report.ok, report.broken_seq) == (False, 4)


def test_reordered_events() -> None:
    events = make_chain([{"n": i} for i in range(6)])
    h = head(events)
    events[1], events[2] = events[2], events[1]
    report = verify_chain(events, *h)
    assert (report.ok, report.broken_seq) == (False, 2)


def test_head_mismatch() -> None:
    events = make_chain([{"n": i} for i in range(4)])
    report = verify_chain(events, 4, "a" * 64)
    assert (report.ok, report.broken_seq) == (False, 4)
    report = verify_chain(events, 3, events[2].hash)  # a row appended behind the head's back
    assert not report.ok


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=3), min_size=1, max_size=8),
    st.data(),
)
def test_any_tampered_details_are_found(
    details: list[dict[str, object]], data: st.DataObject
) -> None:
    events = make_chain(details)
    h = head(events)
    assert verify_chain(events, *h).ok
    i = data.draw(st.integers(0, len(events) - 1))
    forged = {**events[i].details, "tampered": True}
    events[i] = dataclasses.replace(events[i], details=forged)
    report = verify_chain(events, *h)
    assert (report.ok, report.broken_seq) == (False, i + 1)


# -- through a real store -------------------------------------------------------------------


@pytest.fixture
def filled(store: Store, clock: Clock) -> Store:
    """Seven events: two deployments created, moved, noted."""
    wf = Workflow(store, "alice", clock=clock)
    wf.create("u1", "first")  # 1
    wf.move("u1", State.PUSHED)  # 2
    wf.note("u1", "step", {"bytes": 10, "unicode": "é✓"})  # 3
    wf.create("u2", "second")  # 4
    wf.cancel("u1")  # 5
    wf.configure("public", "http://127.0.0.1:8080", "staging")  # 6
    wf.move("u2", State.FAILED, reason="boom")  # 7
    assert store.verify_audit().ok
    return store


def test_store_chain_intact(filled: Store) -> None:
    report = filled.verify_audit()
    assert report.ok and report.events == 7
    events = filled.events()
    assert [e.seq for e in events] == list(range(1, 8))
    assert events[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))


def test_store_empty_chain(store: Store) -> None:
    report = store.verify_audit()
    assert report.ok and report.events == 0


def test_store_altered_details(filled: Store) -> None:
    filled.db.execute("UPDATE events SET details = ? WHERE seq = 3", (json.dumps({"bytes": 11}),))
    report = filled.verify_audit()
    assert (report.ok, report.broken_seq) == (False, 3)


def test_store_unparseable_details(filled: Store) -> None:
    filled.db.execute("UPDATE events SET details = 'not json' WHERE seq = 2")
    assert (filled.verify_audit().ok, filled.verify_audit().broken_seq) == (False, 2)


def test_store_altered_actor(filled: Store) -> None:
    filled.db.execute("UPDATE events SET actor = 'mallory' WHERE seq = 5")
    assert filled.verify_audit().broken_seq == 5


def test_store_deleted_middle_row(filled: Store) -> None:
    filled.db.execute("DELETE FROM events WHERE seq = 4")
    report = filled.verify_audit()
    assert (report.ok, report.broken_seq) == (False, 4)


def test_store_deleted_last_row(filled: Store) -> None:
    filled.db.execute("DELETE FROM events WHERE seq = 7")
    report = filled.verify_audit()
    assert (report.ok, report.broken_seq) == (False, 7)


def test_store_altered_prev_hash(filled: Store) -> None:
    filled.db.execute("UPDATE events SET prev_hash = ? WHERE seq = 6", ("0" * 64,))
    report = filled.verify_audit()
    assert (report.ok, report.broken_seq) == (False, 6)


def test_store_altered_head(filled: Store) -> None:
    filled.db.execute("UPDATE audit_head SET hash = ? WHERE id = 1", ("e" * 64,))
    assert not filled.verify_audit().ok


def test_store_chain_across_many_batches(store: Store) -> None:
    with store.db.transaction():
        for i in range(12):
            store.append_event("note", "bob", f"2030-01-01T00:00:{i:02d}.000000Z", {"i": i})
    assert store.verify_audit().ok
    assert store.verify_audit().events == 12
    # _iter_events pages through the table; a small batch crosses page boundaries.
    assert [e.seq for e in store._iter_events(batch=5)] == list(range(1, 13))


def test_failed_transaction_leaves_no_event(store: Store) -> None:
    with pytest.raises(RuntimeError), store.db.transaction():
        store.append_event("note", "bob", "2030-01-01T00:00:00.000000Z", {})
        raise RuntimeError("abort")
    assert store.events() == []
    assert store.verify_audit().ok
    store.append_event("note", "bob", "2030-01-01T00:00:01.000000Z", {})
    assert store.events()[0].seq == 1
    assert store.verify_audit().ok


# -- server URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("http://example.com", "http://example.com"),
        ("https://example.com/", "https://example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://staging.example.com:8443/ashat/", "https://staging.example.com:8443/ashat"),
        ("http://[::1]:9000/a/b", "http://[::1]:9000/a/b"),
        ("http://localhost:65535", "http://localhost:65535"),
    ],
)
def test_good_urls(url: str, normalized: str) -> None:
    assert validate_server_url(url) == normalized


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com",
        "file:///etc/passwd",
        "example.com",
        "example.com:8080",
        "http://",
        "http:///path",
        "http://:8080",
        "http://user:secret@example.com",
        "http://user@example.com",
        "http://example.com/?x=1",
        "http://example.com?",
        "http://example.com#frag",
        "http://example.com#",
        " http://example.com",
        "http://example.com ",
        "http://exa mple.com",
        "http://example.com/\tpath",
        "http://example.com\n",
        "http://exa\x00mple.com",
        "http://example.com:99999",
        "http://example.com:0",
        "http://example.com:abc",
        "http://example.com:-1",
        "http://example.com:",
        "http://[::1",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_server_url(url)
    assert info.value.exit_code == 2
    assert "invalid server URL" in info.value.message


def test_bad_url_message_never_shows_credentials() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_server_url("https://ops:hunter2@example.com")
    assert "hunter2" not in info.value.message


# -- update ids and tiers -------------------------------------------------------------------


@given(st.from_regex(UPDATE_ID_RE, fullmatch=True))
def test_valid_update_ids_are_accepted(value: str) -> None:
    assert validate_update_id(value) == value


@given(st.text(max_size=80).filter(lambda s: UPDATE_ID_RE.fullmatch(s) is None))
def test_other_strings_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="invalid update id"):
        validate_update_id(value)


@pytest.mark.parametrize(
    "value",
    ["", "-a", ".a", "_a", "A1", "a/b", "a b", "a\n", "../x", "a" * 65, "é", "a:b"],
)
def test_update_id_edge_cases_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        validate_update_id(value)


@pytest.mark.parametrize("value", ["a", "0", "v1.2.3", "release_2030-01-01", "a" * 64])
def test_update_id_edge_cases_accepted(value: str) -> None:
    assert validate_update_id(value) == value


def test_update_id_regex_is_the_documented_one() -> None:
    assert UPDATE_ID_RE.pattern == r"[a-z0-9][a-z0-9._-]{0,63}"
    assert re.fullmatch(UPDATE_ID_RE, "a" * 64)


def test_tiers() -> None:
    assert validate_tier("public") == "public"
    assert validate_tier("omega") == "omega"
    with pytest.raises(InvalidInput):
        validate_tier("alpha")
