"""docs/examples.md is run, so the book cannot rot: each scenario is one test.

The markdown is the source of truth; this file only knows how to read it:

- ``<!-- book: scenario=NAME key=value ... -->`` starts a scenario and says what runs before
  its first command: ``tree=hello-service`` (a copy of examples/hello-service, signing with
  ``.ashat/keys/alpha.key`` through ``ASHAT_SIGNING_KEY``), ``tree=bare`` (the same
  without its ashat.toml, for ``deploy init``) or ``tree=NAME`` (examples/NAME);
  ``servers=public,omega``; ``configure=no``
  (else both are configured as PublicStaging and OmegaProduction); ``mainframes=N``
  (mf-1 ... mf-N, licensed for ACME by OMEGA's license key); ``app_env=K=V`` (every
  server's app environment, the book's database name replaced as in commands) with
  ``bare_mainframes=mf-3`` lacking it; ``postgres=yes``
  (skipped without a PostgreSQL server); ``serve=yes`` (``ashat serve`` on the project,
  signing with its key, started when a command first names ``http://ctl.example:8800``);
  ``regions=eu,us`` (an OMEGA per region, ``http://omega-eu.example:8700`` ..., each
  configured with ``--region`` and with its own mainframe ``mf-eu`` ...);
  ``prometheus=yes`` (Debian's Prometheus scraping the servers every second, called
  ``http://prometheus.example:9090``; skipped where it is not installed);
  ``night_window=mf-3`` (mf-3 switches only in a window twelve hours away, closed while
  the scenario runs);
  ``trust=yes`` (a chain of trust: OMEGA's and PUBLIC's verifier keys are made first in
  ``../keys/``, the servers start before the first ``deploy`` command rather than the
  first command, PUBLIC with ``--verifier-key ../keys/verifier.key``, OMEGA and the
  mainframes with ``--root trust/root.json``, which the book's ``ashat trust init`` wrote).
- ```` ```console scenario=NAME ```` blocks: ``$ `` starts a command (``\\`` continues it;
  ``> `` lines continue a here-document); the lines up to the next command are output. Each
  command runs in bash in the project directory, the environment and directory carried to
  the next; it must exit 0, or N when it ends with ``# exit N``. Every output line shown
  must appear, in order, in what it printed (stdout and stderr); a number in the book
  matches any number and ``…`` matches anything.
- ```` ```toml scenario=NAME ```` blocks replace the tables they name in ashat.toml, at that
  point of the scenario (the servers' book URLs replaced by the real ones).
- ``ashat agent --role mainframe ...`` commands start a mainframe through the
  ``mainframe_factory`` fixture (with that command's ``--license`` and keys).

PUBLIC and OMEGA are real agents from ``agent_factory``, started before the first command
that is not ``deploy init`` and trusting the project's ``.ashat/keys/alpha.pub``; the book
calls them ``http://staging.example:8700`` and ``http://omega.example:8700``, their tokens
are in ``../public.token`` and ``../omega.token`` and OMEGA's keys in ``../keys/``.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import ashat
from ashat.bundle.keys import generate_keypair
from ashat.fleet.license import issue
from support import HELLO_SERVICE, REPO, wait_for

BOOK = REPO / "docs" / "examples.md"
PUBLIC_URL = "http://staging.example:8700"
OMEGA_URL = "http://omega.example:8700"
CONTROL_URL = "http://ctl.example:8800"
BOOK_DB = "ashat_team"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
COMMAND_TIMEOUT_S = 240

SETUP_RE = re.compile(r"<!--\s*book:\s*(.*?)\s*-->")
FENCE_RE = re.compile(r"^```(\w+)\s+scenario=([\w-]+)\s*$")
EXIT_RE = re.compile(r"\s+#\s*exit\s+(\d+)\b.*$")


@dataclass
class Step:
    kind: str  # "run" or "toml"
    text: str  # the command (book's form) or the TOML
    expect: list[str] = field(default_factory=list)
    exit_code: int = 0
    line: int = 0


@dataclass
class Scenario:
    name: str
    setup: dict[str, str]
    steps: list[Step] = field(default_factory=list)


def parse_book(text: str) -> dict[str, Scenario]:
    scenarios: dict[str, Scenario] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = SETUP_RE.search(line)
        if m:
            setup = dict(kv.split("=", 1) for kv in m.group(1).split())
            name = setup.pop("scenario")
            assert name not in scenarios, f"scenario {name} set up twice"
            scenarios[name] = Scenario(name, setup)
        f = FENCE_RE.match(line)
        if f:
            kind, name = f.groups()
            assert name in scenarios, f"line {i + 1}: block of unknown scenario {name}"
            body: list[str] = []
            start = i + 1
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if kind == "toml":
                scenarios[name].steps.append(Step("toml", "\n".join(body) + "\n", line=start))
            elif kind == "console":
                scenarios[name].steps += parse_console(body, start)
        i += 1
    return scenarios


def parse_console(body: list[str], first_line: int) -> list[Step]:
    steps: list[Step] = []
    j = 0
    while j < len(body):
        line = body[j]
        if not line.startswith("$ "):
            assert steps, f"line {first_line + j + 1}: output before any command"
            if line.strip():
                steps[-1].expect.append(line.strip())
            j += 1
            continue
        command = line[2:]
        while command.endswith("\\") and j + 1 < len(body):
            j += 1
            command = command[:-1] + " " + body[j].strip()
        while j + 1 < len(body) and (body[j + 1].startswith("> ") or body[j + 1] == ">"):
            j += 1
            command += "\n" + body[j][2:]
        first = command.partition("\n")[0]
        m = EXIT_RE.search(first)
        code = int(m.group(1)) if m else 0
        step = Step("run", command, exit_code=code, line=first_line + j + 1)
        steps.append(step)
        j += 1
    return steps


def line_pattern(expected: str) -> re.Pattern[str]:
    """A book line as a pattern: numbers match any number, ``…`` anything. Digits inside a
    word that starts with a letter (``hello-001``, ``mf-4``, ``p95``) are literal."""
    out = []
    for part in re.split(r"((?<!\d)[A-Za-z][\w.-]*|…|\d+(?:\.\d+)?)", expected):
        if part == "…":
            out.append(".*?")
        elif re.fullmatch(r"\d+(?:\.\d+)?", part):
            out.append(r"\d+(?:\.\d+)?")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The book's lines not found, in order, among the output's lines."""
    actual = [ln.strip() for ln in output.splitlines()]
    pos = 0
    missing = []
    for exp in expected:
        pattern = line_pattern(exp)
        for k in range(pos, len(actual)):
            if pattern.fullmatch(actual[k]):
                pos = k + 1
                break
        else:
            missing.append(exp)
    return missing


