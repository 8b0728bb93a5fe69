"""``deploy push`` and ``deploy rollback`` against real agents: what moves, what is recorded,
and that every failure leaves the deployment ``failed`` and PUBLIC on its previous release."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.errors import InvalidInput
from ashat.transport import client, outgoing
from support import answers_by_status, deploy, deploy_json, enter_hello_project, wait_for
from support import configure as configure_tier


def current(agent: Any) -> str | None:
    with agent.client() as c:
        return c.health().get("current")


def test_a_pushs_duration_counts_its_build(agent_factory: Any, hello_project: Any) -> None:
    # "Pushed … in N s" and duration_s left the build out: 64 MiB to hash took no time.
    agent = agent_factory()
    root = hello_project(agent)
    (root / "big.bin").write_bytes(os.urandom(64 << 20))
    code, out = deploy_json("push", "hello-001", "big")
    assert code == 0, out
    assert out["timings"]["build"] > 0.02  # hashing 64 MiB
    assert out["duration_s"] >= sum(out["timings"].values()) - 0.002, out


def test_push_activates_the_app_and_records_every_step(
    agent_factory: Any, hello_project: Any
) -> None:
    agent = agent_factory()
    hello_project(agent)
    code, out = deploy_json("push", "hello-001", "First release")
    assert code == 0, out
    assert out["state"] == "pushed" and out["target"] == "Staging"
    for key in (
        "update_id",
        "files",
        "bytes_total",
        "bytes_sent",
        "blobs_sent",
        "blobs_skipped",
        "duration_s",
    ):
        assert key in out
    assert out["bytes_sent"] == out["bytes_total"] and out["blobs_skipped"] == 0
    steps = ("build", "record", "sign", "plan", "upload", "stage", "activate")
    assert set(out["timings"]) == set(steps) and all(v >= 0 for v in out["timings"].values())
    # the steps follow one another, the build among them: together, the push's duration
    total = sum(out["timings"].values())
    assert total - 0.002 <= out["duration_s"] <= total + 0.05, out
    assert current(agent) == "hello-001"
    port = out["app"]["port"]
    items = httpx.get(f"http://127.0.0.1:{port}/api/items", timeout=5).json()
    assert "items" in items
    log = deploy("log", "hello-001").stdout
    for kind in ("deployment.pushing", "push.signed", "push.uploaded", "deployment.pushed"):
        assert kind in log
    assert deploy("audit", "verify").exit_code == 0


def test_unchanged_tree_under_a_new_id_sends_no_blob(
    agent_factory: Any, hello_project: Any
) -> None:
    agent = agent_factory()
    root = hello_project(agent)
    assert deploy("push", "hello-001", "one").exit_code == 0
    code, out = deploy_json("push", "hello-002", "same tree")
    assert code == 0 and out["blobs_sent"] == 0 and out["bytes_sent"] == 0
    (root / "VERSION").write_text("9.9.9\n")
    code, out = deploy_json("push", "hello-003", "one file changed")
    assert code == 0 and out["blobs_sent"] == 1 and out["bytes_sent"] == len("9.9.9\n")
    assert out["sequence"] == 3


def test_a_re_push_asks_only_about_new_blobs_and_sends_one_public_lost(
    agent_factory: Any, hello_project: Any
) -> None:
    """A tree that shares files with the release PUBLIC runs is asked about only for the
    others (issue 20: PUBLIC checked each of 2,000 digests per push); a blob of that release
    PUBLIC lost since is sent once staging says so, and the push goes on."""
    agent = agent_factory()
    root = hello_project(agent)
    assert deploy("push", "hello-001", "one").exit_code == 0
    lost = (root / "serve.py").read_bytes()
    sha = hashlib.sha256(lost).hexdigest()
    (agent.data / "blobs" / "sha256" / sha[:2] / sha).unlink()  # a cleanup, a disk's fault
    (root / "VERSION").write_text("9.9.9\n")
    code, out = deploy_json("push", "hello-002", "one file changed")
    assert code == 0, out
    assert out["blobs_sent"] == 2 and out["bytes_sent"] == len("9.9.9\n") + len(lost)
    # asked only about VERSION, PUBLIC refused the first stage for serve.py's blob
    assert answers_by_status(agent.url, "POST", "/v1/releases") == {409: 1, 201: 2}
    assert current(agent) == "hello-002"
    assert "push.uploaded" in deploy("log", "hello-002").stdout
    assert deploy("audit", "verify").exit_code == 0


def test_push_without_signing_key_says_how_and_records_nothing(
    agent_factory: Any, hello_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = agent_factory()
    hello_project(agent)
    monkeypatch.delenv("ASHAT_SIGNING_KEY")
    res = deploy("push", "hello-001", "x")
    assert res.exit_code == 2
    assert "ashat keys generate" in res.stderr
    assert deploy_json("history")[1]["deployments"] == []


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["push", "Bad_ID", "x"], 2, "invalid update id"),
        (["push", "ok-1", "  "], 2, "description"),
        (["push", "ok-1", "x", "--source", "/nonexistent/dir"], 2, "not a directory"),
        (["push", "ok-1", "x", "--source", ".", "--git", "HEAD"], 2, "not both"),
    ],
)
def test_bad_push_input_exits_2_with_nothing_recorded(
    agent_factory: Any, hello_project: Any, args: list[str], code: int, fragment: str
) -> None:
    agent = agent_factory()
    hello_project(agent)
    res = deploy(*args)
    assert res.exit_code == code, res.output
    assert fragment in res.stderr.lower()
    assert deploy_json("history")[1]["deployments"] == []


def test_push_without_public_configured_exits_2(agent_factory: Any, hello_project: Any) -> None:
    agent = agent_factory()
    hello_project(agent, configure=False)
    res = deploy("push", "hello-001", "x")
    assert res.exit_code == 2 and "deploy configure public" in res.stderr


def test_symlink_leaving_the_tree_is_refused_before_anything_is_recorded(
    agent_factory: Any, hello_project: Any
) -> None:
    agent = agent_factory()
    root = hello_project(agent)
    os.symlink("/etc/passwd", root / "escape")
    res = deploy("push", "hello-001", "x")
    assert res.exit_code == 2 and "outside" in res.stderr
    assert deploy_json("history")[1]["deployments"] == []
    assert current(agent) is None


def test_what_public_ran_is_asked_once_the_push_holds_its_lease(
    agent_factory: Any, hello_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review (eighth session of 2026-12-07): asking PUBLIC what it runs while the tree
    was built, before the lease, let a teammate's push land in between, and the push
    recorded the release before it as what to roll back to."""
    from ashat.ops import push as ops_push

    agent = agent_factory()
    root = hello_project(agent)
    assert deploy_json("push", "hello-001", "one")[0] == 0
    real = ops_push.build_bundle

    def built_while_a_teammate_pushes(*a: Any, **k: Any) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "ashat.cli.warm", "push", "hello-002", "two"], cwd=root,
            env={**os.environ, "ASHAT_HELPER": "off"}, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return real(*a, **k)

    monkeypatch.setattr(ops_push, "build_bundle", built_while_a_teammate_pushes)
    code, out = deploy_json("push", "hello-003", "three")
    assert code == 0, out
    assert out["public_previous"] == "hello-002"
    assert deploy("rollback", "hello-003").exit_code == 0
    assert current(agent) == "hello-002"


