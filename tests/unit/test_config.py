"""ashat.toml parsing: good files load, wrong types are refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ashat.config import SIGNING_KEY_ENV, Config
from ashat.errors import InvalidInput

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello-service"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ashat.toml").write_text(text)
    return tmp_path


def test_hello_service_config_loads() -> None:
    cfg = Config.load(HELLO)
    assert cfg.app.run is not None and "{port}" in cfg.app.run
    assert cfg.app.health_path == "/healthz"
    assert "hello_service" in cfg.app.modules
    assert cfg.app.raw["name"] == "hello-service"


def test_missing_file_gives_empty_config(tmp_path: Path) -> None:
    cfg = Config.load(tmp_path)
    assert cfg.app.run is None and cfg.app.raw == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[app]\nrun = 3\n", "[app].run must be a string"),
        ("[app]\nrun = 'python3 serve.py'\n", "must contain {port}"),
        ("[app]\nhealth_path = 'healthz'\n", "must start with '/'"),
        ("[app]\nmodules = 'x'\n", "[app].modules must be a list"),
        ("[app]\nmodules = [1]\n", "[app].modules must be a list of module names"),
        ("[app]\nhealth_timeout_s = true\n", "not a boolean"),
        ("[app]\nhealth_timeout_s = -1\n", "health_timeout_s must be in"),
        ("app = 1\n", "[app] in ashat.toml must be a table"),
        ("[signing]\nkey = 5\n", "[signing].key must be a string"),
        ("[app\n", "is not valid TOML"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as e:
        Config.load(write(tmp_path, text))
    assert fragment in e.value.message
    assert e.value.exit_code == 2


def test_signing_key_from_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config.load(write(tmp_path, "[signing]\nkey = 'k/alpha.key'\n"))
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    assert cfg.signing_key_path() == tmp_path / "k" / "alpha.key"
    monkeypatch.setenv(SIGNING_KEY_ENV, "/elsewhere/a.key")
    assert cfg.signing_key_path() == Path("/elsewhere/a.key")


def test_no_signing_key_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    with pytest.raises(InvalidInput) as e:
        Config.load(tmp_path).signing_key_path()
    assert "ashat keys generate" in e.value.message
