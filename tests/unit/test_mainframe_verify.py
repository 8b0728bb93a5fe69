"""What a mainframe checks before installing (ashat.fleet.directive.check_install), with real
keys: each refusal reason of the contract, and the downgrade OMEGA may sign as a rollback."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest

from ashat.bundle.keys import PublicKey, SigningKey
from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest
from ashat.bundle.sign import sign_manifest
from ashat.fleet.directive import (
    KIND,
    NO_DIRECTIVE_KIND,
    Action,
    AnswerRefused,
    DirectiveRefused,
    Install,
    Running,
    check_install,
    check_no_directive,
    peek_directive,
)
from ashat.fleet.envelope import seal

ALPHA = SigningKey.generate()  # release key
OMEGA = SigningKey.generate()  # OMEGA's key: approvals and directives
MALLORY = SigningKey.generate()
NOW = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
ME = "mf-7"
APPROVAL = {"update_id": "u-7", "sequence": 7, "approvers": [{"user": "olga"}]}


def trust(*keys: SigningKey) -> dict[str, PublicKey]:
    return {k.keyid: k.public for k in keys}


def manifest(update_id: str = "u-7", sequence: int = 7) -> Manifest:
    content = f"release {update_id}".encode()
    return Manifest(
        schema=SCHEMA,
        update_id=update_id,
        sequence=sequence,
        description="test",
        created_at="2030-01-01T12:00:00+00:00",
        source={"kind": "git", "commit": "c" * 40, "ref": "main"},
        app={},
        files=(FileEntry("index.html", hashlib.sha256(content).hexdigest(), len(content), 0o644),),
    )


def signed(
    m: Manifest, release: SigningKey | None = ALPHA, approval: SigningKey | None = OMEGA
) -> Manifest:
    if release is not None:
        m = sign_manifest(m, release)
    if approval is not None:
        m = sign_manifest(m, approval, "approval", APPROVAL)
    return m


POLL_NONCE = "p" * 24  # of the poll a directive answers


def directive(m: Manifest, key: SigningKey = OMEGA, **over: Any) -> str:
    payload = {
        "mainframe_id": ME,
        "rollout_id": "ro-1",
        "action": "install",
        "update_id": m.update_id,
        "sequence": m.sequence,
        "manifest_digest": m.digest(),
        "issued_at": (NOW - dt.timedelta(seconds=10)).isoformat(),
        "expires_at": (NOW + dt.timedelta(seconds=290)).isoformat(),
        **over,
    }
    return seal(KIND, payload, key)


def check(
    token: str,
    m: Manifest | bytes,
    running: Running | None = None,
    now: dt.datetime = NOW,
    rolled_back: tuple[str, ...] = (),
    nonce: str | None = POLL_NONCE,
) -> Install:
    return check_install(
        token,
        m if isinstance(m, bytes) else m.to_bytes(),
        mainframe_id=ME,
        release_keys=trust(ALPHA),
        omega_keys=trust(OMEGA),
        running=running,
        now=now,
        rolled_back=rolled_back,
        nonce=nonce,
    )


def refused(
    token: str, m: Manifest | bytes, running: Running | None = None, **kw: Any
) -> DirectiveRefused:
    with pytest.raises(DirectiveRefused) as info:
        check(token, m, running, **kw)
    return info.value


RUNNING_5 = Running("u-5", 5, "0" * 64)


def test_a_good_directive_is_installed() -> None:
    m = signed(manifest())
    plan = check(directive(m), m, RUNNING_5)
    assert plan.manifest.update_id == "u-7" and not plan.already
    assert plan.directive.action is Action.INSTALL and plan.directive.rollout_id == "ro-1"
    assert plan.manifest_bytes == m.to_bytes()


def test_nothing_running_takes_any_sequence() -> None:
    m = signed(manifest(sequence=1))
    assert not check(directive(m), m, None).already


def test_expired_directive_is_refused() -> None:
    m = signed(manifest())
    e = refused(directive(m), m, now=NOW + dt.timedelta(seconds=291))
    assert e.reason == "expired" and "replayed" in e.message
    assert e.directive is not None and e.directive.rollout_id == "ro-1"  # for the report


def test_a_directive_dated_ahead_to_live_a_day_is_refused() -> None:
    """A review: a directive issued 24 h ahead (and expiring 5 min after that) was taken: a
    replay of it would be taken for a day. It may expire at most 300 s plus 300 s of clock
    skew from now."""
    m = signed(manifest())
    ahead = {
        "issued_at": (NOW + dt.timedelta(hours=24)).isoformat(),
        "expires_at": (NOW + dt.timedelta(hours=24, seconds=300)).isoformat(),
    }
    e = refused(directive(m, **ahead), m)
    assert e.reason == "malformed" and "OMEGA's clock ahead" in e.message
    skewed = {
        "issued_at": (NOW + dt.timedelta(seconds=200)).isoformat(),
        "expires_at": (NOW + dt.timedelta(seconds=500)).isoformat(),
    }
    assert not check(directive(m, **skewed), m, RUNNING_5).already  # within the skew


def test_directive_for_another_mainframe_is_refused() -> None:
    m = signed(manifest())
    e = refused(directive(m, mainframe_id="mf-8"), m)
    assert e.reason == "wrong_mainframe" and "mf-8" in e.message


def test_directive_by_an_untrusted_key_is_refused() -> None:
    m = signed(manifest())
    e = refused(directive(m, key=MALLORY), m)
    assert e.reason == "forged"
    # It can still be named (its claims, unverified) so OMEGA hears of the refusal.
    assert e.directive is not None and e.directive.rollout_id == "ro-1"


def test_altered_directive_is_refused() -> None:
    m = signed(manifest())
    kind, body, sig = directive(m).split(".")
    other = directive(m, mainframe_id="mf-8").split(".")[1]
    assert refused(f"{kind}.{other}.{sig}", m).reason == "forged"
    assert body != other


def test_a_license_is_not_a_directive() -> None:
    m = signed(manifest())
    token = seal("license", {"mainframe_id": ME}, OMEGA)
    assert refused(token, m).reason == "malformed"
    assert peek_directive(token) is None


@pytest.mark.parametrize(
    "over",
    [
        {"action": "uninstall"},
        {"sequence": 0},
        {"sequence": True},
        {"manifest_digest": "ab"},
        {"expires_at": "tomorrow"},
        {"expires_at": "2030-05-01T12:05:00"},  # no timezone
        {"update_id": "../etc"},
    ],
)
def test_malformed_fields_are_refused(over: dict[str, Any]) -> None:
    m = signed(manifest())
    assert refused(directive(m, **over), m).reason == "malformed"


def test_manifest_digest_mismatch_is_refused() -> None:
    m = signed(manifest())
    other = signed(manifest(update_id="u-7", sequence=8))
    e = refused(directive(m), other)
    assert e.reason == "digest_mismatch"


def test_directive_naming_another_release_is_refused() -> None:
    m = signed(manifest())
    e = refused(directive(m, update_id="u-9"), m)
    assert e.reason == "mismatch"


def test_manifest_without_release_signature_is_refused() -> None:
    m = signed(manifest(), release=None)
    assert refused(directive(m), m).reason == "release_signature"


def test_release_signed_by_an_untrusted_key_is_refused() -> None:
    m = signed(manifest(), release=MALLORY)
    e = refused(directive(m), m)
    assert e.reason == "release_signature" and MALLORY.keyid in e.message


def test_manifest_without_approval_signature_is_refused() -> None:
    m = signed(manifest(), approval=None)
    e = refused(directive(m), m)
    assert e.reason == "approval_signature" and "no 'approval' signature" in e.message


def test_approval_by_an_untrusted_key_is_refused() -> None:
    m = signed(manifest(), approval=MALLORY)
    assert refused(directive(m), m).reason == "approval_signature"


def test_approval_by_the_release_key_is_not_enough() -> None:
    # ALPHA is trusted for releases, not for approvals: roles do not mix.
    m = signed(manifest(), approval=ALPHA)
    assert refused(directive(m), m).reason == "approval_signature"


def test_tampered_approval_payload_is_refused() -> None:
    m = signed(manifest())
    d = m.to_dict()
    for sig in d["signatures"]:
        if sig["role"] == "approval":
            sig["payload"]["approvers"] = [{"user": "mallory"}]
    tampered = json.dumps(d).encode()
    assert refused(directive(m), tampered).reason == "approval_signature"


def test_unparseable_manifest_is_refused() -> None:
    m = signed(manifest())
    assert refused(directive(m), b"{not json").reason == "bad_manifest"


def test_lower_sequence_without_rollback_is_refused() -> None:
    m = signed(manifest("u-3", 3))
    e = refused(directive(m), m, RUNNING_5)
    assert e.reason == "downgrade" and "only a rollback directive" in e.message


def test_equal_sequence_of_another_release_is_refused() -> None:
    m = signed(manifest("u-5b", 5))
    assert refused(directive(m), m, RUNNING_5).reason == "downgrade"


def rollback(m: Manifest, **over: Any) -> str:
    """OMEGA's rollback directive for the poll that sent POLL_NONCE from RUNNING_5."""
    return directive(m, action="rollback", nonce=POLL_NONCE, **{"from": "u-5", **over})


