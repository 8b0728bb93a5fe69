"""The warm helper's client side (ashat.cli.warm): which commands it hands over, and the
messages on its socket."""

from __future__ import annotations

import array
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ashat.cli import warm


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["push", "v1", "x"], "push"),
        (["--via", "https://ctl", "push", "v1", "x"], "push"),
        (["--via=https://ctl", "status"], "status"),
        (["--help"], None),
        (["--version"], None),
        (["--via"], None),
        ([], None),
        (["helper", "start"], "helper"),
    ],
)
def test_the_verb_of_a_command_line(argv: list[str], verb: str | None) -> None:
    assert warm.verb(argv) == verb


@pytest.mark.parametrize(
    ("argv", "routed"),
    [
        (["push", "v1", "x"], True),
        (["status"], True),
        (["history", "--limit", "3"], True),
        (["log", "v1"], True),
        (["approve", "v1"], False),  # may prompt, or drive a browser for a passkey
        (["verify", "v1"], False),  # loads third-party check plug-ins
        (["init"], False),  # prompts
        (["helper", "stop"], False),
        (["--version"], False),
    ],
)
def test_only_verbs_that_never_prompt_are_handed_over(argv: list[str], routed: bool) -> None:
    assert (warm.verb(argv) in warm.ROUTED) is routed


def test_a_message_and_its_descriptors_arrive_together() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    with a, b:
        warm.send(a, {"op": "run", "argv": ["status"], "env": {"K": "v" * 100_000}}, [w])
        message, fds = warm.receive(b, max_fds=3)
        assert message is not None and message["argv"] == ["status"]
        assert message["env"] == ["K=" + "v" * 100_000]  # longer than one read
        assert len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        os.close(fds[0])
        os.close(w)
        assert os.read(r, 100) == b"through the passed descriptor"
        os.close(r)
        a.close()
        assert warm.receive(b) == (None, [])  # a clean end


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (struct.pack("!I", warm.MAX_FRAME + 1), "over"),
        (struct.pack("!I", 3) + b"{{{", "not key=value"),
        (struct.pack("!I", 5) + b"a=1\0b", "not key=value"),
        (struct.pack("!I", 2) + b"=1", "not key=value"),
        (struct.pack("!I", 10) + b"a=", "mid-message"),
    ],
)
def test_a_bad_message_is_refused(raw: bytes, why: str) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.sendall(raw)
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(warm.HelperError, match=why):
            warm.receive(b)


def test_with_no_helper_the_command_runs_here(tmp_path: Path) -> None:
    (tmp_path / "ashat.toml").write_text("")
    env = {**os.environ, warm.ENV_SOCKET: f"{tmp_path}/none.sock", "ASHAT_USER": "a"}
    env.pop("ASHAT_DB", None)
    out = subprocess.run(
        [sys.executable, "-m", "ashat.cli.warm", "history"], env=env, capture_output=True,
        text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0 and "(none)" in out.stdout and out.stderr == ""


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: p.write_text("not a socket"), "is not a socket of this user"),
        (lambda p: p.symlink_to("/dev/null"), "is not a socket of this user"),
        (lambda p: (p.parent.chmod(0o777), _listen(p)), "can be written by others"),
    ],
)
def test_a_socket_that_cannot_be_trusted_is_not_used(
    tmp_path: Path, make: Callable[[Path], object], why: str
) -> None:
    base = tmp_path / "h"
    base.mkdir(mode=0o700)
    make(base / "deploy.sock")
    with pytest.raises(warm.HelperError, match=why):
        warm.connect(str(base / "deploy.sock"))


def _listen(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # the file stays


def test_a_relative_runtime_dir_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warm.ENV_SOCKET, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "run")
    assert warm.socket_path().startswith(f"/tmp/ashat-{os.getuid()}/")


def test_descriptors_of_a_bad_message_are_closed() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    with a, b:
        a.sendmsg(
            [struct.pack("!I", 2) + b"[]"],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))],
        )
        os.close(w)
        with pytest.raises(warm.HelperError, match="not key=value"):
            warm.receive(b, max_fds=4)
    assert os.read(r, 1) == b""  # every write end is closed: the reader sees the end
    os.close(r)


def test_a_whole_message_must_come_in_time() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.sendall(struct.pack("!I", 10) + b"a")  # and then nothing
        with pytest.raises(warm.HelperError, match="in time"):
            warm.receive(b, timeout_s=0.2)


