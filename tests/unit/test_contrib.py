"""contrib/: the systemd units pass ``systemd-analyze verify`` (no warning either), are
hardened, and run real options; the GitHub Actions workflow parses and runs real verbs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ashat.cli.ashat import cli as ashat_cli
from ashat.cli.deploy import cli as deploy_cli

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "contrib" / "systemd").glob("*.service"))
WORKFLOW = REPO / "contrib" / "github-actions" / "deploy.yml"
EXEC = "/usr/local/bin/ashat"


def directives(unit: Path) -> dict[str, list[str]]:
    """``Key=value`` lines (continuations joined), each key with its values in order."""
    text = re.sub(r"\\\n\s*", " ", unit.read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_there_is_a_unit_for_each_server() -> None:
    assert [u.name for u in UNITS] == [
        "ashat-mainframe.service", "ashat-omega.service", "ashat-public.service",
        "ashat-serve.service",
    ]  # fmt: skip


# What a root agent needs to build the app's bwrap sandbox and start the app as --app-user.
AGENT_CAPABILITIES = (
    "CAP_SYS_ADMIN CAP_SYS_CHROOT CAP_SETUID CAP_SETGID CAP_SETPCAP CAP_CHOWN CAP_KILL"
)


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_units_are_hardened(unit: Path) -> None:
    d = directives(unit)
    agent = " agent " in d["ExecStart"][0]
    if agent:  # root, to confine the app: it runs as another user, in a sandbox
        assert "User" not in d and "DynamicUser" not in d
        assert "--app-user ashat-app --sandbox bwrap" in d["ExecStart"][0]
        assert d["CapabilityBoundingSet"] == [AGENT_CAPABILITIES]
        assert d["RestrictNamespaces"] == ["mnt pid ipc uts cgroup"]  # no user, no net
    else:
        assert d.get("DynamicUser") == ["yes"] or "User" in d
        assert d["CapabilityBoundingSet"] == [""]
    for key, value in {
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():  # fmt: skip
        assert d.get(key) == [value], key
    state = d["StateDirectory"][0]
    assert d["ReadWritePaths"] == [f"/var/lib/{state}"]
    # the one data directory the unit writes is the one the program is given
    assert f"/var/lib/{state}" in d["ExecStart"][0]
    # secrets come as credentials, never as plain paths the dynamic user could not read
    for token in re.findall(r"--(?:token-file|license|omega-key|app-env) (\S+)", d["ExecStart"][0]):
        assert token.startswith("%d/"), token  # %d: the credentials directory


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_units_run_real_options(unit: Path) -> None:
    argv = shlex.split(directives(unit)["ExecStart"][0])
    assert argv[0] == EXEC
    command = ashat_cli.commands[argv[1]]
    known = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
    used = [a for a in argv[2:] if a.startswith("--")]
    assert used and set(used) <= known, set(used) - known
    if argv[1] == "agent":
        role = argv[argv.index("--role") + 1]
        assert unit.stem == f"ashat-{role}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: point it at this interpreter
    program = shutil.which("ashat") or sys.executable
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(EXEC, program))
        copies.append(str(copy))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *copies],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr + proc.stdout


# -- GitHub Actions -------------------------------------------------------------------------


def workflow() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def deploy_calls(data: dict) -> list[list[str]]:
    calls = []
    for job in data["jobs"].values():
        for step in job["steps"]:
            script = re.sub(r"\\\n\s*", " ", step.get("run", ""))
            for line in script.splitlines():
                line = line.strip()
                if line.startswith("deploy "):
                    calls.append(shlex.split(line))
    return calls


def test_workflow_pushes_and_verifies_main_then_waits_for_an_environment() -> None:
    data = workflow()
    on = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on == {"push": {"branches": ["main"]}}
    staging, production = data["jobs"]["staging"], data["jobs"]["production"]
    assert production["needs"] == "staging"
    assert production["environment"] == "production"
    verbs = [c[1] for c in deploy_calls(data)]
    assert verbs.index("push") < verbs.index("verify") < verbs.index("approve")
    assert "approve" not in [c[1] for c in deploy_calls({"jobs": {"s": staging}})]


def test_workflow_runs_real_verbs_and_options() -> None:
    calls = deploy_calls(workflow())
    assert len(calls) >= 6
    for argv in calls:
        command = deploy_cli.commands.get(argv[1])
        assert command is not None, f"deploy {argv[1]} is not a verb"
        known = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
        used = {a for a in argv[2:] if a.startswith("--")}
        assert used <= known, f"deploy {argv[1]}: {used - known}"


def test_workflow_never_expands_untrusted_text_inside_a_script() -> None:
    text = WORKFLOW.read_text()
    for m in re.finditer(r"run: [|>-]*\n((?:\s{10,}.*\n)+)|run: (.*)", text):
        script = m.group(1) or m.group(2) or ""
        assert "${{" not in script, script


# -- GitLab CI and Jenkins (issue 21) ---------------------------------------------------------

GITLAB = REPO / "contrib" / "gitlab" / ".gitlab-ci.yml"
JENKINSFILE = REPO / "contrib" / "jenkins" / "Jenkinsfile"


def calls_in(lines: list[str]) -> list[list[str]]:
    """The ``deploy`` command lines among shell lines (``VAR=value`` prefixes dropped)."""
    out = []
    for line in lines:
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words = words[1:]
        if words[:1] == ["deploy"]:
            out.append(words)
    return out


def gitlab() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    data = yaml.safe_load(GITLAB.read_text())
    assert isinstance(data, dict)
    return data


def gitlab_calls(job: dict) -> list[list[str]]:
    return calls_in([*job.get("script", []), *job.get("after_script", [])])


def jenkins_stages() -> dict[str, str]:
    """Each stage's name and its text (up to the next stage or the post section)."""
    text = JENKINSFILE.read_text()
    marks = [(m.start(), m.group(1)) for m in re.finditer(r"stage\('([^']+)'\)", text)]
    end = text.index("    post {")
    return {
        name: text[start : (marks[i + 1][0] if i + 1 < len(marks) else end)]
        for i, (start, name) in enumerate(marks)
    }


