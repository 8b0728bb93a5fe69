"""Issue 17: the ALPHA side of shipped dependencies (bundle/wheels.py), the agent's reading
of ``app.environment``, and the ``[app]`` keys that ask for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ashat.agent.checks.base import Deadline
from ashat.agent.checks.security import walk
from ashat.agent.environments import EnvSpec
from ashat.bundle.errors import BundleError, ManifestInvalid
from ashat.bundle.wheels import LOCK_NAME, Target, build_wheelhouse, lock_text, pip_argv
from ashat.config import AppConfig
from ashat.errors import InvalidInput, OperationFailed
from support import make_wheel


@pytest.fixture
def house(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    found = tmp_path / "found"
    found.mkdir()
    make_wheel(found, "tinydep", "2.0", "WORD = 'tiny'\n", ())
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(found))
    return found


def test_the_wheelhouse_is_built_once_and_reused_while_the_file_is_unchanged(
    tmp_path: Path, house: Path
) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("tinydep==2.0\n")
    cache = tmp_path / "cache"
    first = build_wheelhouse(req, cache, Target())
    assert not first.reused and first.wheels == ("tinydep-2.0-py3-none-any.whl",)
    lock = (first.path / LOCK_NAME).read_text()
    assert "tinydep==2.0 --hash=sha256:" in lock
    again = build_wheelhouse(req, cache, Target())
    assert again.reused and again.path == first.path and again.lock_sha256 == first.lock_sha256
    req.write_text("tinydep==2.0  # a comment changes the key\n")
    third = build_wheelhouse(req, cache, Target())
    assert not third.reused and third.path != first.path
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.path.name, third.path.name])


def test_a_failed_pip_leaves_nothing_in_the_cache(tmp_path: Path, house: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("nosuchdep==1.0\n")
    with pytest.raises(OperationFailed) as e:
        build_wheelhouse(req, tmp_path / "cache", Target())
    assert "pip could not get the wheels of requirements.txt" in e.value.message
    assert "nosuchdep" in e.value.details["log_tail"]
    assert list((tmp_path / "cache").iterdir()) == []


def test_another_platform_downloads_binary_wheels_for_it(tmp_path: Path) -> None:
    argv = pip_argv(tmp_path / "r.txt", tmp_path / "out", Target("manylinux2014_x86_64", "3.11"))
    assert argv[argv.index("download") :][:2] == ["download", "--only-binary=:all:"]
    assert argv[argv.index("--platform") :][:2] == ["--platform", "manylinux2014_x86_64"]
    assert argv[argv.index("--python-version") :][:2] == ["--python-version", "3.11"]
    assert "wheel" in pip_argv(tmp_path / "r.txt", tmp_path / "out", Target())


def test_a_file_that_is_not_a_wheel_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "thing.tar.gz.whl"
    odd.write_bytes(b"x")
    with pytest.raises(InvalidInput, match="not a wheel"):
        lock_text([odd])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"requirements": "../outside.txt"}, "must be a path inside the project"),
        ({"requirements": "/etc/passwd"}, "must be a path inside the project"),
        ({"requirements": 3}, "must be a string"),
        ({"platform": "manylinux2014_x86_64"}, "which is not set"),
        ({"requirements": "r.txt", "platform": "Linux x86"}, "must look like"),
        ({"requirements": "r.txt", "python_version": "2.7"}, "must look like '3.11'"),
    ],
)
def test_bad_app_keys_are_refused_by_name(table: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        AppConfig.parse(table)


def test_the_agent_refuses_a_malformed_environment() -> None:
    assert EnvSpec.from_app({}) is None
    with pytest.raises(ManifestInvalid, match=r"app\.environment"):
        EnvSpec.from_app({"environment": {"lock": "x", "sha256": "nothex"}})
    with pytest.raises(InvalidInput):
        EnvSpec.from_app({"environment": {"lock": "../x", "sha256": "a" * 64}})
    with pytest.raises(ManifestInvalid, match=r"app\.python"):
        EnvSpec.from_app({"environment": {"lock": "x", "sha256": "a" * 64}, "python": "v/py"})


def test_the_security_scan_reads_the_lock_and_skips_the_wheels(tmp_path: Path) -> None:
    wheels = tmp_path / ".ashat" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / LOCK_NAME).write_text("jinja2==2.10 --hash=sha256:" + "a" * 64 + "\n")
    (wheels / "x.whl").write_text("AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnF\n")
    tree = walk(tmp_path, [], Deadline(10))
    assert tree.requirements_files == [".ashat/wheels/requirements.lock"]
    assert [(p.name, p.version) for p in tree.pins] == [("jinja2", "2.10")]
    assert tree.secrets == [] and ".ashat" in tree.environments
    assert os.path.exists(wheels / "x.whl")


def test_a_pyproject_ships_its_project_dependencies(tmp_path: Path, house: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\ndependencies = ["tinydep==2.0"]\n'
    )
    built = build_wheelhouse(tmp_path / "pyproject.toml", tmp_path / "cache", Target())
    assert built.wheels == ("tinydep-2.0-py3-none-any.whl",)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n')
    with pytest.raises(BundleError, match=r"no \[project\] dependencies"):
        build_wheelhouse(tmp_path / "pyproject.toml", tmp_path / "cache", Target())


def _pylock(wheel_sha: str, *more: str) -> str:
    return "\n".join(
        [
            'lock-version = "1.0"',
            'created-by = "test"',
            "[[packages]]",
            'name = "tinydep"',
            'version = "2.0"',
            f'wheels = [{{ name = "tinydep-2.0-py3-none-any.whl", hashes = {{ sha256 = "{wheel_sha}" }} }}]',  # noqa: E501
            "[[packages]]",
            'name = "winonly"',
            'version = "1.0"',
            "marker = \"sys_platform == 'win32'\"",
            f'wheels = [{{ name = "winonly-1.0-py3-none-win_amd64.whl", hashes = {{ sha256 = "{"1" * 64}" }} }}]',  # noqa: E501
            *more,
        ]
    )


def test_a_pylock_ships_the_packages_for_the_target_with_their_hashes(
    tmp_path: Path, house: Path
) -> None:
    """PEP 751: each package whose marker holds for the target, pinned with its hashes: a
    Windows-only package is left out on Linux, and a wheel that is not the locked bytes is
    refused by pip."""
    from ashat.bundle.build import hash_file
    from ashat.bundle.wheels import requirement_lines

    sha, _ = hash_file(str(house / "tinydep-2.0-py3-none-any.whl"))
    lock = tmp_path / "pylock.toml"
    lock.write_text(_pylock(sha))
    assert requirement_lines(lock, Target("manylinux2014_x86_64", "3.11")) == (
        f"tinydep==2.0 --hash=sha256:{sha}\n".encode()
    )
    assert b"winonly==1.0" in requirement_lines(lock, Target("win_amd64", "3.11"))
    built = build_wheelhouse(lock, tmp_path / "cache", Target())
    assert built.wheels == ("tinydep-2.0-py3-none-any.whl",)

    lock.write_text(_pylock("0" * 64))
    with pytest.raises(OperationFailed) as e:
        build_wheelhouse(lock, tmp_path / "cache2", Target())
    assert "HASH" in e.value.details["log_tail"].upper()

    lock.write_text(_pylock(sha) + '\n[[packages]]\nname = "local"\n')
    with pytest.raises(BundleError, match="package local has no version"):
        requirement_lines(lock, Target())
    lock.write_text(
        _pylock(sha) + '\n[[packages]]\nname = "git"\nversion = "1"\nvcs = { url = "x" }\n'
    )
    with pytest.raises(BundleError, match="package git comes from a vcs"):
        requirement_lines(lock, Target())
    lock.write_text(_pylock(sha) + '\n[[packages]]\nname = "bare"\nversion = "1"\n')
    with pytest.raises(BundleError, match="package bare lists no sha256 hash"):
        requirement_lines(lock, Target())


def test_a_uv_lock_ships_what_uv_export_pins(tmp_path: Path, house: Path) -> None:
    """uv.lock: uv (a test dependency) locks a project against the local wheels, then the
    push exports the lock with ``uv export --locked`` and builds its wheels; a lock out
    of step with pyproject.toml is refused, not shipped stale."""
    import shutil
    import subprocess

    uv = shutil.which("uv")
    assert uv is not None, "uv is in the [test] extra: pip install -e '.[test]'"
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\nrequires-python = ">=3.10"\n'
        'dependencies = ["tinydep==2.0"]\n'
    )
    subprocess.run(
        [uv, "lock", "--no-index", "--find-links", str(house), "--quiet"],
        cwd=tmp_path,
        check=True,
    )
    built = build_wheelhouse(tmp_path / "uv.lock", tmp_path / "cache", Target())
    assert built.wheels == ("tinydep-2.0-py3-none-any.whl",)
    (tmp_path / "pyproject.toml").write_text(
        (tmp_path / "pyproject.toml").read_text().replace("2.0", "3.0")
    )
    with pytest.raises(BundleError, match=r"uv export of uv\.lock failed"):
        build_wheelhouse(tmp_path / "uv.lock", tmp_path / "cache", Target())