def test_rollback_directive_may_go_back() -> None:
    m = signed(manifest("u-3", 3))
    plan = check(rollback(m), m, RUNNING_5)
    assert plan.directive.action is Action.ROLLBACK and not plan.already


def test_rollback_is_still_checked() -> None:
    m = signed(manifest("u-3", 3), approval=None)
    e = refused(rollback(m), m, RUNNING_5)
    assert e.reason == "approval_signature"
    e = refused(rollback(m), m, RUNNING_5, now=NOW + dt.timedelta(hours=1))
    assert e.reason == "expired"


def test_a_rollback_answers_one_poll_from_the_release_running() -> None:
    """A rollback directive recorded and replayed within its lifetime moved a mainframe
    back from whatever it ran by then (the fixed release after it, say), and marked that
    one rolled back. It names the poll's nonce and the release it moves from."""
    m = signed(manifest("u-3", 3))
    e = refused(rollback(m), m, RUNNING_5, nonce="another-poll-nonce-000000")
    assert e.reason == "replayed"
    e = refused(directive(m, action="rollback"), m, RUNNING_5)  # an older OMEGA's: neither
    assert e.reason == "replayed"
    e = refused(rollback(m), m, Running("u-6", 6, "1" * 64))  # u-6 was installed since
    assert e.reason == "stale" and "moves from u-5, but u-6 runs here" in e.message
    first = refused(rollback(m, **{"from": None}), m, None, nonce="x" * 24)
    assert first.reason == "replayed"
    assert check(rollback(m, **{"from": None}), m, None).directive.from_release is None