def jenkins_calls(stage_text: str) -> list[list[str]]:
    lines: list[str] = []
    for m in re.finditer(r"sh\s+'''(.*?)'''|sh\s+'([^']*)'", stage_text, re.S):
        lines += (m.group(1) or m.group(2) or "").splitlines()
    return calls_in(lines)


def verbs_and_options(calls: list[list[str]]) -> set[tuple[str, frozenset[str]]]:
    return {(c[1], frozenset(a for a in c[2:] if a.startswith("--"))) for c in calls}


def test_gitlab_pushes_and_verifies_then_waits_for_the_protected_environment() -> None:
    data = gitlab()
    staging, production = data["push and verify"], data["release to the fleet"]
    assert data["stages"] == ["staging", "production"]
    assert production["needs"] == ["push and verify"]
    assert production["environment"]["name"] == "production"
    assert staging["extends"] == production["extends"] == ".one_at_a_time"
    assert data[".one_at_a_time"]["resource_group"] == "ashat-deploy"  # one release at a time
    verbs = [c[1] for c in gitlab_calls(staging)]
    assert verbs.index("push") < verbs.index("verify") and "approve" not in verbs
    assert "approve" in [c[1] for c in gitlab_calls(production)]


def test_jenkins_pushes_and_verifies_then_waits_for_an_input_step() -> None:
    stages = jenkins_stages()
    names = list(stages)
    assert names.index("Push and verify on PUBLIC") < names.index("Approval")
    assert names.index("Approval") < names.index("Release to OMEGA and the fleet")
    gate = stages["Approval"]
    assert "input(" in gate and "submitter:" in gate and "submitterParameter: 'APPROVER'" in gate
    verbs = [c[1] for c in jenkins_calls(stages["Push and verify on PUBLIC"])]
    assert verbs.index("push") < verbs.index("verify") and "approve" not in verbs
    release = jenkins_calls(stages["Release to OMEGA and the fleet"])
    assert [c[1] for c in release][-1] == "approve"
    assert 'ASHAT_USER="$APPROVER" deploy approve' in stages["Release to OMEGA and the fleet"]


def test_every_ci_example_runs_the_same_real_verbs_and_options() -> None:
    """The three examples do what the guide and the examples book do: the same verbs with
    the same options, each a real one."""
    github = verbs_and_options(deploy_calls(workflow()))
    jobs = [j for j in gitlab().values() if isinstance(j, dict) and "script" in j]
    lab = verbs_and_options([c for job in jobs for c in gitlab_calls(job)])
    stages = jenkins_stages().values()
    jenkins = verbs_and_options([c for text in stages for c in jenkins_calls(text)])
    assert lab == github, lab ^ github
    assert jenkins | {("status", frozenset())} == github, jenkins ^ github
    for verb, opts in github:
        command = deploy_cli.commands.get(verb)
        assert command is not None, verb
        known = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
        assert opts <= known, (verb, opts - known)


def test_the_jenkinsfile_is_groovy() -> None:
    groovy = shutil.which("groovy")
    if groovy is None:
        pytest.skip("no groovy here to parse the Jenkinsfile (apt-get install groovy)")
    script = f"new GroovyShell().parse(new File('{JENKINSFILE}'))"
    proc = subprocess.run([groovy, "-e", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
