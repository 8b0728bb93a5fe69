"""Where the deployed app runs: its own user, a bubblewrap sandbox, a minimal environment.

The app is code nobody has reviewed when PUBLIC first runs it (DESIGN §11), so it must not
reach what the agent holds: its token, keys, license, ``--app-env`` file, data directory
and other releases. A :class:`Jail` says how every process the agent starts for the app
(``prepare``, ``run``, and the Module Load check's imports) is confined, strongest first:

``bwrap``
    bubblewrap gives the process a view of the machine made of read-only system
    directories (``/usr``, ``/etc``, the Python the agent runs on, ``--sandbox-bind``), its
    own release read-only, ``$ASHAT_SHARED_DIR`` writable, a private ``/tmp``, its own
    ``/proc`` and PID namespace; nothing of the agent's data directory, and each secret
    file the agent was started with is covered by an empty one. An agent that runs as root
    starts bwrap as root (to build that view) and the app drops to ``--app-user`` inside
    it with ``setpriv`` (no capabilities, ``no_new_privs``); an unprivileged agent uses an
    unprivileged user namespace.
``user``
    no bwrap, but the agent is root: the app runs as ``--app-user``. The data directory's
    private parts are mode 0700/0600 and release files belong to the agent, so the app can
    read its release and write ``$ASHAT_SHARED_DIR`` only.
``none``
    an unprivileged agent without bwrap: the app runs as the agent's user, as before this
    module existed. The agent says so loudly (its log, ``/v1/health``, ``deploy servers``,
    the dashboard): the app could read the agent's files.

In both modes without bwrap, the app's processes start under :mod:`.reaper` (root's in the
``user`` mode, with an environment of its own; the app's reaches the app through a file
descriptor): with no PID namespace to take them along, a process that leaves the app's
process group still ends with the app. The agent ends such a group with
:func:`~.processes.kill_group`, never a SIGKILL to the reaper while it runs.

Whatever the mode, the environment is minimal (:func:`app_environment`): ``PATH`` and the
locale from the agent, then ``--app-env``, then ``PORT``/``ASHAT_*``; nothing else of the
agent's (``CREDENTIALS_DIRECTORY``, ``PGPASSWORD``, tokens in variables).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashat.agent.processes import REAPER
from ashat.errors import InvalidInput

REAPER_PATH = "/usr/local/bin:/usr/bin:/bin"  # the reaper's own PATH (it finds nothing by it)
PR_GET_CHILD_SUBREAPER = 37

SANDBOXES = ("auto", "bwrap", "none")
PASSED_ON = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")
SYSTEM_DIRS = ("/usr", "/etc", "/opt")  # read-only in the sandbox, where present
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # merged /usr
PROBE_TIMEOUT_S = 10.0
UNCONFINED_WARNING = (
    "the app runs as the agent's own user with no sandbox: it can read the agent's token, "
    "keys and data directory. Install bubblewrap (bwrap), or run the agent as root with "
    "--app-user NAME"
)


@dataclass(frozen=True)
class AppUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> AppUser:
        """The system user ``name``; raises :class:`InvalidInput` if there is none or it is
        root."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise InvalidInput(f"--app-user {name!r}: no such user on this machine") from None
        if entry.pw_uid == 0:
            raise InvalidInput(f"--app-user {name!r} is root: name an unprivileged user")
        return cls(name, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class Jail:
    """How the app's processes are confined; :meth:`launch` turns an app command into the
    one to start."""

    mode: str  # "bwrap", "user" or "none"
    user: AppUser | None = None
    bwrap: str | None = None
    setpriv: str | None = None  # root + bwrap: drops to ``user`` inside the sandbox
    hidden: tuple[Path, ...] = field(default=(), repr=False)  # never visible to the app
    data: Path | None = None  # the agent's data directory (never visible but the app's parts)
    binds: tuple[Path, ...] = ()  # more read-only directories (--sandbox-bind)

    @property
    def isolated(self) -> bool:
        """Whether the app cannot write the agent's files (release trees, blobs)."""
        return self.mode != "none"

    @property
    def reaps(self) -> bool:
        """Whether the app's processes run under a :mod:`.reaper` (where the kernel has no
        subreaper, it runs the app in its place, and the app leads its group as before)."""
        return self.mode != "bwrap" and subreapers()

    @property
    def warning(self) -> str | None:
        return UNCONFINED_WARNING if self.mode == "none" else None

    def describe(self) -> dict[str, Any]:
        """For ``/v1/health``: how the app is confined, and the warning if it is not."""
        out: dict[str, Any] = {"mode": self.mode, "user": self.user.name if self.user else None}
        if self.warning:
            out["warning"] = self.warning
        return out

    def launch(
        self,
        argv: list[str],
        cwd: Path,
        writable: Path,
        env: Mapping[str, str],
        readable: Sequence[Path] = (),
    ) -> Launch:
        """How to start ``argv`` with the environment ``env`` in this jail (see
        :meth:`command`): under :mod:`.reaper` without bwrap, which drops to the app's user
        itself and gets ``env`` through a file descriptor, its own environment holding only
        ``PATH`` and the ``ASHAT_SHARED_DIR`` strays are found by. Start it in a session of
        its own, then :meth:`Launch.close`."""
        argv = self.command(argv, cwd, writable, readable)
        if self.mode == "bwrap":
            return Launch(argv, dict(env))
        fd = _memory_file(b"".join(os.fsencode(f"{k}={v}") + b"\0" for k, v in env.items()))
        ids = []
        if self.mode == "user" and self.user is not None:
            ids = ["--uid", str(self.user.uid), "--gid", str(self.user.gid)]
        own = {"PATH": REAPER_PATH}
        if "ASHAT_SHARED_DIR" in env:
            own["ASHAT_SHARED_DIR"] = env["ASHAT_SHARED_DIR"]
        reaped = [sys.executable, "-I", "-S", str(REAPER), "--env-fd", str(fd), *ids, "--"]
        return Launch([*reaped, *argv], own, (fd,))

    def popen(
        self,
        argv: list[str],
        cwd: Path,
        writable: Path,
        env: Mapping[str, str],
        readable: Sequence[Path] = (),
        **options: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in this jail (:meth:`launch`), in ``cwd``, in a session of its own
        (its process group is what is stopped); ``options`` go to :class:`subprocess.Popen`
        (stdin, stdout, stderr)."""
        launch = self.launch(argv, cwd, writable, env, readable)
        try:
            return subprocess.Popen(
                launch.argv, cwd=cwd, env=launch.env, start_new_session=True,
                pass_fds=launch.pass_fds, **options,
            )  # fmt: skip
        finally:
            launch.close()

    def command(
        self, argv: list[str], cwd: Path, writable: Path, readable: Sequence[Path] = ()
    ) -> list[str]:
        """``argv`` as run inside this jail, in ``cwd`` (read-only) with ``writable``, and
        the directories ``readable`` (its Python environment) read-only; without bwrap,
        ``argv`` itself (:meth:`launch` adds the reaper and the user)."""
        if self.mode != "bwrap":
            return argv
        assert self.bwrap is not None
        out = [self.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-uts"]
        out += ["--unshare-cgroup-try"]
        privileged = os.geteuid() == 0
        if not privileged:
            out += ["--unshare-user"]
        bound: list[Path] = []
        for name in SYSTEM_DIRS:
            if os.path.isdir(name):
                out += ["--ro-bind", name, name]
                bound.append(Path(name))
        for name in SYSTEM_LINKS:
            if os.path.islink(name):
                out += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                out += ["--ro-bind", name, name]
                bound.append(Path(name))
        out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        made: set[Path] = {Path("/"), Path("/tmp")}
        for d in _prefixes([Path(sys.prefix), Path(sys.base_prefix), *self.binds], bound):
            out += [*_parents(d, made, bound), "--ro-bind", str(d), str(d)]
            bound.append(d)
        if self.data is not None and _under(self.data, bound):
            out += ["--tmpfs", str(self.data)]  # bound above: covered, then its parts below
        out += [*_parents(cwd, made, bound), "--ro-bind", str(cwd), str(cwd)]
        for r in readable:
            out += [*_parents(r, made, bound), "--ro-bind", str(r), str(r)]
        out += [*_parents(writable, made, bound), "--bind", str(writable), str(writable)]
        for h in self.hidden:
            if _under(h, bound) and h.exists():
                out += ["--tmpfs", str(h)] if h.is_dir() else ["--ro-bind", "/dev/null", str(h)]
        out += ["--chdir", str(cwd)]
        if privileged and self.user is not None:
            assert self.setpriv is not None
            out += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--", self.setpriv]
            out += [f"--reuid={self.user.uid}", f"--regid={self.user.gid}", "--clear-groups"]
            out += ["--inh-caps=-all", "--bounding-set=-all"]
        return [*out, "--", *argv]


@dataclass(frozen=True)
class Launch:
    """What :class:`subprocess.Popen` starts for an app command: ``argv``, ``env``, and the
    file descriptors it must pass on (``pass_fds``), closed by :meth:`close` once started."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()

    def close(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)


PIPE_BYTES = 64 * 1024  # what a pipe holds unread, where there is no memfd (Linux < 3.17)


def _memory_file(data: bytes) -> int:
    """A file descriptor to read ``data`` from (the app's environment: its secrets never
    reach a disk): a file in memory, or a pipe holding it where there is none. Raises
    ``OSError`` where neither can."""
    try:
        fd = os.memfd_create("ashat-app-environment", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        if len(data) > PIPE_BYTES:
            raise OSError(
                errno.E2BIG, f"the app's environment is over {PIPE_BYTES} bytes, and this "
                "kernel has no memfd to hand it over in",
            ) from None  # fmt: skip
        fd, w = os.pipe()
        try:
            os.write(w, data)
        finally:
            os.close(w)
        return fd
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


@functools.lru_cache(maxsize=1)
def subreapers() -> bool:
    """Whether a process here can be a child subreaper, as :mod:`.reaper` asks to be (the
    same kernel, and a Python with ``ctypes``)."""
    try:
        import ctypes

        value = ctypes.c_int()
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return bool(prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
        return False


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _prefixes(paths: Iterable[Path], bound: list[Path]) -> list[Path]:
    """The directories to bind besides the system ones: each once, none inside another."""
    out: list[Path] = []
    for p in sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts)):
        if p.is_dir() and not _under(p, [*bound, *out]):
            out.append(p)
    return out


def _parents(path: Path, made: set[Path], bound: list[Path]) -> list[str]:
    """``--dir`` for each missing parent of a mount point, traversable by anyone (bwrap
    would copy the host's modes, and ``/root`` or a pytest directory is 0700)."""
    out: list[str] = []
    for parent in reversed(path.parents):
        if parent in made or _under(parent, bound):
            continue
        made.add(parent)
        out += ["--perms", "0755", "--dir", str(parent)]
    return out


def app_environment(
    app_env: Mapping[str, str], extra: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The app's whole environment: ``PATH`` and the locale of ``base`` (the agent's), then
    ``app_env`` (``--app-env``), then ``extra`` (``PORT``, ``ASHAT_*``)."""
    base = os.environ if base is None else base
    env = {k: base[k] for k in PASSED_ON if k in base}
    env.setdefault("PATH", os.defpath)
    env.update(app_env)
    env.update(extra)
    return env


@functools.cache
def _bwrap_works(bwrap: str) -> str | None:
    """None if bwrap can build a sandbox here, else why not (its own words)."""
    argv = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--proc", "/proc", "--dev", "/dev"]
    if os.geteuid() != 0:
        argv.insert(1, "--unshare-user")
    try:
        done = subprocess.run(
            [*argv, "--", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode != 0:
        return done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
    return None


def choose_jail(
    sandbox: str,
    app_user: str | None,
    *,
    data: Path,
    hidden: Iterable[Path] = (),
    binds: Iterable[Path] = (),
) -> Jail:
    """The strongest confinement this machine allows, within what the options ask.

    Raises :class:`InvalidInput` when the agent runs as root without ``--app-user``, when
    ``--app-user`` is given to an agent that cannot switch users, and when ``--sandbox
    bwrap`` is asked for where bwrap cannot run.
    """
    if sandbox not in SANDBOXES:
        raise InvalidInput(f"--sandbox {sandbox!r}: expected one of {', '.join(SANDBOXES)}")
    root = os.geteuid() == 0
    user = AppUser.named(app_user) if app_user is not None else None
    if root and user is None:
        raise InvalidInput(
            "the agent runs as root, so its app would too: give --app-user NAME, an "
            "unprivileged user the app runs as (e.g. --app-user nobody)"
        )
    if user is not None and not root and user.uid != os.geteuid():
        raise InvalidInput(
            f"--app-user {user.name}: only an agent running as root can start its app as "
            "another user"
        )
    if user is not None and user.uid == os.geteuid():
        user = None  # the agent's own user: nothing to switch
    extra = tuple(binds)
    for b in extra:
        if not b.is_absolute() or not b.is_dir():
            raise InvalidInput(f"--sandbox-bind {b}: expected an existing absolute directory")
    common: dict[str, Any] = {"hidden": tuple(Path(p) for p in hidden), "data": data}
    common["binds"] = extra
    if sandbox != "none":
        bwrap = shutil.which("bwrap")
        setpriv = shutil.which("setpriv")
        why = "it is not installed (Debian: apt-get install bubblewrap)"
        if bwrap is not None:
            why = _bwrap_works(bwrap) or ""
        if bwrap is not None and not why and root and setpriv is None:
            why = "setpriv (util-linux) is missing, so the app could not leave root inside it"
        if not why:
            return Jail("bwrap", user, bwrap, setpriv, **common)
        if sandbox == "bwrap":
            raise InvalidInput(f"--sandbox bwrap: bwrap cannot run here: {why}")
    if user is not None:
        return Jail("user", user, **common)
    return Jail("none", **common)