def test_keys_and_tokens_in_the_tree_are_refused_before_anything_is_sent(
    agent_factory: Any, hello_project: Any
) -> None:
    """A review followed the README: ``ashat keys generate`` in the project (its default
    --dir is ``.``) and a token file beside it, and ``deploy push`` sent root.key,
    verifier.key and the token to PUBLIC, where the app can read them, a step from every
    mainframe. The push now refuses a private key named like one and a copy of the
    project's own secrets, naming them, before anything is recorded."""
    from support import ashat

    agent = agent_factory()
    root = hello_project(agent)
    for name in ("verifier", "root"):
        assert ashat("keys", "generate", name).exit_code == 0  # into the project
    (root / "token").write_text(agent.token_file.read_text().strip() + "\n")
    signing_key = Path(os.environ["ASHAT_SIGNING_KEY"])
    (root / "alpha-copy.bin").write_bytes(signing_key.read_bytes())
    res = deploy("push", "hello-001", "x")
    assert res.exit_code == 2, res.output
    for shown in (
        "root.key (a private key)",
        "verifier.key (a private key)",
        "token (the PUBLIC token)",
        "alpha-copy.bin (the project's signing key)",
    ):
        assert shown in res.stderr, res.stderr
    assert ".ashatignore" in res.stderr and "verifier.pub" not in res.stderr
    assert deploy_json("history")[1]["deployments"] == []
    assert current(agent) is None
    # kept out by .ashatignore, or a key the release must carry accepted by the scan's allow
    (root / ".ashatignore").write_text("token\nalpha-copy.bin\nroot.key\n")
    toml = root / "ashat.toml"
    toml.write_text(toml.read_text().replace("allow = []", 'allow = ["verifier.key"]', 1))
    res = deploy("push", "hello-001", "x")
    assert res.exit_code == 0, res.output