def test_the_default_socket_is_one_per_installation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warm.ENV_SOCKET, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    path = warm.socket_path()
    assert path.startswith("/run/user/1000/ashat-deploy-") and path.endswith(".sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert warm.socket_path().startswith(f"/tmp/ashat-{os.getuid()}/ashat-deploy-")
    monkeypatch.setattr(sys, "executable", "/other/python3")
    assert warm.socket_path() != path.replace("/run/user/1000", f"/tmp/ashat-{os.getuid()}")


def test_where_the_helper_cannot_run_every_command_runs_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not Linux (no SO_PEERCRED): deploy never looks for a helper, and will not start one."""
    from support import deploy

    monkeypatch.setattr(warm, "SUPPORTED", False)
    monkeypatch.setattr(warm, "connect", lambda *a, **k: pytest.fail("looked for a helper"))
    assert warm.run_through_helper(["status"]) is None
    res = deploy("helper", "start")
    assert res.exit_code == 2
    assert "the warm helper needs Linux" in res.output


def test_a_command_may_run_longer_than_any_timeout_of_the_handshake() -> None:
    """The client waits for the command's end as long as it runs: a timeout left on the
    socket by the handshake (1 s to connect, 10 s for the pid) once cut every push longer
    than that off as 'the warm helper stopped while running this command'."""
    import threading

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.settimeout(0.1)  # what the handshake leaves
        later = threading.Timer(0.5, lambda: warm.send(b, {"exit": 7}))
        later.start()
        try:
            assert warm._wait(a, os.getpid()) == 7
        finally:
            later.join()


_TEXT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))


@settings(max_examples=200, deadline=None)
@given(
    argv=st.lists(_TEXT),
    env=st.dictionaries(_TEXT.filter(lambda k: "=" not in k and k != ""), _TEXT),
    umask=st.integers(0, 0o777),
)
def test_a_run_request_reads_back_as_it_was_sent(
    argv: list[str], env: dict[str, str], umask: int
) -> None:
    """Arguments and variables are any text but NUL, which neither can hold; a list keeps
    its order, the empty string included."""
    message = warm.decode(warm.encode({"op": "run", "argv": argv, "env": env, "umask": umask}))
    assert warm.one(message, "op") == "run"
    assert message.get("argv", []) == argv
    assert dict(v.partition("=")[::2] for v in message.get("env", [])) == env
    assert warm.number(warm.one(message, "umask")) == umask


def test_bytes_that_are_not_text_read_back_as_sent() -> None:
    """An argument that is not UTF-8 (a file name) is passed on as the same bytes."""
    arg = os.fsdecode(b"caf\xe9")
    assert warm.decode(warm.encode({"argv": [arg]}))["argv"] == [arg]


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ({"argv": ["a\0b"]}, "NUL"),
        ({"env": {"A=B": "c"}}, "'='"),
        ({"a=b": "c"}, "'='"),
    ],
)
def test_what_would_not_read_back_the_same_is_not_sent(
    message: dict[str, object], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        warm.encode(message)


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12), ("-15", -15), ("0", 0), ("", None), ("-", None), ("1.5", None), (" 1", None),
     ("١", None), (None, None)],
)  # fmt: skip
def test_a_number_is_ascii_digits(text: str | None, value: int | None) -> None:
    assert warm.number(text) == value


def test_a_key_sent_twice_is_not_one_value() -> None:
    message = warm.decode(b"pid=1\0pid=2")
    assert message["pid"] == ["1", "2"] and warm.one(message, "pid") is None


def test_a_helper_of_other_messages_is_at_another_default_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A helper left running by an ashat whose messages differ (version 1 spoke JSON) is
    never met at the default socket: its name follows the messages too."""
    monkeypatch.delenv(warm.ENV_SOCKET, raising=False)
    path = warm.socket_path()
    monkeypatch.setattr(warm, "PROTOCOL", warm.PROTOCOL - 1)
    assert warm.socket_path() != path


def test_a_helper_that_closes_without_a_word_is_named_and_the_command_runs_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One at ASHAT_HELPER_SOCKET that cannot read the request (another ashat's) drops it:
    the command runs here, and deploy says how to stop that helper."""
    import threading

    base = tmp_path / "h"
    base.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(base / "deploy.sock"))
    listener.listen(1)

    def drop() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1 << 20)  # and no answer

    t = threading.Thread(target=drop)
    t.start()
    monkeypatch.setenv(warm.ENV_SOCKET, str(base / "deploy.sock"))
    try:
        assert warm.run_through_helper(["status"]) is None
    finally:
        t.join(10)
        listener.close()
    err = capsys.readouterr().err
    assert "warm helper not used: it closed the connection without an answer" in err
    assert f"'kill {os.getpid()}' stops it now" in err


def test_a_number_too_long_for_any_pid_or_status_is_none() -> None:
    """A review: ``int()`` of 5,000 digits raises ValueError (Python's limit), which ended
    the helper's loop and every command it ran."""
    assert warm.number("1" * 5000) is None and warm.number("9" * 18) == 10**18 - 1
