"""Ed25519 key files (ashat.bundle.keys): generation, loading, and clear refusals that
never echo key material."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ashat.bundle.errors import BundleError, KeyFileError
from ashat.bundle.keys import (
    PublicKey,
    SigningKey,
    generate_keypair,
    keyid,
    load_private_key,
    load_public_key,
)


def test_generate_writes_private_0600_and_one_line_pub(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair("alpha", tmp_path / "keys")
    assert key_path == tmp_path / "keys" / "alpha.key"
    assert pub_path == tmp_path / "keys" / "alpha.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    line = pub_path.read_text()
    assert line.endswith(" alpha\n") and line.count("\n") == 1
    prefix, b64, name = line.split()
    assert (prefix, name) == ("ashat-ed25519", "alpha")
    assert len(base64.b64decode(b64)) == 32
    # No temp files left behind by the atomic writes.
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["alpha.key", "alpha.pub"]

    sk = load_private_key(key_path)
    pk = load_public_key(pub_path)
    assert sk.public == pk
    assert sk.keyid == pk.keyid == hashlib.sha256(base64.b64decode(b64)).hexdigest()[:16]
    assert keyid(pk) == pk.keyid
    assert pk.verify(sk.sign(b"hello"), b"hello")
    assert not pk.verify(sk.sign(b"hello"), b"hellO")


def test_generate_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    key_path, _ = generate_keypair("alpha", tmp_path)
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keypair("alpha", tmp_path)
    assert key_path.read_bytes() == before


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "a b", "x" * 65, "é"])
def test_generate_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError):
        generate_keypair(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist") as ei:
        load_private_key(tmp_path / "nope.key")
    assert ei.value.path == str(tmp_path / "nope.key")
    with pytest.raises(KeyFileError, match="does not exist"):
        load_public_key(tmp_path / "nope.pub")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path)  # a directory


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_bad_private_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(_write(tmp_path, "garbage.key", b"hello\n"))
    with pytest.raises(KeyFileError, match="larger than"):
        load_private_key(_write(tmp_path, "big.key", b"x" * 100_000))

    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFileError, match="not Ed25519") as ei:
        load_private_key(_write(tmp_path, "ec.key", pem))
    assert "BEGIN" not in str(ei.value)

    enc = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(KeyFileError, match="encrypted"):
        load_private_key(_write(tmp_path, "enc.key", enc))


def test_bad_public_key_files(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair("k", tmp_path)
    b64 = pub_path.read_text().split()[1]
    cases = {
        "wrong-type.pub": f"ssh-ed25519 {b64} k\n",
        "bad-b64.pub": "ashat-ed25519 !!!notbase64 k\n",
        "short.pub": f"ashat-ed25519 {base64.b64encode(b'x' * 31).decode()} k\n",
        "empty.pub": "",
        "two-lines.pub": f"ashat-ed25519 {b64} k\nashat-ed25519 {b64} k\n",
        "binary.pub": "\udcff",
    }
    for name, text in cases.items():
        p = _write(tmp_path, name, text.encode("utf-8", "surrogateescape"))
        with pytest.raises(KeyFileError) as ei:
            load_public_key(p)
        assert name in ei.value.message
        assert b64 not in ei.value.message  # never echo key material

    with pytest.raises(KeyFileError, match="private key"):
        load_public_key(key_path)

    ec_pub = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="not Ed25519"):
        load_public_key(_write(tmp_path, "ec.pub", ec_pub))


def test_pem_public_key_is_accepted(tmp_path: Path) -> None:
    sk = SigningKey.generate()
    pem = ed25519.Ed25519PublicKey.from_public_bytes(sk.public.raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_public_key(_write(tmp_path, "k.pem", pem)) == sk.public


def test_text_round_trip_and_value_semantics() -> None:
    sk = SigningKey.generate()
    text = sk.public.to_text("omega")
    again = PublicKey.from_text(text)
    assert again == sk.public and hash(again) == hash(sk.public)
    assert PublicKey.from_text(text.split(" omega")[0]) == sk.public  # the name is optional
    assert again != SigningKey.generate().public
    with pytest.raises(KeyFileError):
        sk.public.to_text("bad name")


def test_reprs_show_only_the_keyid() -> None:
    sk = SigningKey.generate()
    assert repr(sk) == f"SigningKey(keyid={sk.keyid!r})"
    assert repr(sk.public) == f"PublicKey(keyid={sk.keyid!r})"


def test_verify_never_raises() -> None:
    pk = SigningKey.generate().public
    assert pk.verify(b"", b"data") is False
    assert pk.verify(b"\0" * 64, b"data") is False
    assert pk.verify("not bytes", b"data") is False  # type: ignore[arg-type]


def test_key_errors_are_bundle_errors() -> None:
    assert issubclass(KeyFileError, BundleError)
    assert KeyFileError("x").exit_code == 2