def test_a_rollback_never_returns_to_a_release_rolled_back_here() -> None:
    """OMEGA's key alone could send a mainframe back to a release it was rolled back from."""
    m = signed(manifest("u-3", 3))
    e = refused(rollback(m), m, RUNNING_5, rolled_back=("u-3",))
    assert e.reason == "rolled_back" and "a rollback never returns to it" in e.message


def test_the_release_running_already_is_reported_installed() -> None:
    m = signed(manifest())
    plan = check(directive(m), m, Running("u-7", 7, m.digest()))
    assert plan.already


def test_same_id_with_other_content_is_refused() -> None:
    m = signed(manifest())
    e = refused(directive(m), m, Running("u-7", 7, "f" * 64))
    assert e.reason == "conflict"


def test_a_replayed_install_of_a_rolled_back_release_is_refused() -> None:
    m = signed(manifest("u-7", 7))
    e = refused(directive(m), m, RUNNING_5, rolled_back=("u-7",))
    assert e.reason == "rolled_back"
    back = signed(manifest("u-7", 7))  # nor may a rollback go there
    assert refused(rollback(back), back, RUNNING_5, rolled_back=("u-7",)).reason == "rolled_back"


# -- "no directive": OMEGA's signed answer to one poll -------------------------------------

NONCE = "n" * 24


def no_directive(key: SigningKey = OMEGA, kind: str = NO_DIRECTIVE_KIND, **over: Any) -> str:
    payload = {
        "mainframe_id": ME,
        "nonce": NONCE,
        "current": "u-6",
        "sequence": 6,
        "issued_at": NOW.isoformat(),
        **over,
    }
    return seal(kind, payload, key)


def check_quiet(token: Any, current: str | None = "u-6", sequence: int = 6) -> dt.datetime:
    """As a mainframe running ``current`` (``sequence``) that sent poll NONCE checks it."""
    return check_no_directive(
        token,
        mainframe_id=ME,
        nonce=NONCE,
        current=current,
        sequence=sequence,
        omega_keys=trust(OMEGA),
    )


def test_a_signed_no_directive_for_this_poll_is_accepted() -> None:
    assert check_quiet(no_directive()) == NOW
    nothing_yet = no_directive(current=None, sequence=0)
    assert check_quiet(nothing_yet, current=None, sequence=0) == NOW


@pytest.mark.parametrize(
    ("token", "reason", "needle"),
    [
        (None, "unsigned", "not signed by OMEGA"),
        ("", "malformed", "three dot-separated parts"),
        (no_directive(MALLORY), "forged", "not trusted"),
        (no_directive(nonce="o" * 24), "replayed", "another poll"),
        (no_directive(mainframe_id="mf-8"), "wrong_mainframe", "for mainframe 'mf-8'"),
        (no_directive(kind=KIND), "malformed", "not a no_directive token"),
        (no_directive(nonce=7), "malformed", "must be strings"),
        (no_directive(issued_at="yesterday"), "malformed", "malformed payload"),
        (no_directive(current=7), "malformed", "current must be"),
        (no_directive(sequence="6"), "malformed", "sequence must be"),
        (no_directive(sequence=True), "malformed", "sequence must be"),
        ("no_directive.e30.AAAA", "malformed", "refused"),
        # the poll OMEGA answered was rewritten on its way: it claimed another release
        (no_directive(current="u-7", sequence=7), "altered", "runs u-7 (sequence 7), not u-6"),
        (no_directive(sequence=60), "altered", "the poll was altered"),
        (no_directive(current=None, sequence=0), "altered", "runs nothing (sequence 0)"),
    ],
    ids=lambda v: v if not isinstance(v, str) or len(v) < 40 else "token",  # signed anew per run
)
def test_an_unproved_no_directive_is_refused(token: Any, reason: str, needle: str) -> None:
    with pytest.raises(AnswerRefused) as e:
        check_quiet(token)
    assert e.value.reason == reason
    assert needle in e.value.message


def test_a_signed_directive_is_not_a_no_directive() -> None:
    """An envelope is typed: OMEGA's directive cannot stand in for its "nothing new"."""
    token = directive(signed(manifest()))
    with pytest.raises(AnswerRefused) as e:
        check_quiet(token)
    assert e.value.reason == "malformed"
