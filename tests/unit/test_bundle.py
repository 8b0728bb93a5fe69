"""Building manifests from sources (ashat.bundle.build): directories with excludes, modes and
symlinks; exactly-the-commit git builds; the stat-keyed hash cache; .ashatignore rules."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ashat.bundle import build as build_mod
from ashat.bundle import hashcache
from ashat.bundle.build import Built, build_from_dir, build_from_git
from ashat.bundle.errors import BundleError, DuplicatePath, UnsafePath
from ashat.bundle.hashcache import HashCache, stat_key
from ashat.bundle.ignore import IgnoreRules
from ashat.bundle.manifest import FileEntry, parse_manifest

META: dict[str, Any] = {
    "update_id": "u-1",
    "sequence": 1,
    "description": "test",
    "app": {"name": "web"},
    "created_at": "2030-01-01T00:00:00+00:00",
}
PAST = time.time() - 3600  # well outside the racy window


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(root: Path, rel: str, data: bytes = b"x", mode: int = 0o644) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    p.chmod(mode)
    return p


def by_path(built: Built) -> dict[str, FileEntry]:
    return {e.path: e for e in built.manifest.files}


def check_blobs(built: Built) -> None:
    assert set(built.blobs) == built.manifest.blob_digests()
    for digest, path in built.blobs.items():
        assert sha(path.read_bytes()) == digest


# --- directories -----------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    write(root, "app.py", b"print('hi')\n")
    write(root, "bin/run", b"#!/bin/sh\nexec app\n", 0o755)
    write(root, "lib/deep/mod.py", b"x = 1\n", 0o640)
    write(root, "lib/deep/mod.pyc", b"\0compiled")
    write(root, "build/out.o", b"obj")
    write(root, "lib/build/keep.txt", b"a file named under a dir called build")
    write(root, "docs/guide.md", b"# guide")
    write(root, "docs/keep.txt", b"kept")
    write(root, "only-root.txt", b"ignored at root")
    write(root, "sub/only-root.txt", b"kept below root")
    write(root, "same-content.txt", b"print('hi')\n")
    write(root, ".git/HEAD", b"ref: refs/heads/main\n")
    write(root, ".ashat/state.db", b"state")
    write(root, ".ashatignore", b"# build outputs\n\n*.pyc\n/build/\ndocs/*.md\n/only-root.txt\n")
    (root / "empty-dir").mkdir()
    os.symlink("app.py", root / "current")
    os.symlink("../app.py", root / "bin/app-link")
    os.symlink("lib", root / "lib-link")  # a link to a directory: recorded, not followed
    return root


def test_build_from_dir(tree: Path) -> None:
    built = build_from_dir(tree, **META)
    m = built.manifest
    assert [e.path for e in m.files] == [
        ".ashatignore",
        "app.py",
        "bin/app-link",
        "bin/run",
        "current",
        "docs/keep.txt",
        "lib-link",
        "lib/build/keep.txt",
        "lib/deep/mod.py",
        "same-content.txt",
        "sub/only-root.txt",
    ]
    files = by_path(built)
    assert files["app.py"].sha256 == sha(b"print('hi')\n")
    assert files["app.py"].size == len(b"print('hi')\n")
    assert (files["app.py"].mode, files["bin/run"].mode) == (0o644, 0o755)
    assert files["lib/deep/mod.py"].mode == 0o640
    link = files["current"]
    assert (link.kind, link.target, link.sha256) == ("symlink", "app.py", sha(b"app.py"))
    assert files["bin/app-link"].target == "../app.py"
    assert files["lib-link"].kind == "symlink"
    assert m.source == {"kind": "dir", "path": str(tree.resolve())}
    assert (m.update_id, m.sequence, m.app, m.signatures) == ("u-1", 1, {"name": "web"}, ())
    # Two paths with one content are one blob; symlinks are not blobs.
    assert len(built.blobs) == len(m.files) - 3 - 1
    check_blobs(built)
    assert parse_manifest(m.to_bytes()) == m
    assert build_from_dir(tree, **META).manifest == m  # deterministic
    built.cleanup()  # a no-op for directories
    assert (tree / "app.py").exists()


def test_source_can_be_given(tree: Path) -> None:
    src = {"kind": "dir", "path": "elsewhere"}
    assert build_from_dir(tree, **META, source=src).manifest.source == src


@pytest.mark.parametrize(
    ("target", "setup"),
    [("../outside", None), ("/etc/passwd", None), ("d/../etc", "d")],
)
def test_symlink_escaping_the_tree_is_refused(
    tmp_path: Path, target: str, setup: str | None
) -> None:
    write(tmp_path, "a.txt")
    if setup:
        os.symlink(".", tmp_path / setup)  # harmless alone, escapes when chained
    os.symlink(target, tmp_path / "esc")
    with pytest.raises(UnsafePath, match="'esc'") as ei:
        build_from_dir(tmp_path, **META)
    assert ei.value.path == "esc"


def test_special_files_are_refused_unless_ignored(tmp_path: Path) -> None:
    write(tmp_path, "a.txt")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(BundleError, match="'pipe' is a fifo"):
        build_from_dir(tmp_path, **META)
    write(tmp_path, ".ashatignore", b"pipe\n")
    assert "pipe" not in by_path(build_from_dir(tmp_path, **META))


def test_names_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "README")
    write(tmp_path, "readme")
    with pytest.raises(DuplicatePath, match="case"):
        build_from_dir(tmp_path, **META)


def test_unsafe_file_names_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "bad\nname")
    with pytest.raises(UnsafePath):
        build_from_dir(tmp_path, **META)


def test_bad_ignore_files(tmp_path: Path) -> None:
    write(tmp_path, "a")
    write(tmp_path, ".ashatignore", b"*.log\n!keep.log\n")
    with pytest.raises(BundleError, match="line 2"):
        build_from_dir(tmp_path, **META)
    write(tmp_path, ".ashatignore", b"\xff\xfe")
    with pytest.raises(BundleError, match="UTF-8"):
        build_from_dir(tmp_path, **META)
    (tmp_path / ".ashatignore").unlink()
    os.symlink("/etc/hostname", tmp_path / ".ashatignore")
    with pytest.raises(BundleError, match="regular file"):
        build_from_dir(tmp_path, **META)
    (tmp_path / ".ashatignore").unlink()
    (tmp_path / ".ashatignore").mkdir()
    with pytest.raises(BundleError, match="regular file"):
        build_from_dir(tmp_path, **META)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        build_from_dir(tmp_path / "missing", **META)


def test_invalid_metadata_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a")
    with pytest.raises(BundleError):
        build_from_dir(tmp_path, **{**META, "update_id": "Not Valid"})
    with pytest.raises(BundleError):
        build_from_dir(tmp_path, **{**META, "created_at": "2030-01-01"})


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "ignored"),
    [
        ("*.pyc", "a.pyc", False, True),
        ("*.pyc", "deep/er/a.pyc", False, True),
        ("*.pyc", "a.py", False, False),
        ("build/", "build", True, True),
        ("build/", "x/build", True, True),
        ("build/", "build", False, False),  # a file named build
        ("/build", "build", False, True),
        ("/build", "x/build", True, False),
        ("docs/*.md", "docs/a.md", False, True),
        ("docs/*.md", "x/docs/a.md", False, False),
        ("**/tmp", "tmp", True, True),
        ("**/tmp", "a/b/tmp", True, True),
        ("# comment", "# comment", False, False),
        ("  spaced.txt  ", "spaced.txt", False, True),
        ("/", "anything", True, False),
    ],
)
def test_ignore_rules(pattern: str, path: str, is_dir: bool, ignored: bool) -> None:
    assert IgnoreRules.parse(pattern + "\n").matches(path, is_dir) is ignored


def test_ignore_rules_exclude_whole_paths_for_flat_listings() -> None:
    rules = IgnoreRules.parse("cache/\n*.log\n")
    assert rules.excludes(".git/config", False)
    assert rules.excludes(".ashat", True)
    assert not rules.excludes("sub/.git/config", False)  # only at the root
    assert rules.excludes("cache/a/b.bin", False)  # through an ignored parent
    assert rules.excludes("x/y.log", False)
    assert not rules.excludes("x/y.txt", False)


# --- the hash cache --------------------------------------------------------------------


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls: list[str] = []
    real = build_mod.hash_file

    def counting(path: str) -> tuple[str, int]:
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(build_mod, "hash_file", counting)
    yield calls


def aged(root: Path, names: list[str], when: float = PAST) -> None:
    for n in names:
        os.utime(root / n, (when, when))


def test_cache_skips_rehashing_unchanged_files(tmp_path: Path, hash_calls: list[str]) -> None:
    root, cache = tmp_path / "src", tmp_path / "cache" / "hashes.json"
    for n in ("a", "b", "c"):
        write(root, n, n.encode() * 10)
    aged(root, ["a", "b", "c"])
    first = build_from_dir(root, **META, cache_path=cache)
    assert sorted(hash_calls) == ["a", "b", "c"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    stored = json.loads(cache.read_bytes())
    assert stored["root"] == str(root.resolve())
    assert set(stored["files"]) == {"a", "b", "c"}

    hash_calls.clear()
    second = build_from_dir(root, **META, cache_path=cache)
    assert hash_calls == []
    assert second.manifest == first.manifest

    # Change one file's content and size: only it is read again.
    write(root, "b", b"changed!")
    aged(root, ["b"], PAST + 10)
    third = build_from_dir(root, **META, cache_path=cache)
    assert hash_calls == ["b"]
    assert by_path(third)["b"].sha256 == sha(b"changed!")


def test_cache_notices_a_replaced_file_with_the_same_size_and_mtime(
    tmp_path: Path, hash_calls: list[str]
) -> None:
    root, cache = tmp_path / "src", tmp_path / "hashes.json"
    write(root, "a", b"aaaa")
    aged(root, ["a"])
    build_from_dir(root, **META, cache_path=cache)
    # Same size, same mtime, new inode (how editors save: write a temp file, rename it over).
    write(root, "a.tmp", b"bbbb")
    aged(root, ["a.tmp"])
    os.replace(root / "a.tmp", root / "a")
    hash_calls.clear()
    m = build_from_dir(root, **META, cache_path=cache).manifest
    assert hash_calls == ["a"]
    assert by_path_m(m)["a"] == sha(b"bbbb")


def by_path_m(m: Any) -> dict[str, str]:
    return {e.path: e.sha256 for e in m.files}


@pytest.mark.parametrize("how", ["rewritten in place", "deleted and made again"])
def test_cache_notices_a_file_changed_with_its_size_and_mtime_kept(
    tmp_path: Path, hash_calls: list[str], how: str
) -> None:
    # touch -r, cp -p, an archive extracted with its times, a SOURCE_DATE_EPOCH build: the
    # same size and mtime, and (in place, or on the inode ext4 hands straight back) the same
    # inode. The cache was keyed on those three and pushed the old digest.
    root, cache = tmp_path / "src", tmp_path / "hashes.json"
    write(root, "version.txt", b"1.0.1")
    aged(root, ["version.txt"])
    assert by_path_m(build_from_dir(root, **META, cache_path=cache).manifest) == {
        "version.txt": sha(b"1.0.1")
    }
    if how == "deleted and made again":
        (root / "version.txt").unlink()
    time.sleep(0.01)  # a ctime tick
    write(root, "version.txt", b"1.0.2")
    aged(root, ["version.txt"])
    hash_calls.clear()
    m = build_from_dir(root, **META, cache_path=cache).manifest
    assert by_path_m(m) == {"version.txt": sha(b"1.0.2")}
    assert hash_calls == ["version.txt"]


def test_racy_is_judged_from_when_the_cache_was_opened_not_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file written a second before the push, hashed, then rewritten within its mtime tick
    # (a coarse filesystem) while the rest of a big tree was hashed for 3 s: judged against
    # the moment of saving, its mtime looked 4 s old, and it was stored as clean.
    root = tmp_path / "src"
    write(root, "a", b"old!")
    opened = time.time_ns()
    st = (root / "a").stat()
    os.utime(root / "a", ns=(st.st_atime_ns, opened - 1_000_000_000))
    cache = HashCache(tmp_path / "hashes.json", str(root))
    cache.opened_ns = opened
    cache.put("a", stat_key((root / "a").stat()), sha(b"old!"))
    monkeypatch.setattr(hashcache.time, "time_ns", lambda: opened + 3_000_000_000)
    cache.save()
    assert json.loads((tmp_path / "hashes.json").read_bytes())["files"] == {}


def test_racy_fresh_files_are_not_cached(tmp_path: Path, hash_calls: list[str]) -> None:
    root, cache = tmp_path / "src", tmp_path / "hashes.json"
    write(root, "old")
    write(root, "fresh")  # mtime is now: within the racy window
    aged(root, ["old"])
    build_from_dir(root, **META, cache_path=cache)
    assert set(json.loads(cache.read_bytes())["files"]) == {"old"}
    hash_calls.clear()
    build_from_dir(root, **META, cache_path=cache)
    assert hash_calls == ["fresh"]


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"version": 99, "root": "x", "files": {}}',
        b'{"version": 2, "root": "/elsewhere", "files": {"a": [4, 0, 0, 0, 0, "00"]}}',
        b"\xff" * 10,
    ],
)
def test_corrupt_or_foreign_cache_is_ignored(
    tmp_path: Path, hash_calls: list[str], content: bytes
) -> None:
    root, cache = tmp_path / "src", tmp_path / "hashes.json"
    write(root, "a", b"aaaa")
    aged(root, ["a"])
    cache.write_bytes(content)
    m = build_from_dir(root, **META, cache_path=cache).manifest
    assert hash_calls == ["a"] and by_path_m(m)["a"] == sha(b"aaaa")
    assert json.loads(cache.read_bytes())["version"] == 2  # rewritten


def test_cache_entries_with_a_wrong_shape_are_skipped(
    tmp_path: Path, hash_calls: list[str]
) -> None:
    root, cache = tmp_path / "src", tmp_path / "hashes.json"
    write(root, "a", b"aaaa")
    aged(root, ["a"])
    st = (root / "a").stat()
    key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    files = {"a": [*key, "NOT-A-DIGEST"], "b": [*key[:3], sha(b"aaaa")]}
    cache.write_text(json.dumps({"version": 2, "root": str(root), "files": files}))
    assert by_path_m(build_from_dir(root, **META, cache_path=cache).manifest)["a"] == sha(b"aaaa")
    assert hash_calls == ["a"]


def test_unwritable_cache_does_not_fail_the_build(tmp_path: Path) -> None:
    write(tmp_path / "src", "a")
    blocker = tmp_path / "file"
    blocker.write_text("")
    built = build_from_dir(tmp_path / "src", **META, cache_path=blocker / "cache.json")
    assert [e.path for e in built.manifest.files] == ["a"]


# --- git -------------------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    write(r, "app.py", b"print('v1')\n")
    write(r, "bin/run", b"#!/bin/sh\n", 0o755)
    write(r, "secret.txt", b"export-ignore must not drop me\n")
    write(r, "version.txt", b"$Format:%H$\n")
    write(r, ".gitattributes", b"secret.txt export-ignore\nversion.txt export-subst\n")
    write(r, "cache/big.bin", b"ignored by .ashatignore")
    write(r, ".ashatignore", b"cache/\n")
    os.symlink("app.py", r / "current")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "v1")
    return r


@needs_git
def test_build_from_git_packs_exactly_the_commit(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    # Uncommitted changes and untracked files are not part of the commit.
    write(repo, "app.py", b"print('dirty')\n")
    write(repo, "untracked.txt", b"new")
    with build_from_git(repo, "main", **META) as built:
        m = built.manifest
        assert m.source == {"kind": "git", "commit": head, "ref": "main"}
        files = by_path(built)
        assert sorted(files) == [
            ".ashatignore",
            ".gitattributes",
            "app.py",
            "bin/run",
            "current",
            "secret.txt",
            "version.txt",
        ]
        assert files["app.py"].sha256 == sha(b"print('v1')\n")
        # Raw blobs: no export-ignore, no export-subst (unlike `git archive`).
        assert files["version.txt"].sha256 == sha(b"$Format:%H$\n")
        assert (files["app.py"].mode, files["bin/run"].mode) == (0o644, 0o755)
        assert (files["current"].kind, files["current"].target) == ("symlink", "app.py")
        check_blobs(built)
        assert parse_manifest(m.to_bytes()) == m
        tree = built.tree
        assert tree.is_dir() and tree != repo
    assert not tree.exists()  # the with block cleaned up


@needs_git
def test_git_and_dir_builds_agree_on_a_clean_checkout(repo: Path) -> None:
    with build_from_git(repo, "HEAD", **META) as g:
        from_git = {e.path: (e.sha256, e.kind) for e in g.manifest.files}
    d = build_from_dir(repo, **META).manifest
    assert {e.path: (e.sha256, e.kind) for e in d.files} == from_git


@needs_git
def test_git_build_by_sha_and_of_an_older_commit(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    write(repo, "app.py", b"print('v2')\n")
    git(repo, "commit", "-q", "-am", "v2")
    with build_from_git(repo, first, **META) as built:
        assert by_path(built)["app.py"].sha256 == sha(b"print('v1')\n")
        assert built.manifest.source["commit"] == first
    with build_from_git(repo, "main~1", **META) as built:
        assert built.manifest.source == {"kind": "git", "commit": first, "ref": "main~1"}


@needs_git
@pytest.mark.parametrize("ref", ["no-such-branch", "deadbeef" * 5, "-rf", "", "main:app.py"])
def test_bad_git_ref_is_refused(repo: Path, ref: str) -> None:
    with pytest.raises(BundleError, match="ref"):
        build_from_git(repo, ref, **META)


@needs_git
def test_not_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(BundleError, match="not a git repository"):
        build_from_git(plain, "HEAD", **META)


@needs_git
def test_submodules_are_refused_unless_ignored(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},vendor/lib")
    git(repo, "commit", "-q", "-m", "submodule")
    with pytest.raises(BundleError, match="'vendor/lib' is a git submodule"):
        build_from_git(repo, "HEAD", **META)
    write(repo, ".ashatignore", b"cache/\nvendor/\n")
    git(repo, "commit", "-q", "-am", "ignore vendor")
    with build_from_git(repo, "HEAD", **META) as built:
        assert not any(e.path.startswith("vendor") for e in built.manifest.files)


@needs_git
def test_committed_ignore_file_must_be_a_regular_file(repo: Path) -> None:
    (repo / ".ashatignore").unlink()
    os.symlink("app.py", repo / ".ashatignore")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "link")
    with pytest.raises(BundleError, match="regular file"):
        build_from_git(repo, "HEAD", **META)


@needs_git
def test_committed_symlink_escaping_is_refused(repo: Path) -> None:
    os.symlink("../../etc/passwd", repo / "esc")
    git(repo, "add", "esc")
    git(repo, "commit", "-q", "-m", "evil")
    with pytest.raises(UnsafePath, match="'esc'"):
        build_from_git(repo, "HEAD", **META)


@needs_git
def test_failed_git_build_leaves_no_temp_tree(repo: Path) -> None:
    os.symlink("../x", repo / "esc")
    git(repo, "add", "esc")
    git(repo, "commit", "-q", "-m", "evil")
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("ashat-git-*"))
    with pytest.raises(UnsafePath):
        build_from_git(repo, "HEAD", **META)
    assert set(tmp.glob("ashat-git-*")) == before


def test_a_cache_file_read_again_unchanged_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hash_calls: list[str]
) -> None:
    """The warm helper reads a project's cache after each push, and the next push's child
    takes what it read if the file is still that one (issue 20); a file written since, even
    at the same size, is read anew."""
    root, cache = tmp_path / "src", tmp_path / "hashes.json"
    for n in ("a", "b"):
        write(root, n, n.encode() * 10)
    aged(root, ["a", "b"])
    build_from_dir(root, **META, cache_path=cache)
    HashCache(cache, str(root.resolve()))  # what the helper does after a push
    parsed: list[bytes] = []
    real = hashcache.json.loads

    def loads(b: Any) -> Any:  # json's: the cache's reads are the ones of its bytes
        if isinstance(b, bytes) and b.startswith(b'{"version"'):
            parsed.append(b)
        return real(b)

    monkeypatch.setattr(hashcache.json, "loads", loads)
    hash_calls.clear()
    build_from_dir(root, **META, cache_path=cache)
    assert parsed == [] and hash_calls == []  # neither the cache nor a file read again
    # the same bytes but for one digest, written as every cache is (a new file renamed over
    # it): read anew, and believed
    stored = json.loads(cache.read_bytes())
    stored["files"]["a"][5] = sha(b"not a")
    (tmp_path / "new.json").write_text(json.dumps(stored))
    os.replace(tmp_path / "new.json", cache)
    parsed.clear()
    m = build_from_dir(root, **META, cache_path=cache).manifest
    assert len(parsed) == 1 and by_path_m(m)["a"] == sha(b"not a")


def test_a_build_after_the_manifest_pushed_last_was_read_reuses_its_entries(
    tmp_path: Path,
) -> None:
    """A build takes the entries of the manifest read last where they are the same path,
    digest, size and mode (the objects and their JSON: ~20 ms of a 2,000-file build, issue
    20); what it makes is what a build that read nothing makes."""
    root = tmp_path / "src"
    for i in range(30):
        write(root, f"d{i % 3}/f{i}", str(i).encode(), 0o644 if i % 2 else 0o755)
    first = build_from_dir(root, **META).manifest
    read = parse_manifest(first.to_bytes())  # as the helper's read-ahead
    write(root, "d0/f0", b"changed")  # and one new entry, one gone
    write(root, "d1/new", b"new")
    os.unlink(root / "d2/f2")
    second = build_from_dir(root, **META).manifest
    old = {e.path: e for e in read.files}
    for e in second.files:
        shared = e.path in old and old[e.path] == e
        assert (e is old.get(e.path)) is shared, e.path
    assert sum(e is old.get(e.path) for e in second.files) == 28
    parse_manifest(build_from_dir(tmp_path / "src", **{**META, "description": "o"}).manifest
                   .to_bytes())  # fmt: skip
    write(tmp_path / "other", "x")
    parse_manifest(build_from_dir(tmp_path / "other", **META).manifest.to_bytes())  # forgets
    again = build_from_dir(root, **META).manifest
    assert not any(e is old.get(e.path) for e in again.files)
    assert again.to_bytes() == second.to_bytes() and again.digest() == second.digest()
