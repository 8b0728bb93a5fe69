"""The warm helper (issue 20): ``deploy helper start`` keeps a process with everything a push
imports, and the ``deploy`` script hands it ``push``, ``status``, ``history`` and ``log``.

Everything here is real: the ``deploy`` entry point (``python -m ashat.cli.warm``, what the
console script runs) in its own process, the helper it starts, a real agent as PUBLIC.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ashat
from ashat.cli import warm
from support import wait_for

DEPLOY = [sys.executable, "-m", "ashat.cli.warm"]


class Helper:
    """Runs ``deploy`` commands in their own processes, against a helper at ``socket``."""

    def __init__(self, base: Path, env: dict[str, str] | None = None) -> None:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket = base / "deploy.sock"
        self.extra = dict(env or {})

    def env(self, **more: str) -> dict[str, str]:
        return {**os.environ, warm.ENV_SOCKET: str(self.socket), **self.extra, **more}

    def run(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*DEPLOY, *args], cwd=cwd, env=self.env(**env), capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    def popen(
        self, *args: str, cwd: Path | None = None, nohup: bool = False
    ) -> subprocess.Popen[str]:
        def as_from_a_terminal() -> None:
            """Signals as a shell gives them, whatever this test process inherited or
            changed (nohup: hang-ups ignored)."""
            for signum in (*warm.FORWARDED, signal.SIGTSTP, signal.SIGCONT):
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            if nohup:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)

        # A job of its own, as a shell starts one: in the test runner's group, orphaned
        # when the runner was started in the background, a stop (Ctrl-Z) is discarded.
        return subprocess.Popen(
            [*DEPLOY, *args], cwd=cwd, env=self.env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal, process_group=0,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        out = self.run("helper", "status", "--json")
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def start(self) -> dict[str, Any]:
        out = self.run("helper", "start", "--json")
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def log(self) -> str:
        path = self.socket.with_suffix(".log")
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        """Stop the helper, and whatever a failed test left running in it."""
        answer = warm.ask("stop", str(self.socket)) if self.socket.exists() else None
        if answer is None:
            return
        for command in answer["command_pids"]:  # a test's commands; one may be stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(command, signal.SIGKILL)
        pid = int(answer["pid"])
        try:
            wait_for(lambda: not _alive(pid), 30, "the helper to stop")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie"


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[Helper]:
    h = Helper(tmp_path / "helper")
    yield h
    h.stop()


@pytest.fixture
def pushed_project(agent_factory: Any, hello_project: Callable[..., Path]) -> tuple[Any, Path]:
    agent = agent_factory()
    return agent, hello_project(agent)


def test_push_and_status_go_through_the_helper(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    agent, root = pushed_project
    started = helper.start()
    assert started["already"] is False and started["served"] == 0
    # what it loaded is out of the collector's sight: a child's full collection does not
    # copy every page it shares with the helper (issue 20)
    assert started["objects_kept"] > 10_000
    assert helper.start()["already"] is True  # a second start finds it

    out = helper.run("push", "v1", "first release", cwd=root, ASHAT_USER="carol")
    assert out.returncode == 0, out.stderr
    assert "Pushed v1 to Staging" in out.stdout, out.stdout
    assert "warm helper" not in out.stderr  # it was used, and said nothing
    with agent.client() as client:
        assert client.health()["current"] == "v1"
    status = helper.run("status", "v1", "--json", cwd=root)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["deployment"]["state"] == "pushed"
    # the client's environment reached the command: the push was carol's
    log = helper.run("log", "v1", "--json", cwd=root)
    assert {e["actor"] for e in json.loads(log.stdout)["events"]} == {"carol"}
    assert helper.status()["served"] == 3  # push, status, log (not the helper's own verbs)

    # the same command without the helper prints the same
    here = helper.run("history", "--json", cwd=root, ASHAT_HELPER="off")
    there = helper.run("history", "--json", cwd=root)
    assert here.returncode == there.returncode == 0
    assert json.loads(here.stdout) == json.loads(there.stdout)
    assert helper.status()["served"] == 4


def test_after_a_push_the_helper_reads_ahead_for_the_next_one(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    """Once a push through it succeeded, the helper reads what the next push reads first
    (the project's hash cache, the manifest pushed last) and keeps it as it keeps what it
    preloaded, for each child to start with (~30 ms of a 1 % re-push, issue 20). What it
    cannot read is said in its log, and costs the next push nothing but the reading."""
    _, root = pushed_project
    helper.start()
    before = helper.status()["objects_kept"]
    out = helper.run("push", "v1", "first release", cwd=root)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: helper.status()["objects_kept"] > before, 10, "the helper to read ahead")
    unreadable = root / ".ashat" / "manifests" / "zz.json"
    unreadable.write_text("{not a manifest")
    os.utime(unreadable, (2e9, 2e9))  # the newest
    out = helper.run("push", "v2", "second release", cwd=root)
    assert out.returncode == 0, out.stderr
    # (read once the client had its answer: the line may follow the push's end)
    said = f"did not read ahead for the next push from {root}"
    wait_for(lambda: said in helper.log(), 10, "the helper to say it could not read ahead")
    assert helper.run("push", "v3", "third release", cwd=root).returncode == 0
    # A review: a FIFO there (a project unpacked from elsewhere) kept the helper waiting on
    # it for good, and every command after failed. It is not opened, nor a cache that is one.
    unreadable.unlink()
    os.mkfifo(unreadable)
    os.utime(unreadable, (2e9, 2e9))
    cache = root / ".ashat" / "hashcache.json"
    cache.unlink()
    os.mkfifo(cache)
    for n in (4, 5):
        out = helper.run("push", f"v{n}", "a release", cwd=root)
        assert out.returncode == 0, out.stderr
    assert helper.status()["commands_running"] == 0


def test_exit_codes_and_errors_are_the_commands(helper: Helper, project: Path) -> None:
    helper.start()
    bad = helper.run("history", "--limit", "x", cwd=project)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "Invalid value for '--limit'" in bad.stderr
    missing = helper.run("status", "nope", cwd=project)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "no deployment 'nope'" in missing.stderr
    not_routed = helper.run("cancel", "nope", cwd=project)  # runs here, the same way
    assert not_routed.returncode == 2 and "no deployment 'nope'" in not_routed.stderr
    assert helper.status()["served"] == 2


@contextlib.contextmanager
def push_waiting_for_public(
    helper: Helper, project: tuple[Any, Path], nohup: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """The helper started, and a ``deploy push`` in it of ``project``, waiting for a PUBLIC
    that takes connections and never answers (``nohup``: its client ignores SIGHUP)."""
    _, root = project
    helper.start()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        token = root.parent / "hang.token"  # outside the tree: a push refuses to ship it
        token.write_text("x" * 32)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        out = helper.run("configure", "public", url, "Hang", "--token-file", str(token), cwd=root)
        assert out.returncode == 0, out.stderr
        proc = helper.popen("push", "v1", "waits for PUBLIC", cwd=root, nohup=nohup)
        try:
            wait_for(lambda: helper.status()["commands_running"] == 1, 30, "the push to start")
            wait_for(lambda: _state_of(helper, root, "v1") == "pushing", 30, "it to wait")
            yield proc
        finally:
            proc.kill()
            proc.communicate(timeout=30)


def _state_of(helper: Helper, root: Path, update_id: str) -> str | None:
    out = helper.run("status", update_id, "--json", cwd=root, ASHAT_HELPER="off")
    return json.loads(out.stdout)["deployment"]["state"] if out.returncode == 0 else None


def interrupt(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C to a waiting ``deploy``: it ends as deploy does on Ctrl-C (130); its stderr."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    return err


def test_ctrl_c_reaches_the_command(helper: Helper, pushed_project: tuple[Any, Path]) -> None:
    with push_waiting_for_public(helper, pushed_project) as proc:
        err = interrupt(proc)
    assert err.strip() == "interrupted"  # what deploy says on Ctrl-C, from the command itself
    wait_for(lambda: helper.status()["commands_running"] == 0, 10, "the child to be reaped")
    # it was interrupted, not lost: the deployment waits to be resumed
    assert _state_of(helper, pushed_project[1], "v1") == "pushing"


def test_a_killed_client_takes_its_command_with_it(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    with push_waiting_for_public(helper, pushed_project) as proc:
        proc.kill()
        proc.communicate(timeout=30)
        wait_for(lambda: helper.status()["commands_running"] == 0, 10, "the command to end")
    # said once: the helper stops watching a connection that ended
    assert helper.log().count("went away; command stopped") == 1


def test_stop_lets_running_commands_finish(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    with push_waiting_for_public(helper, pushed_project) as proc:
        pid = helper.status()["pid"]
        stopped = helper.run("helper", "stop", "--json")
        assert json.loads(stopped.stdout)["running"] is True
        assert json.loads(stopped.stdout)["stopping"] is True
        wait_for(lambda: not helper.socket.exists(), 10, "the socket to go")
        assert _alive(pid)  # it waits for the push it runs
        # a new command runs here meanwhile (no helper listens)
        here = helper.run("history", cwd=pushed_project[1])
        assert here.returncode == 0 and "warm helper" not in here.stderr
        interrupt(proc)
    wait_for(lambda: not _alive(pid), 10, "the helper to end")
    assert "no warm helper runs" in helper.run("helper", "status").stdout


def test_a_crash_point_in_the_clients_environment_kills_the_command(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    """The fault suite's ``ASHAT_CRASH_AT`` is read when a process starts; a child takes it
    from its client. The command dies as a process would, and the client the same way."""
    agent, root = pushed_project
    helper.start()
    out = helper.run("push", "v1", "crashes", cwd=root, ASHAT_CRASH_AT="push.uploaded:1")
    assert out.returncode == -signal.SIGKILL, (out.returncode, out.stderr)
    status = helper.run("status", "v1", "--json", cwd=root)
    assert json.loads(status.stdout)["deployment"]["state"] == "pushing"
    again = helper.run("push", "v1", "crashes", cwd=root)
    assert again.returncode == 0, again.stderr
    with agent.client() as client:
        assert client.health()["current"] == "v1"


def test_a_helper_whose_code_changed_stops_and_the_command_runs_here(
    tmp_path: Path, project: Path
) -> None:
    src = tmp_path / "src"
    import h11

    for package in (ashat, h11):
        here = Path(package.__file__).parent
        shutil.copytree(here, src / here.name, ignore=shutil.ignore_patterns("__pycache__"))
    copy = Helper(tmp_path / "copy-helper", env={"PYTHONPATH": str(src)})
    try:
        started = copy.start()
        assert started["fingerprint"].endswith(str(src / "ashat"))
        assert copy.run("history", cwd=project).returncode == 0
        assert copy.status()["served"] == 1

        # another ashat (this checkout's) with the same socket: refused, helper kept
        other = Helper(tmp_path / "copy-helper")
        out = other.run("history", cwd=project)
        assert out.returncode == 0 and "(none)" in out.stdout
        assert "not used: the helper runs other code than this deploy" in out.stderr
        assert copy.status()["served"] == 1

        # an upgrade (a module it loaded changes, here httpx's h11): refused, and it stops
        module = src / "h11" / "_connection.py"
        module.write_text(module.read_text() + "\n# upgraded\n")
        out = copy.run("history", cwd=project)
        assert out.returncode == 0 and "(none)" in out.stdout
        assert "its code changed on disk since it started (_connection.py)" in out.stderr
        wait_for(lambda: not _alive(started["pid"]), 10, "the stale helper to stop")
        assert not copy.socket.exists()
    finally:
        copy.stop()


def test_an_idle_helper_stops(tmp_path: Path) -> None:
    h = Helper(tmp_path / "idle")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ashat.cli.helper", "--socket", str(h.socket), "--idle", "1"],
        env=h.env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped (idle for 1 s) after 0 commands" in err
    assert not h.socket.exists()


def test_a_socket_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    h = Helper(tmp_path / "shared")
    (tmp_path / "shared").chmod(0o777)
    out = h.run("helper", "start")
    assert out.returncode == 2
    assert "can be written by others (mode 777)" in out.stderr
    assert not h.socket.exists()


def test_start_refuses_a_second_helper_on_a_live_socket(helper: Helper) -> None:
    helper.start()
    proc = subprocess.run(
        [sys.executable, "-m", "ashat.cli.helper", "--socket", str(helper.socket)],
        env=helper.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "a helper already listens on" in proc.stderr
    assert helper.status()["served"] == 0


def test_the_helper_keeps_no_secret_of_the_starting_shell(helper: Helper) -> None:
    # A push starts one now, and it lives for hours: a token of another tool in the shell
    # that pushed (review, seventh session) is not kept either, only what Python reads.
    pid = helper.run("helper", "start", "--json", ASHAT_TOKEN="s3cret-token-value",
                     GITHUB_TOKEN="ghp-other-tool-secret", LC_ALL="C.UTF-8")  # fmt: skip
    environ = Path(f"/proc/{json.loads(pid.stdout)['pid']}/environ").read_bytes()
    assert b"s3cret-token-value" not in environ
    assert b"ghp-other-tool-secret" not in environ
    assert b"ASHAT_HELPER_SOCKET=" in environ
    assert b"LC_ALL=C.UTF-8" in environ and b"PATH=" in environ


# -- another user -----------------------------------------------------------------------------

NOBODY = 65534
as_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user",
)


def _as_nobody(*argv: str, **kw: Any) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="ashat-helper-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


LISTENER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(1)
print("listening", flush=True)
s.settimeout(3)
try:
    conn, _ = s.accept()
    conn.settimeout(5)
    got = conn.recv(65536)
except OSError:
    got = b""
print("got", len(got), flush=True)
"""


@as_root
def test_a_socket_held_by_another_user_gets_nothing(shared_dir: Path, project: Path) -> None:
    """Whoever else listens where the helper would (another user who made the directory
    first) learns nothing: the client checks who holds the socket before sending the
    command and its environment (which may carry ASHAT_TOKEN)."""
    base = shared_dir / "theirs"
    base.mkdir(mode=0o755)
    os.chown(base, NOBODY, NOBODY)
    sock = base / "deploy.sock"
    theirs = subprocess.Popen(
        _as_nobody(sys.executable, "-c", LISTENER, str(sock)), stdout=subprocess.PIPE, text=True
    )
    try:
        assert theirs.stdout is not None and theirs.stdout.readline() == "listening\n"
        out = subprocess.run(
            [*DEPLOY, "history"], cwd=project,
            env={**os.environ, warm.ENV_SOCKET: str(sock), "ASHAT_TOKEN": "s3cret"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0 and "(none)" in out.stdout
        assert f"{sock} is not a socket of this user; not using it" in out.stderr
        told, _ = theirs.communicate(timeout=30)
    finally:
        theirs.kill()
    assert told == "got 0\n"


@as_root
def test_the_helper_refuses_a_connection_from_another_user(shared_dir: Path) -> None:
    helper = Helper(shared_dir / "ours")
    try:
        helper.start()
        helper.socket.parent.chmod(0o755)  # let them reach it at all (none may write there)
        helper.socket.chmod(0o666)
        probe = (  # closed on it before or after it asks: either way, no answer
            "import socket\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"s.connect({str(helper.socket)!r})\n"
            "try:\n"
            '    s.sendall(b\'\\x00\\x00\\x00\\x10{"op": "status"}\')\n'
            "    print(repr(s.recv(100)))\n"
            "except (BrokenPipeError, ConnectionResetError):\n"
            "    print(repr(b''))\n"
        )
        out = subprocess.run(
            _as_nobody(sys.executable, "-c", probe), capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "b''"  # closed, nothing answered
        assert "refused a connection from another user" in helper.log()
        assert helper.status()["served"] == 0
    finally:
        helper.stop()


# -- what the review of the helper found (each failed before its fix) -------------------------


def _child_pid(helper: Helper) -> int:
    return int(wait_for(lambda: helper.status()["command_pids"], 30, "a command")[0])


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_helper_imports_nothing_from_where_it_was_started(
    helper: Helper, project: Path, tmp_path: Path
) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "ran"
    for name in ("tomllib", "click", "httpx", "ashat"):
        (planted / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    out = subprocess.run(  # -P: as the deploy script, which never imports from its cwd
        [sys.executable, "-P", "-m", "ashat.cli.warm", "helper", "start"], cwd=planted,
        env=helper.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert helper.run("history", cwd=project).returncode == 0
    assert helper.status()["served"] == 1
    assert not marker.exists()


def test_a_warm_command_imports_nothing_heavy_before_the_helper_has_it(
    helper: Helper, project: Path
) -> None:
    """Before the helper has a command, its client pays its interpreter's start and the
    imports of :mod:`ashat.cli.warm`: those once held json, socket, signal, typing and
    contextlib (with re and enum under them), ~30 ms of each warm command on the 2-core
    machine, as much as the command's own work in the helper (issue 20). ``-S`` and a path
    holding only ashat: what site-packages' ``.pth`` files import is not the client's."""
    import ashat

    helper.start()
    served = helper.status()["served"]
    client = "import sys; from ashat.cli.warm import main; sys.exit(main())"  # as the script
    out = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", client, "history"], cwd=project,
        env=helper.env(PYTHONPATH=str(Path(ashat.__file__).parents[1])),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert helper.status()["served"] == served + 1  # the helper ran it
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "ashat.cli.warm" in imported
    heavy = {"json", "re", "enum", "typing", "contextlib", "socket", "signal", "array"}
    assert imported.isdisjoint(heavy), sorted(imported & heavy)


def test_a_client_that_leaves_at_once_does_not_stop_the_helper(
    helper: Helper, project: Path
) -> None:
    helper.start()
    before = len(os.listdir(f"/proc/{helper.status()['pid']}/fd"))
    for _ in range(5):
        sock = warm.connect(str(helper.socket))
        assert sock is not None
        cwd = os.open(project, os.O_RDONLY)
        request = {"op": "run", "argv": ["history"], "env": dict(os.environ), "umask": 0o22,
                   "fingerprint": warm.fingerprint()}  # fmt: skip
        warm.send(sock, request, [0, 1, 2, cwd])
        os.close(cwd)
        sock.close()  # before the helper answers with the pid
    wait_for(lambda: helper.status()["commands_running"] == 0, 30, "the commands to end")
    after = len(os.listdir(f"/proc/{helper.status()['pid']}/fd"))
    assert after <= before  # every descriptor passed to it was closed
    assert helper.run("history", cwd=project).returncode == 0


def test_a_hang_up_the_client_ignores_is_ignored_by_its_command(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    with push_waiting_for_public(helper, pushed_project, nohup=True) as proc:
        proc.send_signal(signal.SIGHUP)  # nohup deploy push …: the terminal went away
        time.sleep(1.0)
        assert helper.status()["commands_running"] == 1 and proc.poll() is None
        interrupt(proc)


def test_ctrl_z_stops_the_command_and_fg_continues_it(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    with push_waiting_for_public(helper, pushed_project) as proc:
        child = _child_pid(helper)
        assert os.getpgid(child) == child  # a group of its own: git, pip go with it
        held = [os.readlink(f"/proc/{child}/fd/{n}") for n in os.listdir(f"/proc/{child}/fd")]
        assert not [f for f in held if f.endswith(".lock")]  # nor the helper's lock
        proc.send_signal(signal.SIGTSTP)
        wait_for(lambda: _proc_state(proc.pid) == "T", 10, "the client to stop")
        wait_for(lambda: _proc_state(child) == "T", 10, "the command to stop")
        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: _proc_state(child) != "T", 10, "the command to go on")
        interrupt(proc)


def test_a_helper_that_dies_takes_its_commands_with_it(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    with push_waiting_for_public(helper, pushed_project) as proc:
        pid = helper.status()["pid"]
        child = _child_pid(helper)
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "the warm helper stopped while running this command" in err
        assert not _alive(child)  # gone before the client said so: no push goes on unseen


def test_two_starts_at_once_leave_one_helper(helper: Helper) -> None:
    starts = [
        subprocess.Popen([*DEPLOY, "helper", "start", "--json"], env=helper.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    answers = [s.communicate(timeout=60) for s in starts]
    assert [s.returncode for s in starts] == [0, 0, 0], answers
    pids = {json.loads(out)["pid"] for out, _ in answers}
    assert len(pids) == 1
    assert helper.status()["pid"] in pids


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare to make a client in another namespace",
)
def test_a_client_in_another_namespace_is_refused(helper: Helper, project: Path) -> None:
    """A sandbox or container of the same user may see less than the helper (no key file,
    another /proc): it must not get pushes run outside it."""
    helper.start()
    out = subprocess.run(
        ["unshare", "--mount", *DEPLOY, "history"], cwd=project, env=helper.env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and "(none)" in out.stdout  # it ran, in the sandbox
    assert "the helper serves no client in another mount, PID or user namespace" in out.stderr
    assert helper.status()["served"] == 0


def start_from(helper: Helper, setup: Callable[[], None]) -> None:
    """``deploy helper start`` from a process that ran ``setup`` first (its signals)."""
    out = subprocess.run(
        [*DEPLOY, "helper", "start"], env=helper.env(), preexec_fn=setup,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_a_helper_started_with_signals_held_back_still_passes_them_on(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    """Started from a process that blocks signals (a test runner, a service manager), the
    helper once passed the mask to every command: Ctrl-C never reached a push. The full
    suite caught it; each command now takes its own client's mask."""

    def held_back() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD})

    start_from(helper, held_back)
    with push_waiting_for_public(helper, pushed_project) as proc:
        assert interrupt(proc).strip() == "interrupted"
    wait_for(lambda: helper.status()["commands_running"] == 0, 10, "the command to be reaped")


def test_a_hang_up_reaches_the_command_when_the_helper_was_started_under_nohup(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    """``nohup deploy helper start``: the helper ignores SIGHUP. A command once kept the
    helper's disposition where its client had none: closing the terminal left the push
    running. Each forwarded signal now takes the client's disposition."""

    def nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)  # as a script's & does

    start_from(helper, nohup)
    with push_waiting_for_public(helper, pushed_project) as proc:
        proc.send_signal(signal.SIGHUP)  # the terminal went away; this client does not ignore it
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            interrupt(proc)
        assert proc.returncode == -signal.SIGHUP, "the command ignored the hang-up"


def test_a_ca_bundle_named_by_ssl_cert_file_that_changed_stops_the_helper(
    tmp_path: Path, agent_factory: Any, hello_project: Callable[..., Path]
) -> None:
    """The helper parses the CA bundle ``SSL_CERT_FILE`` names once, and its commands reuse
    it: a CA taken out of that file stayed trusted through the helper."""
    agent = agent_factory(tls=True)
    root = hello_project(agent, configure=False)
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(Path(agent.ca_cert).read_bytes())
    h = Helper(tmp_path / "helper", env={"SSL_CERT_FILE": str(bundle)})
    try:
        out = h.run("configure", "public", agent.url, "Staging", "--token-file",
                    str(agent.token_file), cwd=root)  # fmt: skip  # no --ca-cert: the system's
        assert out.returncode == 0, out.stderr
        started = h.start()
        assert h.run("push", "v1", "first", cwd=root).returncode == 0
        import certifi

        bundle.write_bytes(Path(certifi.where()).read_bytes())  # the agent's CA taken out
        out = h.run("push", "v2", "second", cwd=root)
        assert out.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in out.stderr, out.stderr
        assert "its code changed on disk since it started (ca-bundle.pem)" in out.stderr
        wait_for(lambda: not _alive(started["pid"]), 10, "the stale helper to stop")
        # and a bundle with no certificate is named as the input that is wrong
        bundle.write_bytes(b"")
        out = h.run("push", "v3", "third", cwd=root)
        assert out.returncode == 2, out.stderr
        assert f"cannot load the system's CAs (SSL_CERT_FILE={bundle}" in out.stderr
        assert "internal error" not in out.stderr
    finally:
        h.stop()


def test_an_upgrade_that_changes_the_version_stops_the_helper(
    tmp_path: Path, project: Path
) -> None:
    """An upgrade changes the fingerprint (ashat's version) as well as a file: the helper
    refused each command as another ashat's, and kept running (and its socket) for hours."""
    src = tmp_path / "src"
    here = Path(ashat.__file__).parent
    shutil.copytree(here, src / "ashat", ignore=shutil.ignore_patterns("__pycache__"))
    h = Helper(tmp_path / "h", env={"PYTHONPATH": str(src)})
    try:
        started = h.start()
        init = src / "ashat" / "__init__.py"
        text = init.read_text()
        assert f'__version__ = "{ashat.__version__}"' in text
        init.write_text(text.replace(f'"{ashat.__version__}"', '"99.0.0"'))
        out = h.run("history", cwd=project)
        assert out.returncode == 0
        assert "its code changed on disk since it started (__init__.py)" in out.stderr
        wait_for(lambda: not _alive(started["pid"]), 10, "the stale helper to stop")
    finally:
        h.stop()


def test_a_helper_starts_with_a_bad_ssl_cert_file(
    tmp_path: Path,
) -> None:
    """The system's CAs failing to load became InvalidInput, which the preload did not
    catch: the helper died at its start. It starts (each command names the bad file)."""
    env = {**os.environ, "SSL_CERT_FILE": str(tmp_path / "none.pem")}
    out = subprocess.run(
        [sys.executable, "-c", "from ashat.cli import helper; helper.preload()"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def _auto(helper: Helper, **more: str) -> dict[str, str]:
    """Environment variables of a user's shell: ASHAT_HELPER unset (auto), not in CI."""
    return {**more, "ASHAT_HELPER": more.get("ASHAT_HELPER", "auto"), "CI": more.get("CI", "")}


def test_a_push_run_here_leaves_a_helper_for_the_next_commands(
    helper: Helper, pushed_project: tuple[Any, Path]
) -> None:
    """Issue 20: a user's second push should not pay for Python's start and imports again.
    A push that found no helper starts one as it ends; the next push runs in it."""
    agent, root = pushed_project
    out = helper.run("push", "v1", "first", cwd=root, **_auto(helper))
    assert out.returncode == 0, out.stderr
    assert "starting a warm helper" in out.stderr and str(helper.socket) in out.stderr
    wait_for(lambda: helper.socket.exists() and warm.ask("status", str(helper.socket)),
             60, "the helper the push started")  # fmt: skip
    assert helper.status()["served"] == 0
    again = helper.run("push", "v2", "second", cwd=root, **_auto(helper))
    assert again.returncode == 0, again.stderr
    assert "warm helper" not in again.stderr  # ran in it, and said nothing
    assert helper.status()["served"] == 1
    with agent.client() as client:
        assert client.health()["current"] == "v2"


@pytest.mark.parametrize(
    ("verb", "env"),
    [
        ("push", {"ASHAT_HELPER": "manual"}),  # use one that runs, never start one
        ("push", {"ASHAT_HELPER": "off"}),
        ("push", {"CI": "true"}),  # a CI job's helper would outlive the job
        ("history", {}),  # only a push starts one
        ("push", {"bad": "1"}),  # a push that failed (here: bad input) starts none
    ],
)
def test_no_helper_is_started_where_it_is_not_wanted(
    helper: Helper, pushed_project: tuple[Any, Path], verb: str, env: dict[str, str]
) -> None:
    _, root = pushed_project
    args = ("push", "v1", "first") if verb == "push" else (verb,)
    if env.pop("bad", None):
        args = ("push", "not a valid id", "first")
    out = helper.run(*args, cwd=root, **_auto(helper, **env))
    assert out.returncode == (2 if "not a valid id" in args else 0), out.stderr
    assert "warm helper" not in out.stderr
    time.sleep(1.0)  # a helper started in the background would have bound its socket by now
    assert not helper.socket.exists()