def replace_tables(toml: str, block: str) -> str:
    """``toml`` with every table (section) ``block`` has replaced by ``block``'s."""
    headers = {ln.strip() for ln in block.splitlines() if ln.startswith("[")}
    kept: list[str] = []
    dropping = False
    for ln in toml.splitlines(keepends=True):
        if ln.startswith("["):
            dropping = ln.strip() in headers
        if not dropping:
            kept.append(ln)
    return "".join(kept).rstrip("\n") + "\n\n" + block


# -- running a scenario ---------------------------------------------------------------------


class Runner:
    def __init__(
        self,
        scenario: Scenario,
        base: Path,
        agent_factory: Any,
        mainframe_factory: Any,
        serve_process: Any,
    ) -> None:
        self.s = scenario
        self.base = base
        self.agents = agent_factory
        self.mainframes = mainframe_factory
        self.serve_process = serve_process
        self.serve: Any = None
        self.project = base / "hello-service"
        self.public: Any = None
        self.omega: Any = None
        self.subst: dict[str, str] = {}
        self.state = base / "shell.state"
        self.bin = base / "bin"
        self.db: str | None = None
        self.prometheus: Any = None  # the fixture's start(config): prometheus=yes

    # setup ------------------------------------------------------------------------------

    def prepare(self) -> None:
        tree = self.s.setup.get("tree", "hello-service")
        source = HELLO_SERVICE if tree in ("hello-service", "bare") else REPO / "examples" / tree
        self.project = self.base / source.name
        shutil.copytree(source, self.project, ignore=shutil.ignore_patterns("data", "__pycache__"))
        env = {
            "ASHAT_USER": "alice",
            "NO_COLOR": "1",
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(
                [str(Path(ashat.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
            ),
        }
        if tree == "bare":
            (self.project / "ashat.toml").unlink()
        else:
            generate_keypair("alpha", self.project / ".ashat" / "keys")
            env["ASHAT_SIGNING_KEY"] = ".ashat/keys/alpha.key"
        self.bin.mkdir()
        for name, module in (("deploy", "ashat.cli.deploy"), ("ashat", "ashat.cli.ashat")):
            shim = self.bin / name
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
            shim.chmod(0o755)
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        self.state.write_text(
            "unset ASHAT_DB ASHAT_SIGNING_KEY\n"
            + exports
            + f"cd {shlex.quote(str(self.project))}\n"
        )
        if self.s.setup.get("postgres") == "yes":
            self.db = f"ashat_book_{secrets.token_hex(4)}"
            self.subst[BOOK_DB] = self.db

    def app_env(self, mainframe: str | None = None) -> dict[str, str] | None:
        spec = self.s.setup.get("app_env")
        if not spec or mainframe in self.s.setup.get("bare_mainframes", "").split(","):
            return None
        key, _, value = spec.partition("=")
        return {key: self.to_real(value)}

    @property
    def chain(self) -> bool:
        return self.s.setup.get("trust") == "yes"

    def make_keys(self) -> None:
        """``trust=yes``: OMEGA's and PUBLIC's keys exist before the book's trust init."""
        keys = self.base / "keys"
        keys.mkdir(exist_ok=True)
        generate_keypair("omega", keys)
        generate_keypair("verifier", keys)

    def start_servers(self) -> None:
        servers = self.s.setup.get("servers", "")
        if not servers or self.public is not None:
            return
        trust = (self.project / ".ashat" / "keys" / "alpha.pub",)
        keys = self.base / "keys"
        root = self.project / "trust" / "root.json"
        self.public = self.agents(
            extra_trust=trust,
            app_env=self.app_env(),
            args=("--verifier-key", str(keys / "verifier.key")) if self.chain else (),
        )
        self.subst[PUBLIC_URL] = self.public.url
        shutil.copy(self.public.token_file, self.base / "public.token")
        if "omega" in servers:
            self.omega = self.agents(
                role="omega", poll_timeout=5, extra_trust=trust, app_env=self.app_env(),
                omega_keypair=(keys / "omega.key", keys / "omega.pub") if self.chain else None,
                args=("--root", str(root)) if self.chain else (),
            )  # fmt: skip
            self.subst[OMEGA_URL] = self.omega.url
            shutil.copy(self.omega.token_file, self.base / "omega.token")
            keys.mkdir(exist_ok=True)
            for src in (self.omega.omega_pub_path, self.omega.license_pub_path):
                if not (keys / src.name).exists():
                    shutil.copy(src, keys / src.name)
            shutil.copy(self.omega.license_pub_path.with_suffix(".key"), keys / "license.key")
        if self.s.setup.get("configure", "yes") == "yes":
            self.shell(f"deploy configure public {PUBLIC_URL} PublicStaging "
                       "--token-file ../public.token")  # fmt: skip
            if self.omega is not None:
                self.shell(f"deploy configure omega {OMEGA_URL} OmegaProduction "
                           "--token-file ../omega.token")  # fmt: skip
        if self.s.setup.get("regions"):
            self.start_regions(trust[0])
        n = int(self.s.setup.get("mainframes", "0"))
        if n:
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
            handles = []
            for i in range(1, n + 1):
                token, _ = issue(self.omega.license_key, f"mf-{i}", "ACME", expires)
                handles.append(self._mainframe(f"mf-{i}", token, trust[0]))
            self.mainframes.ready(*handles)
            self._registered(n)
            if self.s.setup.get("prometheus") == "yes":
                self.start_prometheus(handles)

    def start_prometheus(self, mainframes: list[Any]) -> None:
        """``prometheus=yes``: Debian's Prometheus scraping the book's servers every second
        (contrib/prometheus), called ``http://prometheus.example:9090``; it waits until
        every mainframe is scraped."""
        from process_fixtures import config_for

        hostport = lambda u: u.split("://", 1)[1]  # noqa: E731
        jobs = {
            "ashat-serve": ["127.0.0.1:9"],
            "ashat-public": [hostport(self.public.url)],
            "ashat-omega": [hostport(self.omega.url)],
            "ashat-mainframes": [hostport(m.url) for m in mainframes],
        }
        (self.base / "prometheus").mkdir()
        url = self.prometheus(config_for(self.base / "prometheus", jobs))
        self.subst["http://prometheus.example:9090"] = url

        def scraped() -> bool:
            q = 'count(up{job="ashat-mainframes"} == 1)'
            found = httpx.get(f"{url}/api/v1/query", params={"query": q}, timeout=5).json()
            result = found["data"]["result"]
            return bool(result) and int(result[0]["value"][1]) == len(mainframes)

        wait_for(scraped, 30, "Prometheus scraping every mainframe")

    def start_regions(self, trust: Path) -> None:
        """``regions=eu,us``: an OMEGA per region (``--region``), called
        ``http://omega-REGION.example:8700`` with its token in ``../omega-REGION.token``,
        configured as OmegaREGION, each with one mainframe ``mf-REGION`` it licensed."""
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        handles = []
        for region in self.s.setup["regions"].split(","):
            omega = self.agents(
                role="omega", poll_timeout=5, extra_trust=(trust,), app_env=self.app_env(),
                args=("--region", region),
            )  # fmt: skip
            url = f"http://omega-{region}.example:8700"
            self.subst[url] = omega.url
            shutil.copy(omega.token_file, self.base / f"omega-{region}.token")
            self.shell(f"deploy configure omega {url} Omega{region.upper()} --region {region} "
                       f"--token-file ../omega-{region}.token")  # fmt: skip
            token, _ = issue(omega.license_key, f"mf-{region}", "ACME", expires, region=region)
            handle = self.mainframes.start(
                omega=omega.url, license_token=token, mainframe_id=f"mf-{region}",
                trust=trust, trust_omega=omega.omega_pub_path, poll_wait=1,
            )  # fmt: skip
            handles.append(handle)
        self.mainframes.ready(*handles)

    def start_serve(self) -> None:
        """``ashat serve`` over the project (signing with its key), once a command names it."""
        if self.serve is None and self.s.setup.get("serve") == "yes":
            key = self.project / ".ashat" / "keys" / "alpha.key"
            self.serve = self.serve_process(self.project, {"ASHAT_SIGNING_KEY": str(key)})
            self.subst[CONTROL_URL] = self.serve.url

    def _mainframe(self, mainframe_id: str, token: str, trust: Path, poll_wait: int = 1) -> Any:
        root = self.project / "trust" / "root.json" if self.chain else None
        args: tuple[str, ...] = ()
        if mainframe_id in self.s.setup.get("night_window", "").split(","):
            # a window twelve hours from now: closed while the scenario runs
            at = (dt.datetime.now(dt.UTC).hour + 12) % 24
            window = f"daily {at:02d}:00-{(at + 1) % 24:02d}:00"
            args = ("--maintenance-window", window, "--maintenance-tz", "UTC")
        return self.mainframes.start(
            omega=self.omega.url, license_token=token, mainframe_id=mainframe_id,
            trust=trust, trust_omega=None if root else self.omega.omega_pub_path,
            poll_wait=poll_wait, app_env=self.app_env(mainframe_id), root=root, args=args,
        )  # fmt: skip

    def _registered(self, n: int) -> None:
        with self.omega.client() as client:
            wait_for(
                lambda: len(client.request("GET", "/v1/fleet/mainframes")["mainframes"]) >= n,
                30,
                f"{n} mainframes registered with OMEGA",
            )

    # running ------------------------------------------------------------------------------

    def to_real(self, text: str) -> str:
        for book, real in self.subst.items():
            text = text.replace(book, real)
        return text

    def to_book(self, text: str) -> str:
        for book, real in self.subst.items():
            text = text.replace(real, book)
        return text

    def shell(self, command: str, expect_code: int = 0) -> str:
        script = (
            f". {shlex.quote(str(self.state))}\n"
            f"{self.to_real(command)}\n"
            "__rc=$?\n"
            f"{{ export -p | grep -v -e ' SHELLOPTS=' -e ' BASHOPTS=' -e ' PWD=' -e ' OLDPWD='; "
            f'printf "cd %q\\n" "$PWD"; }} > {shlex.quote(str(self.state))}\n'
            "exit $__rc\n"
        )
        proc = subprocess.run(
            ["bash", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT_S,
            env={k: v for k, v in os.environ.items() if not k.startswith("ASHAT_")},
        )
        out = self.to_book(proc.stdout.decode(errors="replace"))
        if proc.returncode != expect_code:
            pytest.fail(
                f"{self.s.name}: `{command}` exited {proc.returncode}, the book says "
                f"{expect_code}:\n{out}"
            )
        return out

    def start_mainframe(self, command: str) -> None:
        """``ashat agent --role mainframe ...`` from the book, through the fixture."""
        argv = shlex.split(command.split("#", 1)[0])
        opts: dict[str, str] = {}
        for k, v in itertools.pairwise(argv):
            if k.startswith("--"):
                opts[k] = v
        cwd = self.cwd()
        license_file = cwd / opts["--license"]
        token = license_file.read_text().strip()
        mainframe_id = license_file.stem
        handle = self._mainframe(
            mainframe_id, token, cwd / opts["--trust"], int(opts.get("--poll-wait", "1"))
        )
        self.mainframes.ready(handle)

    def cwd(self) -> Path:
        m = re.search(r"^cd (.*)$", self.state.read_text(), re.M)
        assert m
        return Path(shlex.split(m.group(1))[0])

    def run(self, record: list[str]) -> None:
        self.prepare()
        if self.chain:
            self.make_keys()
        for step in self.s.steps:
            if step.kind == "toml":
                toml = self.project / "ashat.toml"
                toml.write_text(replace_tables(toml.read_text(), self.to_real(step.text)))
                continue
            if self.chain:
                if step.text.startswith("deploy "):
                    self.start_servers()
            elif not step.text.startswith("deploy init"):
                self.start_servers()
            if CONTROL_URL in step.text:
                self.start_serve()
            if step.text.startswith("ashat agent --role mainframe"):
                self.start_mainframe(step.text)
                continue
            out = self.shell(step.text, step.exit_code)
            record.append(f"$ {step.text}\n{out}")
            missing = missing_lines(step.expect, out)
            if missing:
                pytest.fail(
                    f"{self.s.name} (docs/examples.md line {step.line}): `{step.text}` did not "
                    f"print {missing!r}; it printed:\n{out}"
                )

    def cleanup(self) -> None:
        if self.db:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists",
                            self.db], check=False, capture_output=True)  # fmt: skip


SCENARIOS = parse_book(BOOK.read_text(encoding="utf-8"))


def postgres_available() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        psycopg.connect(PG_ADMIN, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return shutil.which("createdb") is not None


@functools.cache
def package_index_unreachable() -> str | None:
    """None if pip on this machine can fetch from its package index, else why not."""
    with tempfile.TemporaryDirectory() as out:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 "waitress==3.0.2", "--dest", out],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "did not reach a package index within 120 s"
    if done.returncode != 0:
        return "cannot reach a package index: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return None


def test_the_book_has_the_scenarios_the_issue_asks_for() -> None:
    wanted = {
        "first-deployment", "hotfix-rollback", "failed-verification", "emergency-cancel",
        "two-approvers", "fleet-auto-rollback", "license-expiry", "team-postgresql",
        "control-plane", "pilot-ring",
    }  # fmt: skip
    assert wanted <= set(SCENARIOS)
    for s in SCENARIOS.values():
        assert any(step.kind == "run" for step in s.steps), f"{s.name} runs nothing"


def test_the_book_reader_is_strict() -> None:
    assert missing_lines(["✅ Pushed x in 0.61s — next: …"], "✅ Pushed x in 1.5s — next: y") == []
    assert missing_lines(["a", "b"], "b\na") == ["b"]
    assert missing_lines(["sent 3 blobs"], "sent many blobs") == ["sent 3 blobs"]
    assert missing_lines(["runs hello-001 (34%)"], "runs hello-002 (50%)") == [
        "runs hello-001 (34%)"
    ]
    assert missing_lines(["at 2026-11-30 12:49:27"], "at 2027-01-02 08:00:01") == []
    assert missing_lines(["until 2026-11-30T12:50:34Z"], "until 2026-12-01T13:01:02Z") == []
    steps = parse_console(["$ deploy verify x  # exit 1", "❌ failed", "$ a \\", "  b"], 0)
    assert [(s.text, s.exit_code, s.expect) for s in steps] == [
        ("deploy verify x  # exit 1", 1, ["❌ failed"]),
        ("a  b", 0, []),
    ]


def _times_a_regression(s: Scenario) -> bool:
    """Whether a scenario's Performance Baseline judges the app's p95 against an earlier run's
    (it verifies twice, with ``max_regression``): such a scenario runs alone under xdist
    (tests/alone.py)."""
    tree = s.setup.get("tree", "hello-service")
    tomls = [st.text for st in s.steps if st.kind == "toml"]
    if tree != "bare":  # a bare tree starts without ashat.toml (Book.prepare)
        tomls.append((REPO / "examples" / tree / "ashat.toml").read_text(encoding="utf-8"))
    verifies = sum(st.kind == "run" and st.text.startswith("deploy verify") for st in s.steps)
    return verifies > 1 and any("max_regression" in t for t in tomls)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[pytest.mark.alone] if _times_a_regression(SCENARIOS[n]) else [])
        for n in sorted(SCENARIOS)
    ],
)
def test_scenario(
    name: str,
    tmp_path: Path,
    agent_factory: Any,
    mainframe_factory: Any,
    serve_process: Any,
    prometheus: Any,
) -> None:
    scenario = SCENARIOS[name]
    if scenario.setup.get("postgres") == "yes" and not postgres_available():
        pytest.skip("needs PostgreSQL on 127.0.0.1:5432 (user postgres) and createdb")
    tree = REPO / "examples" / scenario.setup.get("tree", "hello-service")
    toml = tree / "ashat.toml"
    if toml.is_file() and tomllib.loads(toml.read_text()).get("app", {}).get("requirements"):
        why = package_index_unreachable()
        if why:
            pytest.skip(f"{tree.name}'s push builds its wheels with pip, which {why}")
    runner = Runner(scenario, tmp_path, agent_factory, mainframe_factory, serve_process)
    runner.prometheus = prometheus
    record: list[str] = []
    try:
        runner.run(record)
    finally:
        runner.cleanup()
        if os.environ.get("ASHAT_BOOK_RECORD"):
            out = Path(os.environ["ASHAT_BOOK_RECORD"]) / f"{name}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("\n".join(record))