def test_untrusted_key_fails_the_push_and_public_keeps_its_release(
    agent_factory: Any, hello_project: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ashat.bundle import generate_keypair

    agent = agent_factory()
    hello_project(agent)
    assert deploy("push", "hello-001", "good").exit_code == 0
    rogue, _ = generate_keypair("rogue", tmp_path / "rogue")
    monkeypatch.setenv("ASHAT_SIGNING_KEY", str(rogue))
    code, out = deploy_json("push", "hello-002", "signed by a stranger")
    assert code == 2, out  # the agent refused our input (400): exit 2, its kind kept
    assert "none trusted" in out["error"] and out["kind"] == "unknown_key", out
    assert "--trust FILE.pub" in out["error"]  # what to do about it
    _, status = deploy_json("status", "hello-002")
    assert status["deployment"]["state"] == "failed"
    assert status["deployment"]["reason"]
    assert current(agent) == "hello-001"
    assert "hello-002" not in os.listdir(agent.data / "releases")
    # Issue 18: a failed push is not "in flight" (it cluttered that list until cancelled)
    _, overview = deploy_json("status")
    assert "hello-002" not in [d["update_id"] for d in overview["active"]], overview
    assert "hello-002" in [d["update_id"] for d in overview["recent"]], overview


def test_wrong_token_exits_4_and_the_deployment_fails(
    agent_factory: Any, hello_project: Any, tmp_path: Path
) -> None:
    agent = agent_factory()
    hello_project(agent)
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    assert (
        deploy("configure", "public", agent.url, "Staging", "--token-file", str(wrong)).exit_code
        == 0
    )
    code, out = deploy_json("push", "hello-001", "x")
    assert code == 4 and "credentials" in out["error"]
    assert "not-the-token" not in json.dumps(out)
    assert deploy_json("status", "hello-001")[1]["deployment"]["state"] == "failed"


def test_unreachable_public_exits_4_and_the_push_resumes_later(
    agent_factory: Any, hello_project: Any
) -> None:
    agent = agent_factory()
    hello_project(agent)
    assert deploy("push", "hello-001", "first").exit_code == 0
    agent.stop()
    code, out = deploy_json("push", "hello-002", "x")
    assert code == 4 and "cannot reach" in out["error"]
    assert "stays pushing" in out["error"] and "deploy push hello-002" in out["error"]
    _, status = deploy_json("status", "hello-002")
    assert status["deployment"]["state"] == "pushing"
    interrupted = [e for e in status["events"] if e["kind"] == "push.interrupted"]
    assert interrupted and "cannot reach" in interrupted[-1]["details"]["error"]
    # Another push is told how to free PUBLIC: resume this one (a push cut short cannot
    # be cancelled; the message said 'deploy cancel', which was refused).
    code, out = deploy_json("push", "hello-003", "y")
    assert code == 3 and "finish it with 'deploy push hello-002" in out["error"], out
    assert "deploy cancel" not in out["error"]
    back = agent_factory(like=agent)
    configure_tier("public", back, "Staging")
    code, out = deploy_json("push", "hello-002", "x")
    assert code == 0 and out["resumed"] and out["public_previous"] == "hello-001", out
    assert current(back) == "hello-002"


def test_an_upload_cut_short_keeps_the_packs_that_arrived_and_the_push_sends_the_rest(
    agent_factory: Any, hello_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload went up in four packs whatever its size, each stored only once all of it
    had arrived: a first push of 4 GB cut at 3 GB kept nothing of it. It now goes in packs
    of at most PACK_TARGET_BYTES (64 MiB; 8 KiB here), in the order of their paths, and
    PUBLIC keeps each pack it stored: the push, resumed, sends only what had not arrived."""
    monkeypatch.setattr(client, "PACK_TARGET_BYTES", 8192)
    monkeypatch.setattr(client, "UPLOAD_STREAMS", 1)  # one at a time: which arrived is certain
    agent = agent_factory(env={"ASHAT_CRASH_AT": "pack.received:5"})  # killed at the 5th
    root = hello_project(agent)
    (root / "assets").mkdir()
    for i in range(40):
        (root / "assets" / f"part{i:02d}.bin").write_bytes(os.urandom(2000))
    refs = [
        client.BlobRef(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size, p)
        for p in root.rglob("*")
        if p.is_file() and ".ashat" not in p.relative_to(root).parts
    ]
    planned = client._plan_packs(refs, 8192)
    assert len(planned) > 10 and all(sum(r.size for r in p) <= 8192 or len(p) == 1 for p in planned)
    code, out = deploy_json("push", "big-001", "a tree of many packs")
    assert code == 4 and "stays pushing" in out["error"], out
    held = {p.name for p in (agent.data / "blobs" / "sha256").glob("*/*")}
    assert held == {r.sha256 for p in planned[:4] for r in p}  # the four packs before the cut

    monkeypatch.setattr(client, "UPLOAD_STREAMS", 2)
    back = agent_factory(like=agent)
    configure_tier("public", back, "Staging")
    code, out = deploy_json("push", "big-001", "a tree of many packs")
    assert code == 0 and out["resumed"], out
    assert out["blobs_sent"] == len(refs) - len(held)
    assert out["bytes_sent"] == sum(r.size for p in planned[4:] for r in p)
    assert answers_by_status(back.url, "POST", "/v1/blobs/pack") == {200: len(planned) - 4}
    assert current(back) == "big-001"


def test_ctrl_c_during_a_two_stream_upload_ends_the_push_at_once_and_it_resumes(
    agent_factory: Any, hello_project: Any
) -> None:
    """Ctrl-C while two packs were on their way waited for both to arrive (a 64 MiB pack
    over a slow line: minutes) before ``deploy`` ended. It now ends at once, exit 130;
    PUBLIC keeps nothing of the packs cut short, and the push, run again, resumes."""
    slow = ",".join(f"blob.write:{i}:slow" for i in range(1, 9))  # 8 writes of 3 s each
    agent = agent_factory(env={"ASHAT_CRASH_AT": slow})
    root = hello_project(agent)
    for i in range(2):  # two blobs of 40 MB: two packs, sent at once
        (root / f"part{i}.bin").write_bytes(bytes(40 << 20) + bytes([i]))

    def as_from_a_terminal() -> None:  # a background job's shell, or the runner, ignores it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    proc = subprocess.Popen(
        [sys.executable, "-m", "ashat.cli.deploy", "push", "big-001", "two packs"],
        cwd=root, env={**os.environ, "ASHAT_HELPER": "off"}, preexec_fn=as_from_a_terminal,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        tmp = agent.data / "tmp"
        wait_for(lambda: any(tmp.glob("blob-*")), 60, "PUBLIC to start writing a pack")
        interrupted_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - interrupted_at
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err, err
    assert took < 5, f"deploy ended {took:.1f} s after Ctrl-C"  # the packs took 12 s or more
    assert not list((agent.data / "blobs" / "sha256").glob("*/*"))
    assert deploy_json("status", "big-001")[1]["deployment"]["state"] == "pushing"

    code, out = deploy_json("push", "big-001", "two packs")
    assert code == 0 and out["resumed"], out
    assert current(agent) == "big-001"


def test_an_upload_tells_its_progress_across_both_streams(
    agent_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "PACK_TARGET_BYTES", 1 << 20)  # 12 packs, two at a time
    agent = agent_factory()
    refs = []
    for i in range(24):
        p = tmp_path / f"b{i}.bin"
        p.write_bytes(os.urandom(512 * 1024 + i))
        refs.append(client.BlobRef(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size, p))
    total = sum(r.size for r in refs)
    seen: list[tuple[int, int]] = []
    with agent.client() as c:
        c.upload_progress = lambda sent, of: seen.append((sent, of))
        assert c.upload(refs) == total
    assert seen[-1] == (total, total)
    assert all(of == total and 0 < sent <= total for sent, of in seen)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    assert 10 <= len(seen) <= total // client.PROGRESS_STEP + 1  # about one call a MiB

    def broken(sent: int, of: int) -> None:
        raise OSError(5, "the terminal is gone")

    with agent.client() as c:  # a bar that cannot draw stops the bar, not the upload
        c.upload_progress = broken
        assert c.upload(refs) == total


def test_a_push_at_a_terminal_shows_its_upload_as_a_bar(
    agent_factory: Any, hello_project: Any
) -> None:
    """At a terminal, an upload of 16 MiB or more draws a bar (bytes, rate, time left),
    which is gone when the upload step is printed; piped or with --json, nothing changes."""
    agent = agent_factory()
    root = hello_project(agent)
    (root / "big.bin").write_bytes(os.urandom(20 << 20))
    main, side = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ashat.cli.deploy", "push", "big-001", "a big file"],
            cwd=root, env={**os.environ, "ASHAT_HELPER": "off", "TERM": "xterm"},
            stdin=subprocess.DEVNULL, stdout=side, stderr=side,
        )  # fmt: skip
        os.close(side)
        out = b""
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not data:
                break
            out += data
        assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    finally:
        os.close(main)
    text = out.decode(errors="replace")
    assert "uploading" in text and "/20.0 MiB" in text, text
    assert text.index("uploading") < text.index("upload ") < text.index("Pushed big-001"), text
    assert current(agent) == "big-001"


def test_a_tree_over_publics_limits_is_refused_before_a_byte_is_sent(
    agent_factory: Any, hello_project: Any
) -> None:
    """A file over PUBLIC's --max-blob-bytes was refused in the middle of the upload, by a
    digest ("blob 2ec8… is 3145728 bytes, over the limit"). PUBLIC's health answer now says
    its limits, and the push checks them before it sends anything, naming the files (exit
    2; the deployment fails and PUBLIC keeps what it ran): the file count and depth of the
    whole tree, which PUBLIC checks when it stages, and the size of each file it lacks,
    which it checks as it receives (one it holds is never sent again)."""
    first = agent_factory()
    root = hello_project(first)
    (root / "model.bin").write_bytes(os.urandom(2 << 20))
    assert deploy("push", "model-001", "a model").exit_code == 0
    first.stop()  # and again with lower limits, its store kept
    agent = agent_factory(like=first, args=("--max-blob-bytes", str(1 << 20), "--max-files", "40"))
    configure_tier("public", agent, "Staging")

    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "big2.bin").write_bytes(os.urandom(3 << 20))
    res = deploy("push", "big-001", "too big")
    assert res.exit_code == 2, res.output
    assert (
        "big.bin (3.0 MiB), big2.bin (3.0 MiB): over Staging's limit of 1.0 MiB for one file "
        "(ashat agent --max-blob-bytes there); nothing was sent"
    ) in res.stderr  # not model.bin, which PUBLIC holds
    assert deploy_json("status", "big-001")[1]["deployment"]["state"] == "failed"
    assert answers_by_status(agent.url, "POST", "/v1/blobs/pack") == {}
    assert current(agent) == "model-001"

    (root / "big.bin").unlink()
    (root / "big2.bin").unlink()
    for i in range(40):
        (root / f"part{i:02d}.txt").write_text(str(i))
    code, out = deploy_json("push", "many-001", "too many")
    assert (
        code == 2 and "over Staging's limit of 40 (ashat agent --max-files there)" in out["error"]
    )
    for i in range(40):
        (root / f"part{i:02d}.txt").unlink()
    (root / "VERSION").write_text("1.0.1\n")
    code, out = deploy_json("push", "model-002", "the model unchanged")  # 2 MiB, held
    assert code == 0 and out["blobs_sent"] == 1 and current(agent) == "model-002", out


def _never_healthy(root: Path) -> None:
    """The project's next release: an app whose health path never answers (2 s to try)."""
    toml = (root / "ashat.toml").read_text()
    (root / "ashat.toml").write_text(
        toml.replace('health_path = "/healthz"', 'health_path = "/nope"\nhealth_timeout_s = 2')
    )


def test_app_that_never_gets_healthy_fails_and_public_stays(
    agent_factory: Any, hello_project: Any
) -> None:
    agent = agent_factory()
    root = hello_project(agent)
    assert deploy("push", "hello-001", "good").exit_code == 0
    _never_healthy(root)
    code, out = deploy_json("push", "hello-002", "broken health path")
    assert code == 1 and "healthy" in out["error"]
    assert deploy_json("status", "hello-002")[1]["deployment"]["state"] == "failed"
    assert current(agent) == "hello-001"


def test_existing_id_is_refused_with_exit_3(agent_factory: Any, hello_project: Any) -> None:
    agent = agent_factory()
    hello_project(agent)
    assert deploy("push", "hello-001", "x").exit_code == 0
    res = deploy("push", "hello-001", "again")
    assert res.exit_code == 3 and "already exists" in res.stderr


def test_rollback_restores_the_previous_release_and_its_app(
    agent_factory: Any, hello_project: Any
) -> None:
    agent = agent_factory()
    root = hello_project(agent)
    assert deploy("push", "hello-001", "one").exit_code == 0
    (root / "VERSION").write_text("2.0.0\n")
    assert deploy("push", "hello-002", "two").exit_code == 0
    code, out = deploy_json("rollback", "hello-002", "--reason", "bad release")
    assert code == 0 and out["restored"] == "hello-001" and out["state"] == "rolled_back"
    assert current(agent) == "hello-001"
    with agent.client() as c:
        port = c.health()["app"]["port"]
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["version"] == "1.0.0"
    log = deploy("log", "hello-002").stdout
    assert "public_restored=hello-001" in log and "bad release" in log
    assert deploy("rollback", "hello-002").exit_code == 3  # terminal now


def test_cancel_puts_public_back_on_the_release_before(
    agent_factory: Any, hello_project: Any
) -> None:
    """Issue 19, 7: `deploy cancel` of a pushed release left PUBLIC running it."""
    agent = agent_factory()
    root = hello_project(agent)
    assert deploy("push", "hello-001", "one").exit_code == 0
    (root / "VERSION").write_text("2.0.0\n")
    assert deploy("push", "hello-002", "two").exit_code == 0
    assert current(agent) == "hello-002"
    res = deploy("cancel", "hello-002", "--reason", "wrong build")
    assert res.exit_code == 0, res.output
    assert "PUBLIC restored to hello-001" in res.stdout
    assert current(agent) == "hello-001"
    log = deploy("log", "hello-002").stdout
    assert "public.restored" in log and "deployment.cancelled" in log


def test_a_cancel_that_could_not_reach_public_puts_it_back_when_run_again(
    agent_factory: Any, hello_project: Any
) -> None:
    """A review cancelled a release while PUBLIC was down ("it may still run hello-002"):
    once PUBLIC was back, every re-run was refused (cancelled already) and PUBLIC served
    the cancelled release for good. The re-run now puts PUBLIC back."""
    from urllib.parse import urlsplit

    agent = agent_factory()
    root = hello_project(agent)
    assert deploy("push", "hello-001", "one").exit_code == 0
    (root / "VERSION").write_text("2.0.0\n")
    assert deploy("push", "hello-002", "two").exit_code == 0
    port = urlsplit(agent.url).port
    agent.stop()
    res = deploy("cancel", "hello-002", "--reason", "wrong build")
    assert res.exit_code == 0 and "it may still run hello-002" in res.stdout, res.output
    res = deploy("cancel", "hello-002")  # PUBLIC still away: said as such
    assert res.exit_code == 4 and "cannot reach" in res.output, res.output
    agent = agent_factory(like=agent, port=port)
    assert current(agent) == "hello-002"
    res = deploy("cancel", "hello-002")
    assert res.exit_code == 0 and "PUBLIC restored to hello-001" in res.stdout, res.output
    assert current(agent) == "hello-001"
    res = deploy("cancel", "hello-002")  # nothing left to do
    assert res.exit_code == 3 and "hello-002 is cancelled" in res.output, res.output


def test_cancel_of_the_first_push_says_public_had_nothing_before(
    agent_factory: Any, hello_project: Any
) -> None:
    agent = agent_factory()
    hello_project(agent)
    assert deploy("push", "hello-001", "one").exit_code == 0
    code, out = deploy_json("cancel", "hello-001")
    assert code == 0 and out["deployment"]["state"] == "cancelled", out
    assert out["public"] == "PUBLIC ran nothing before hello-001: it serves it until the next push"
    assert current(agent) == "hello-001"


def test_push_from_a_git_ref_sends_exactly_the_committed_tree(
    agent_factory: Any, hello_project: Any
) -> None:
    agent = agent_factory()
    root = hello_project(agent)
    git = ["git", "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    (root / ".gitignore").write_text(".ashat/\n")
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], cwd=root, check=True)
    (root / "VERSION").write_text("uncommitted\n")
    code, out = deploy_json("push", "hello-git", "from git", "--git", "HEAD")
    assert code == 0, out
    manifest = json.loads((root / ".ashat" / "manifests" / "hello-git.json").read_text())
    assert manifest["source"]["kind"] == "git" and len(manifest["source"]["commit"]) == 40
    assert (agent.data / "current" / "VERSION").read_text() == "1.0.0\n"


def test_push_over_https_with_ca_cert(agent_factory: Any, hello_project: Any) -> None:
    agent = agent_factory(tls=True)
    hello_project(agent)
    code, out = deploy_json("push", "hello-tls", "over TLS")
    assert code == 0, out
    assert current(agent) == "hello-tls"


def test_a_plain_http_server_gets_a_tls_context_that_trusts_no_certificate(
    agent_factory: Any,
) -> None:
    """Loading the system's CAs took each command ~25 ms (issue 20); an http:// server is
    never spoken TLS to, so its client holds a context that would refuse any certificate."""
    agent = agent_factory(tls=True)  # a real TLS server, its certificate by a CA of its own
    plain = outgoing.tls_for("http://127.0.0.1:1", None, "CA certificate")
    assert isinstance(plain, ssl.SSLContext) and plain.get_ca_certs() == []
    assert plain is outgoing.tls_for("HTTP://example.com", "", "CA certificate")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{agent.url}/v1/health", verify=plain)
    assert outgoing.tls_for(agent.url, None, "x") is outgoing.system_tls()
    by_ca = outgoing.tls_for(agent.url, str(agent.ca_cert), "CA certificate")
    assert httpx.get(f"{agent.url}/v1/health", verify=by_ca).status_code == 200
    with pytest.raises(InvalidInput, match="cannot load --ca-cert"):
        outgoing.tls_for("http://127.0.0.1:1", "/nonexistent.pem", "--ca-cert")


def test_push_through_the_real_console_script(agent_factory: Any, hello_project: Any) -> None:
    agent = agent_factory()
    root = hello_project(agent)
    res = subprocess.run(
        [sys.executable, "-m", "ashat.cli.deploy", "push", "hello-sub", "via a process"],
        cwd=root, capture_output=True, text=True, timeout=120, env=os.environ,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "ASHAT Deployment Workflow Initiated" in res.stdout
    assert "Pushed hello-sub" in res.stdout
    assert agent.token not in res.stdout + res.stderr


def test_a_release_id_the_agent_holds_with_other_content_is_a_conflict_exit_3(
    agent_factory: Any, hello_project: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the agent's 409 refusals (here ReleaseConflict) reached the user as exit 1;
    a conflict is exit 3, with the agent's own kind."""
    agent = agent_factory()
    hello_project(agent)
    assert deploy("push", "hello-001", "from one checkout").exit_code == 0
    other = enter_hello_project(tmp_path / "other", monkeypatch, agent.key_path)
    configure_tier("public", agent, "Staging")
    (other / "VERSION").write_text("9.9.9\n")  # another tree under the same id
    code, out = deploy_json("push", "hello-001", "from another checkout")
    assert code == 3, out
    assert out["kind"] == "conflict" and "already staged" in out["error"], out


def test_a_failed_prepare_hook_shows_its_cause(agent_factory: Any, hello_project: Any) -> None:
    """Issue 17: a failed prepare printed only "failed with exit status 1", while the reason
    sat in a log on the server; the agent sends the log's tail, and deploy prints it."""
    agent = agent_factory()
    root = hello_project(agent)
    toml = root / "ashat.toml"
    toml.write_text(
        toml.read_text().replace(
            'health_path = "/healthz"',
            'health_path = "/healthz"\n'
            'prepare = "python3 -c \\"raise KeyError(\'DJANGO_SECRET_KEY\')\\""',
        )
    )
    res = deploy("push", "hello-001", "needs a secret")
    assert res.exit_code == 1, res.output
    assert "prepare hook" in res.stderr and "failed with exit status 1" in res.stderr
    assert "KeyError: 'DJANGO_SECRET_KEY'" in res.stderr, res.stderr  # the log's tail


def test_servers_check_says_when_the_token_is_wrong(
    agent_factory: Any, hello_project: Any, tmp_path: Path
) -> None:
    """Issue 18: ``deploy servers --check`` said "reachable" with a wrong token, and the next
    push failed at upload. It asks an authenticated route too, and says which is wrong."""
    agent = agent_factory()
    hello_project(agent)
    res = deploy("servers", "--check")
    assert res.exit_code == 0 and "reachable" in res.output, res.output
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    res = deploy("configure", "public", agent.url, "Staging", "--token-file", str(wrong))
    assert res.exit_code == 0, res.output
    res = deploy("servers", "--check")
    assert res.exit_code == 4, res.output
    assert "reachable, but it refused our token" in res.output, res.output
    code, out = deploy_json("servers", "--check")
    assert code == 4
    public = out["servers"][0]
    assert public["reachable"] is True and public["authorized"] is False, public


def test_a_taken_id_is_refused_in_one_line_before_anything_else(
    agent_factory: Any, hello_project: Any
) -> None:
    """Issue 18: a re-push of an existing id was refused only after "Deployment Plan: 4
    steps" and "push failed; PUBLIC keeps its previous release"."""
    agent = agent_factory()
    hello_project(agent)
    assert deploy("push", "hello-001", "first").exit_code == 0
    res = deploy("push", "hello-001", "again")
    assert res.exit_code == 3, res.output
    assert res.stdout == "", res.stdout  # no plan, no steps
    assert res.stderr.strip().splitlines() == [
        "error: update id 'hello-001' already exists (state pushed); choose a new id"
    ]


HOOKS = """[app]
prepare = "test -n \\"$ASHAT_RELEASE_DIR\\" && echo prepared $ASHAT_RELEASE"
migrate = "echo up $ASHAT_RELEASE >> \\"$ASHAT_SHARED_DIR/schema.log\\""
rollback_migrate = "echo down $ASHAT_RELEASE >> \\"$ASHAT_SHARED_DIR/schema.log\\""
"""


def test_hooks_run_by_the_shell_migrate_once_and_migrate_back_on_rollback(
    agent_factory: Any, hello_project: Any
) -> None:
    """Issue 17, 2: prepare was not run by a shell ('&&' an argument), migrations only went
    forward, and a failing hook's cause stayed in a log on the server."""
    agent = agent_factory()
    root = hello_project(agent)
    toml = root / "ashat.toml"
    toml.write_text(toml.read_text().replace("[app]\n", HOOKS, 1))
    assert deploy("push", "hello-001", "one").exit_code == 0
    (root / "VERSION").write_text("2.0.0\n")
    assert deploy("push", "hello-002", "two").exit_code == 0
    schema = agent.data / "shared" / "schema.log"
    assert schema.read_text() == "up hello-001\nup hello-002\n"
    log = (agent.data / "logs" / "hello-002.log").read_text()
    assert "prepared hello-002" in log

    assert deploy("rollback", "hello-002", "--reason", "bad").exit_code == 0
    assert schema.read_text() == "up hello-001\nup hello-002\ndown hello-002\n"
    assert current(agent) == "hello-001"  # and hello-001 was not migrated again

    # A migration that fails: nothing switches, and its words reach deploy and status.
    toml.write_text(
        toml.read_text().replace(
            'migrate = "echo up', 'migrate = "echo KeyError: DJANGO_SECRET_KEY >&2; exit 3; echo', 1
        )
    )
    (root / "VERSION").write_text("3.0.0\n")
    res = deploy("push", "hello-003", "three")
    assert res.exit_code == 1, res.output
    assert "migrate hook" in res.stderr and "failed with exit status 3" in res.stderr
    assert "| KeyError: DJANGO_SECRET_KEY" in res.stderr
    assert current(agent) == "hello-001"
    status = deploy("status", "hello-003").stdout
    assert "Its log ends with:" in status and "KeyError: DJANGO_SECRET_KEY" in status
    _, out = deploy_json("status", "hello-003")
    assert "DJANGO_SECRET_KEY" in out["deployment"]["details"]["log_tail"]


def test_a_rollback_whose_target_does_not_come_up_migrates_forward_again(
    agent_factory: Any, hello_project: Any
) -> None:
    """A review: ``deploy rollback`` ran hello-002's ``rollback_migrate``, then hello-001
    did not come up; hello-002 kept serving on the schema migrated back, no longer counted
    as migrated (so never migrated again), and nothing said so. Its ``migrate`` now runs
    again, and it counts as migrated."""
    agent = agent_factory()
    root = hello_project(agent)
    toml = root / "ashat.toml"
    hooks = HOOKS.replace(  # prepare fails where the shared directory says so
        'prepare = "test -n \\"$ASHAT_RELEASE_DIR\\" && echo prepared $ASHAT_RELEASE"',
        'prepare = "test ! -e \\"$ASHAT_SHARED_DIR/broken-$ASHAT_RELEASE\\""',
    )
    assert hooks != HOOKS
    toml.write_text(toml.read_text().replace("[app]\n", hooks, 1))
    assert deploy("push", "hello-001", "one").exit_code == 0
    (root / "VERSION").write_text("2.0.0\n")
    assert deploy("push", "hello-002", "two").exit_code == 0
    shared = agent.data / "shared"
    (shared / "broken-hello-001").write_text("")
    res = deploy("rollback", "hello-002", "--reason", "bad")
    assert res.exit_code == 1, res.output
    schema = (shared / "schema.log").read_text()
    assert schema == "up hello-001\nup hello-002\ndown hello-002\nup hello-002\n", schema
    assert current(agent) == "hello-002"
    state = json.loads((agent.data / "state.json").read_text())
    assert state["migrated"][-1] == "hello-002", state["migrated"]
    # hello-001 mended: the rollback goes through, migrating back once more
    (shared / "broken-hello-001").unlink()
    assert deploy("rollback", "hello-002", "--reason", "bad").exit_code == 0
    assert (shared / "schema.log").read_text().endswith("up hello-002\ndown hello-002\n")
    assert current(agent) == "hello-001"


@pytest.mark.parametrize(
    ("crash", "verb", "schema", "now"),
    [  # a review of the two fixes above
        # the rollback's links moved, then the disk was full: hello-001 runs, migrated back
        ("switch.save:3:enospc", "rollback", "down hello-002\n", "hello-001"),
        # a push's links could not move after its migrate ran: undone, hello-001 runs on
        # its own schema
        ("switch.links:2:enospc", "push", "down hello-002\n", "hello-001"),
    ],
)
def test_a_switch_cut_short_leaves_the_release_that_runs_on_its_own_schema(
    agent_factory: Any, hello_project: Any, crash: str, verb: str, schema: str, now: str
) -> None:
    agent = agent_factory(env={"ASHAT_CRASH_AT": crash})
    root = hello_project(agent)
    toml = root / "ashat.toml"
    toml.write_text(toml.read_text().replace("[app]\n", HOOKS, 1))
    assert deploy("push", "hello-001", "one").exit_code == 0
    (root / "VERSION").write_text("2.0.0\n")
    res = deploy("push", "hello-002", "two")
    if verb == "rollback":
        assert res.exit_code == 0, res.output
        res = deploy("rollback", "hello-002", "--reason", "bad")
    assert res.exit_code != 0 and "No space left on device" in res.output, res.output
    log = (agent.data / "shared" / "schema.log").read_text()
    assert log == "up hello-001\nup hello-002\n" + schema, log
    assert current(agent) == now
    migrated = json.loads((agent.data / "state.json").read_text())["migrated"]
    assert migrated == ["hello-001"], migrated


def test_a_push_carries_its_tasks_and_a_project_can_require_one(
    agent_factory: Any, hello_project: Any
) -> None:
    """Issue 21, 1: a deployment could not be linked to a task."""
    agent = agent_factory()
    root = hello_project(agent)
    code, out = deploy_json(
        "push", "hello-001", "one", "--task", "SHOP-142", "--task", "acme/shop#9"
    )
    assert code == 0, out
    status = deploy("status", "hello-001").stdout
    assert "Tasks:       SHOP-142, acme/shop#9" in status
    _, data = deploy_json("status", "hello-001")
    assert [t["kind"] for t in data["deployment"]["details"]["tasks"]] == ["jira", "github"]
    assert "[SHOP-142, acme/shop#9]" in deploy("history").stdout

    res = deploy("push", "hello-002", "two", "--task", "acme/shop#x")
    assert res.exit_code == 2 and "is not a task reference" in res.stderr
    toml = root / "ashat.toml"
    toml.write_text(toml.read_text() + "\n[tasks]\nrequired = true\n")
    res = deploy("push", "hello-002", "two")
    assert res.exit_code == 2 and "[tasks] required = true" in res.stderr
    assert "Deployment Plan" not in res.stdout  # refused before anything
    assert deploy("status", "hello-002").exit_code == 2  # nothing recorded
    assert deploy("push", "hello-002", "two", "--task", "RT:4711").exit_code == 0


def test_trackers_hear_of_the_deployment_in_their_documented_shapes(
    agent_factory: Any, hello_project: Any, tmp_path: Path
) -> None:
    """Issue 21, 1: [[tasks.update]] comments on the deployment's Jira, GitHub and GitLab
    issues (and moves the Jira one on). Tested against a loopback server that checks each
    request against the tracker's documented REST API: method, path, auth headers, body."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str]] = []
    problems: list[str] = []

    class Trackers(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            h, p = self.headers, self.path
            if p == "/rest/api/3/issue/SHOP-142/comment":
                ok = (
                    h["Authorization"]
                    == "Basic " + base64.b64encode(b"bot@acme.com:jira-tok").decode()
                )
                doc = body.get("body", {})
                ok = ok and doc.get("type") == "doc" and doc.get("version") == 1
                ok = ok and doc["content"][0]["content"][0]["type"] == "text"
            elif p == "/rest/api/3/issue/SHOP-142/transitions":
                ok = body == {"transition": {"id": "31"}}
            elif p == "/repos/acme/shop/issues/9/comments":
                ok = h["Authorization"] == "Bearer gh-tok"
                ok = ok and h["Accept"] == "application/vnd.github+json"
                ok = (
                    ok
                    and h["X-GitHub-Api-Version"] == "2022-11-28"
                    and isinstance(body.get("body"), str)
                )
            elif p == "/api/v4/projects/g%2Fshop/issues/3/notes":
                ok = h["PRIVATE-TOKEN"] == "gl-tok" and isinstance(body.get("body"), str)
            else:
                ok = False
            if h.get("Content-Type") != "application/json":
                ok = False
            seen.append((p, json.dumps(body)))
            if not ok:
                problems.append(p)
            self.send_response(201 if ok else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trackers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    tokens = {}
    for name, value in (("jira", "jira-tok"), ("github", "gh-tok"), ("gitlab", "gl-tok")):
        tokens[name] = tmp_path / f"{name}.token"
        tokens[name].write_text(value + "\n")
    try:
        agent = agent_factory()
        root = hello_project(agent)
        toml = root / "ashat.toml"
        toml.write_text(
            toml.read_text()
            + f"""
[[tasks.update]]
tracker = "jira"
url = "{base}"
user = "bot@acme.com"
token_file = "{tokens["jira"]}"
events = ["pushed"]
transition = "31"

[[tasks.update]]
tracker = "github"
url = "{base}"
token_file = "{tokens["github"]}"
events = ["pushed"]

[[tasks.update]]
tracker = "gitlab"
url = "{base}"
token_file = "{tokens["gitlab"]}"
events = ["pushed"]
"""
        )
        res = deploy(
            "push", "hello-001", "one", "--task", "SHOP-142", "--task", "acme/shop#9",
            "--task", f"{base}/g/shop/-/issues/3", "--task", "RT:1",
            # an issue on another GitLab: the token is never sent there
            "--task", "https://gitlab.attacker.example/g/x/-/issues/1",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert problems == [], seen
        assert sorted(p for p, _ in seen) == [
            "/api/v4/projects/g%2Fshop/issues/3/notes",
            "/repos/acme/shop/issues/9/comments",
            "/rest/api/3/issue/SHOP-142/comment",
            "/rest/api/3/issue/SHOP-142/transitions",
        ]
        assert all("hello-001 is now pushed" in b for p, b in seen if "transitions" not in p)

        # A tracker that refuses: a notify.failed event, the deployment goes on.
        tokens["github"].write_text("wrong-token\n")
        (root / "VERSION").write_text("2.0.0\n")
        res = deploy("push", "hello-002", "two", "--task", "acme/shop#9")
        assert res.exit_code == 0, res.output
        log = deploy("log", "hello-002").stdout
        assert "notify.failed" in log and "github answered HTTP 404" in log
        assert "wrong-token" not in log
    finally:
        server.shutdown()
        server.server_close()


def test_a_rollback_killed_after_its_links_moved_keeps_the_release_rolled_back(
    agent_factory: Any, hello_project: Any
) -> None:
    """The agent was killed once a rollback's links had moved, before its state was written
    (crash point ``switch.done``): restarted, it served hello-001 but had forgotten that
    hello-002 was rolled back (nor that hello-001 came back by a rollback), so hello-002
    was offered again as the release to go back to, and a mainframe would take it again on
    its bearer token. The start now records the switch the links show."""
    from urllib.parse import urlsplit

    agent = agent_factory(env={"ASHAT_CRASH_AT": "switch.done:3:kill"})
    root = hello_project(agent)
    assert deploy("push", "hello-001", "one").exit_code == 0
    (root / "VERSION").write_text("2.0.0\n")
    assert deploy("push", "hello-002", "two").exit_code == 0
    res = deploy("rollback", "hello-002", "--reason", "bad")
    assert res.exit_code != 0, res.output
    agent.proc.wait(10)
    agent = agent_factory(like=agent, port=urlsplit(agent.url).port)
    assert current(agent) == "hello-001"
    state = json.loads((agent.data / "state.json").read_text())
    assert state["rolled_back"] == ["hello-002"], state
    assert [(a["update_id"], a["how"]) for a in state["history"]] == [
        ("hello-001", "activate"),
        ("hello-002", "activate"),
        ("hello-001", "rollback"),
    ], state["history"]
    assert (
        "current is hello-001, which the history did not say: recorded the rollback to "
        "it (hello-002 rolled back)" in agent.output()
    )
    res = deploy("rollback", "hello-002", "--reason", "bad")  # the deployment's record too
    assert res.exit_code == 0, res.output
    assert deploy_json("status", "hello-002")[1]["deployment"]["state"] == "rolled_back"


def test_a_killed_rollback_before_approval_records_public_put_back_when_run_again(
    agent_factory: Any, hello_project: Any
) -> None:
    """``deploy rollback`` of a release not yet approved was killed once PUBLIC had gone
    back to hello-001: the re-run saw PUBLIC not running hello-002, put nothing back and
    recorded ``public_restored: null`` with "nothing to restore there", as if PUBLIC had
    never served it. The re-run now records PUBLIC back on the release it ran before."""
    agent = agent_factory()
    root = hello_project(agent)
    assert deploy("push", "hello-001", "one").exit_code == 0
    (root / "VERSION").write_text("2.0.0\n")
    assert deploy("push", "hello-002", "two").exit_code == 0
    killed = subprocess.run(
        [sys.executable, "-m", "ashat.cli.deploy", "rollback", "hello-002", "--reason", "bad"],
        env={**os.environ, "ASHAT_CRASH_AT": "rollback.public:1"}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert current(agent) == "hello-001"
    code, out = deploy_json("rollback", "hello-002", "--reason", "bad")
    assert code == 0 and out["state"] == "rolled_back" and out["restored"] == "hello-001", out
    _, status = deploy_json("status", "hello-002")
    assert status["deployment"]["details"]["public_restored"] == "hello-001", status


def test_a_rollback_of_a_push_that_never_activated_records_nothing_put_back(
    agent_factory: Any, hello_project: Any
) -> None:
    """A review of the fix above: a push that failed before its activation (PUBLIC still
    on hello-001) was rolled back, and recorded "PUBLIC runs hello-001 again" with
    ``public_restored: hello-001``, as if it had served hello-002. Only a rollback this
    verb asked PUBLIC for counts as putting it back."""
    agent = agent_factory()
    root = hello_project(agent)
    assert deploy("push", "hello-001", "good").exit_code == 0
    _never_healthy(root)
    assert deploy_json("push", "hello-002", "broken")[0] == 1
    assert deploy_json("status", "hello-002")[1]["deployment"]["state"] == "failed"
    assert current(agent) == "hello-001"
    code, out = deploy_json("rollback", "hello-002", "--reason", "bad")
    assert code == 0 and out["restored"] is None, out
    details = deploy_json("status", "hello-002")[1]["deployment"]["details"]
    assert details["public_restored"] is None, details


def test_a_push_resumed_with_another_description_says_which_it_keeps(
    agent_factory: Any, hello_project: Any
) -> None:
    """A review: ``deploy push`` killed once it had recorded the deployment, run again with
    another description, kept the first one (its manifest was signed with it) and said
    nothing. It says so now."""
    agent = agent_factory()
    hello_project(agent)
    killed = subprocess.run(
        [sys.executable, "-m", "ashat.cli.deploy", "push", "hello-001", "first words"],
        env={**os.environ, "ASHAT_CRASH_AT": "push.recorded:1"}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    res = deploy("push", "hello-001", "second words")
    assert res.exit_code == 0, res.output
    assert (
        "resuming hello-001 (sequence 1), recorded with the description 'first words'; "
        "the one given now is not used" in res.output
    ), res.output
    assert deploy_json("status", "hello-001")[1]["deployment"]["description"] == "first words"
    res = deploy("push", "hello-002", "two")
    assert "deployment hello-002 recorded (sequence 2)" in res.output, res.output
