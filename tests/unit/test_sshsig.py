"""OpenSSH SSHSIG signatures (ashat.trust.sshsig): keys and signatures made by the real
``ssh-keygen`` verify, and every change a forger could make is refused; the FIDO ``sk-``
variants, which need hardware to make with ssh-keygen, are built here byte for byte from
PROTOCOL.u2f and checked both ways (by us, and by ``ssh-keygen -Y check-novalidate``)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ashat.errors import InvalidInput
from ashat.trust.sshsig import (
    SshPublicKey,
    SshSigError,
    signed_data,
    sshsig_key,
    verify_sshsig,
)

NS = "ashat-approval"
MSG = b'{"approver":"bob","update":"u-1"}\n'
SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(
    SSH_KEYGEN is None, reason="ssh-keygen is not installed (Debian: openssh-client)"
)


# --- the wire format, written independently of the module under test ---------------------


def string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def mpint(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return string(b"\0" + raw if raw and raw[0] & 0x80 else raw)


def armor(raw: bytes) -> str:
    b64 = base64.b64encode(raw).decode("ascii")
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return "\n".join(["-----BEGIN SSH SIGNATURE-----", *lines, "-----END SSH SIGNATURE-----"])


def dearmor(text: str) -> bytes:
    return base64.b64decode("".join(text.strip().splitlines()[1:-1]))


def envelope(
    key_blob: bytes, sig_blob: bytes, *, namespace: str = NS, hash_alg: str = "sha512",
    reserved: bytes = b"", magic: bytes = b"SSHSIG", version: int = 1,
) -> bytes:  # fmt: skip
    return (
        magic + version.to_bytes(4, "big") + string(key_blob) + string(namespace.encode())
        + string(reserved) + string(hash_alg.encode()) + string(sig_blob)
    )  # fmt: skip


def fields(raw: bytes) -> list[bytes]:
    """An SSHSIG's string fields: public key, namespace, reserved, hash, signature."""
    assert raw[:6] == b"SSHSIG"
    pos, out = 10, []
    while pos < len(raw):
        n = int.from_bytes(raw[pos : pos + 4], "big")
        out.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def to_signed(namespace: str, message: bytes, hash_alg: str = "sha512") -> bytes:
    digest = hashlib.new(hash_alg, message).digest()
    return (
        b"SSHSIG" + string(namespace.encode()) + string(b"") + string(hash_alg.encode())
        + string(digest)
    )  # fmt: skip


def ecdsa_sig(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return mpint(r) + mpint(s)


# --- security keys (PROTOCOL.u2f), built from cryptography keys ----------------------------

SK_ED = "sk-ssh-ed25519@openssh.com"
SK_EC = "sk-ecdsa-sha2-nistp256@openssh.com"
ED_PRIV = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
EC_PRIV = ec.derive_private_key(0x5EC0_0001_CAFE, ec.SECP256R1())


def point(priv: ec.EllipticCurvePrivateKey) -> bytes:
    n = priv.public_key().public_numbers()
    return b"\x04" + n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")


def sk_key_blob(priv: object, application: bytes = b"ssh:") -> bytes:
    if isinstance(priv, ed25519.Ed25519PrivateKey):
        return (
            string(SK_ED.encode())
            + string(priv.public_key().public_bytes_raw())
            + string(application)
        )
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    return string(SK_EC.encode()) + string(b"nistp256") + string(point(priv)) + string(application)


def sk_sign(
    priv: object, *, message: bytes = MSG, namespace: str = NS, application: bytes = b"ssh:",
    signed_application: bytes | None = None, flags: int = 0x01, counter: int = 42,
    hash_alg: str = "sha512",
) -> str:  # fmt: skip
    """An armored SSHSIG by a security key, exactly as an authenticator + OpenSSH make it."""
    app_hash = hashlib.sha256(
        application if signed_application is None else signed_application
    ).digest()
    tbs = (
        app_hash + bytes([flags]) + counter.to_bytes(4, "big")
        + hashlib.sha256(to_signed(namespace, message, hash_alg)).digest()
    )  # fmt: skip
    if isinstance(priv, ed25519.Ed25519PrivateKey):
        sig = string(SK_ED.encode()) + string(priv.sign(tbs))
    else:
        assert isinstance(priv, ec.EllipticCurvePrivateKey)
        der = priv.sign(tbs, ec.ECDSA(hashes.SHA256()))
        sig = string(SK_EC.encode()) + string(ecdsa_sig(der))
    sig += bytes([flags]) + counter.to_bytes(4, "big")
    return armor(envelope(sk_key_blob(priv, application), sig, namespace=namespace,
                          hash_alg=hash_alg))  # fmt: skip


def sk_public(priv: object, application: bytes = b"ssh:") -> SshPublicKey:
    blob = sk_key_blob(priv, application)
    kind = SK_ED if isinstance(priv, ed25519.Ed25519PrivateKey) else SK_EC
    return SshPublicKey.from_text(f"{kind} {base64.b64encode(blob).decode()} yubi@desk")


# --- the real ssh-keygen ------------------------------------------------------------------


def keygen(tmp: Path, name: str, kind: str, bits: int | None = None) -> tuple[Path, str]:
    assert SSH_KEYGEN is not None
    path = tmp / name
    args = [SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", f"{name}@test", "-f", str(path)]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return path, path.with_name(name + ".pub").read_text()


def sign(tmp: Path, key: Path, message: bytes = MSG, namespace: str = NS, *opts: str) -> str:
    assert SSH_KEYGEN is not None
    n = len(list(tmp.glob("msg-*")))
    file = tmp / f"msg-{n}"
    file.write_bytes(message)
    subprocess.run(
        [SSH_KEYGEN, "-Y", "sign", "-n", namespace, *opts, "-f", str(key), str(file)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )  # fmt: skip
    return file.with_name(file.name + ".sig").read_text()


def ssh_keygen_accepts(tmp: Path, armored: str, message: bytes, namespace: str = NS) -> bool:
    """``ssh-keygen -Y check-novalidate``: is this a valid SSHSIG (any key) for message?"""
    assert SSH_KEYGEN is not None
    sig = tmp / "check.sig"
    sig.write_text(armored)
    done = subprocess.run(
        [SSH_KEYGEN, "-Y", "check-novalidate", "-n", namespace, "-s", str(sig)],
        input=message, capture_output=True,
    )  # fmt: skip
    return done.returncode == 0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    if SSH_KEYGEN is None:
        pytest.skip("ssh-keygen is not installed (Debian: openssh-client)")
    tmp = tmp_path_factory.mktemp("sshkeys")
    return {
        "ed25519": keygen(tmp, "ed", "ed25519"),
        "ecdsa": keygen(tmp, "ec", "ecdsa", 256),
        "ed25519-other": keygen(tmp, "ed2", "ed25519"),
    }


# --- keys made and signatures written by ssh-keygen ---------------------------------------


@needs_ssh_keygen
@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_a_signature_by_ssh_keygen_verifies(keys: dict, kind: str, tmp_path: Path) -> None:
    path, line = keys[kind]
    public = SshPublicKey.from_text(line)
    armored = sign(tmp_path, path)
    verify_sshsig(public, armored, MSG, NS)
    assert sshsig_key(armored) == public
    assert sshsig_key(armored).keyid == public.keyid
    assert public.key_type == line.split()[0] and public.application is None


@needs_ssh_keygen
def test_sha256_signatures_verify_too(keys: dict, tmp_path: Path) -> None:
    path, line = keys["ecdsa"]
    armored = sign(tmp_path, path, MSG, NS, "-O", "hashalg=sha256")
    assert fields(dearmor(armored))[3] == b"sha256"
    verify_sshsig(SshPublicKey.from_text(line), armored, MSG, NS)


@needs_ssh_keygen
@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_another_namespace_message_or_key_is_refused(keys: dict, kind: str, tmp_path: Path) -> None:
    path, line = keys[kind]
    public = SshPublicKey.from_text(line)
    armored = sign(tmp_path, path)
    with pytest.raises(SshSigError, match="namespace"):
        verify_sshsig(public, armored, MSG, "ashat-root")
    with pytest.raises(SshSigError, match="does not verify"):
        verify_sshsig(public, armored, MSG + b" ", NS)
    other = SshPublicKey.from_text(keys["ed25519-other"][1])
    with pytest.raises(SshSigError, match="made by key"):
        verify_sshsig(other, armored, MSG, NS)
    # Signed for another namespace by the right key: refused for this one.
    with pytest.raises(SshSigError, match="namespace"):
        verify_sshsig(public, sign(tmp_path, path, MSG, "ashat-root"), MSG, NS)


@needs_ssh_keygen
@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_a_flipped_byte_in_the_signature_is_refused(keys: dict, kind: str, tmp_path: Path) -> None:
    path, line = keys[kind]
    public = SshPublicKey.from_text(line)
    raw = dearmor(sign(tmp_path, path))
    flipped = armor(raw[:-1] + bytes([raw[-1] ^ 0x01]))  # the last byte of s, or of Ed25519's S
    with pytest.raises(SshSigError):
        verify_sshsig(public, flipped, MSG, NS)
    assert not ssh_keygen_accepts(tmp_path, flipped, MSG)


@needs_ssh_keygen
def test_a_truncated_or_wrong_armor_is_refused(keys: dict, tmp_path: Path) -> None:
    path, line = keys["ed25519"]
    public = SshPublicKey.from_text(line)
    armored = sign(tmp_path, path)
    with pytest.raises(SshSigError, match="END SSH SIGNATURE"):
        verify_sshsig(public, armored[: len(armored) // 2], MSG, NS)
    lines = armored.strip().splitlines()
    with pytest.raises(SshSigError):  # a whole base64 line lost
        verify_sshsig(public, "\n".join(lines[:2] + lines[3:]), MSG, NS)
    with pytest.raises(SshSigError, match="BEGIN SSH SIGNATURE"):
        verify_sshsig(public, armored.replace("SSH SIGNATURE", "PGP SIGNATURE"), MSG, NS)
    with pytest.raises(SshSigError, match="base64"):
        verify_sshsig(public, armored.replace(lines[1][:4], lines[1][:3] + "*", 1), MSG, NS)
    with pytest.raises(SshSigError, match="at most"):
        verify_sshsig(public, armored + " " * 9000, MSG, NS)
    # Surrounding whitespace and CRLF line ends are fine.
    verify_sshsig(public, "\n  " + armored.replace("\n", "\r\n") + "\n\n", MSG, NS)


@needs_ssh_keygen
@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_trailing_garbage_anywhere_is_refused(keys: dict, kind: str, tmp_path: Path) -> None:
    path, line = keys[kind]
    public = SshPublicKey.from_text(line)
    raw = dearmor(sign(tmp_path, path))
    key_blob, namespace, _, hash_alg, sig_blob = fields(raw)
    assert namespace == NS.encode() and hash_alg == b"sha512"
    with pytest.raises(SshSigError, match="trailing"):
        verify_sshsig(public, armor(raw + b"\0"), MSG, NS)
    with pytest.raises(SshSigError, match="trailing"):
        verify_sshsig(public, armor(envelope(key_blob, sig_blob + b"\0")), MSG, NS)
    with pytest.raises(SshSigError, match="trailing"):
        verify_sshsig(public, armor(envelope(key_blob + b"\0", sig_blob)), MSG, NS)
    if kind == "ecdsa":  # inside the inner (mpint r, mpint s) string as well
        sig_type_len = 4 + int.from_bytes(sig_blob[:4], "big")
        inner = sig_blob[sig_type_len + 4 :] + b"\0"
        padded = sig_blob[:sig_type_len] + string(inner)
        with pytest.raises(SshSigError, match="trailing"):
            verify_sshsig(public, armor(envelope(key_blob, padded)), MSG, NS)
    # And the envelope unchanged verifies: the reassembly above is faithful.
    verify_sshsig(public, armor(envelope(key_blob, sig_blob)), MSG, NS)


@needs_ssh_keygen
def test_the_envelope_fields_are_checked(keys: dict, tmp_path: Path) -> None:
    path, line = keys["ed25519"]
    public = SshPublicKey.from_text(line)
    key_blob, _, _, _, sig_blob = fields(dearmor(sign(tmp_path, path)))
    for kwargs, why in [
        ({"magic": b"SSHSIH"}, "magic"),
        ({"version": 2}, "version 2"),
        ({"reserved": b"x"}, "reserved"),
        ({"hash_alg": "md5"}, "hash algorithm"),
    ]:
        with pytest.raises(SshSigError, match=why):
            verify_sshsig(public, armor(envelope(key_blob, sig_blob, **kwargs)), MSG, NS)  # type: ignore[arg-type]
    whole = envelope(key_blob, sig_blob)
    long = armor(whole[: -len(sig_blob) - 4] + (2**31).to_bytes(4, "big") + sig_blob)
    with pytest.raises(SshSigError, match="runs past"):
        verify_sshsig(public, long, MSG, NS)


@needs_ssh_keygen
def test_an_rsa_key_is_refused_by_name(tmp_path: Path) -> None:
    path, line = keygen(tmp_path, "rsa", "rsa", 2048)
    with pytest.raises(SshSigError, match="ssh-rsa") as e:
        SshPublicKey.from_text(line)
    assert isinstance(e.value, InvalidInput) and e.value.kind == "sshsig"
    armored = sign(tmp_path, path)
    with pytest.raises(SshSigError, match="ssh-rsa"):
        sshsig_key(armored)
    ed = SshPublicKey.from_text(keygen(tmp_path, "ed", "ed25519")[1])
    with pytest.raises(SshSigError, match="ssh-rsa"):
        verify_sshsig(ed, armored, MSG, NS)


# --- public key lines ----------------------------------------------------------------------


@needs_ssh_keygen
def test_public_key_lines_round_trip_and_compare_by_blob(keys: dict) -> None:
    line = keys["ed25519"][1]
    key = SshPublicKey.from_text(line)
    assert key.to_text() == line.strip() and key.comment == "ed@test"
    assert SshPublicKey.from_text(key.to_text()) == key
    bare = SshPublicKey.from_text(" ".join(line.split()[:2]))
    assert bare == key and hash(bare) == hash(key) and bare.to_text() == " ".join(line.split()[:2])
    assert key.keyid == hashlib.sha256(key.blob).hexdigest()[:16]
    assert SshPublicKey.from_text(keys["ed25519-other"][1]) != key
    with pytest.raises(SshSigError, match="says"):  # the line's type is not the blob's
        SshPublicKey.from_text(line.replace("ssh-ed25519", "ecdsa-sha2-nistp256", 1))
    with pytest.raises(SshSigError, match="says"):
        SshPublicKey("ecdsa-sha2-nistp256", key.blob)


def test_bad_public_key_lines_are_refused_without_echoing_them() -> None:
    for line, why in [
        ("", "one line"),
        ("ssh-ed25519", "one line"),
        ("ssh-ed25519 AAAA*", "base64"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-dss"),
        ("ssh-ed25519 " + base64.b64encode(string(b"ssh-ed25519") + string(b"x")).decode(), "32"),
        ("ssh-ed25519 AAAA\nssh-ed25519 AAAA", "one line"),
        ("x" * 5000 + " AAAA", "unsupported"),
    ]:
        with pytest.raises(SshSigError, match=why) as e:
            SshPublicKey.from_text(line)
        assert len(e.value.message) < 200
    with pytest.raises(SshSigError, match="at most"):
        SshPublicKey.from_text("ssh-ed25519 " + "A" * 9000)
    bad_point = string(b"ecdsa-sha2-nistp256") + string(b"nistp256") + string(b"\x04" + bytes(64))
    with pytest.raises(SshSigError, match="not on the curve"):
        SshPublicKey("ecdsa-sha2-nistp256", bad_point)


# --- security keys (FIDO): built here from PROTOCOL.u2f ------------------------------------


@pytest.mark.parametrize("priv", [ED_PRIV, EC_PRIV], ids=["sk-ed25519", "sk-ecdsa"])
def test_a_security_key_signature_verifies(priv: object, tmp_path: Path) -> None:
    public = sk_public(priv)
    assert public.application == "ssh:" and public.comment == "yubi@desk"
    assert SshPublicKey.from_text(public.to_text()) == public
    for flags in (0x01, 0x05):  # user present; user present and verified
        armored = sk_sign(priv, flags=flags)
        verify_sshsig(public, armored, MSG, NS)
        assert sshsig_key(armored) == public
    verify_sshsig(public, sk_sign(priv, hash_alg="sha256"), MSG, NS)
    if SSH_KEYGEN is not None:  # the real OpenSSH agrees these are valid SSHSIGs
        assert ssh_keygen_accepts(tmp_path, sk_sign(priv), MSG)
        assert not ssh_keygen_accepts(tmp_path, sk_sign(priv), MSG + b"x")


@pytest.mark.parametrize("priv", [ED_PRIV, EC_PRIV], ids=["sk-ed25519", "sk-ecdsa"])
def test_a_security_key_signature_without_a_touch_is_refused(priv: object) -> None:
    public = sk_public(priv)
    for flags in (0x00, 0x04):  # nothing; user verified but not present
        with pytest.raises(SshSigError, match="user-presence"):
            verify_sshsig(public, sk_sign(priv, flags=flags), MSG, NS)


@pytest.mark.parametrize("priv", [ED_PRIV, EC_PRIV], ids=["sk-ed25519", "sk-ecdsa"])
def test_a_security_key_signature_for_another_application_is_refused(priv: object) -> None:
    public = sk_public(priv)
    with pytest.raises(SshSigError, match="does not verify"):
        verify_sshsig(public, sk_sign(priv, signed_application=b"https://evil"), MSG, NS)
    with pytest.raises(SshSigError, match="made by key"):  # the same key, another application
        verify_sshsig(public, sk_sign(priv, application=b"ssh:other"), MSG, NS)


@pytest.mark.parametrize("priv", [ED_PRIV, EC_PRIV], ids=["sk-ed25519", "sk-ecdsa"])
def test_a_security_key_signature_with_changed_flags_or_counter_is_refused(priv: object) -> None:
    public = sk_public(priv)
    raw = dearmor(sk_sign(priv, flags=0x05, counter=7))
    key_blob, _, _, _, sig_blob = fields(raw)
    for tail in (bytes([0x01]) + (7).to_bytes(4, "big"), bytes([0x05]) + (8).to_bytes(4, "big")):
        forged = armor(envelope(key_blob, sig_blob[:-5] + tail))
        with pytest.raises(SshSigError, match="does not verify"):
            verify_sshsig(public, forged, MSG, NS)
    with pytest.raises(SshSigError, match="runs past"):  # no flags and counter at all
        verify_sshsig(public, armor(envelope(key_blob, sig_blob[:-5])), MSG, NS)


def test_a_signature_type_other_than_the_key_type_is_refused() -> None:
    raw = dearmor(sk_sign(ED_PRIV))
    key_blob, _, _, _, sig_blob = fields(raw)
    sig = string(b"ssh-ed25519") + sig_blob[4 + len(SK_ED) :]
    with pytest.raises(SshSigError, match="type ssh-ed25519 but the key"):
        sshsig_key(armor(envelope(key_blob, sig)))


def test_non_minimal_ecdsa_integers_are_refused(tmp_path: Path) -> None:
    """Plain ecdsa-sha2-nistp256 built here: verifies (and ssh-keygen agrees) when r and s
    are minimal mpints, is refused when one carries a needless leading zero."""
    key_blob = string(b"ecdsa-sha2-nistp256") + string(b"nistp256") + string(point(EC_PRIV))
    public = SshPublicKey("ecdsa-sha2-nistp256", key_blob)
    der = EC_PRIV.sign(to_signed(NS, MSG), ec.ECDSA(hashes.SHA256()))
    good = armor(envelope(key_blob, string(b"ecdsa-sha2-nistp256") + string(ecdsa_sig(der))))
    verify_sshsig(public, good, MSG, NS)
    if SSH_KEYGEN is not None:
        assert ssh_keygen_accepts(tmp_path, good, MSG)
    r, s = decode_dss_signature(der)
    r_raw = r.to_bytes((r.bit_length() + 7) // 8, "big")
    padded = string(b"\0\0" + r_raw) + mpint(s)
    bad = armor(envelope(key_blob, string(b"ecdsa-sha2-nistp256") + string(padded)))
    with pytest.raises(SshSigError, match="leading zero"):
        verify_sshsig(public, bad, MSG, NS)
    negative = string(b"\x80" + bytes(31)) + mpint(s)
    with pytest.raises(SshSigError, match="negative"):
        sshsig_key(armor(envelope(key_blob, string(b"ecdsa-sha2-nistp256") + string(negative))))


def test_signed_data_is_what_protocol_sshsig_says() -> None:
    assert signed_data(NS, "sha512", MSG) == to_signed(NS, MSG, "sha512")
    assert signed_data(NS, "sha256", MSG) == to_signed(NS, MSG, "sha256")
    with pytest.raises(SshSigError):
        signed_data(NS, "md5", MSG)


def test_arguments_of_the_wrong_type_are_refused() -> None:
    public, armored = sk_public(ED_PRIV), sk_sign(ED_PRIV)
    with pytest.raises(SshSigError):
        verify_sshsig(public, armored.encode(), MSG, NS)  # type: ignore[arg-type]
    with pytest.raises(SshSigError):
        verify_sshsig(public, armored, MSG.decode(), NS)  # type: ignore[arg-type]
    with pytest.raises(SshSigError):
        verify_sshsig(public, armored, MSG, "")
    with pytest.raises(SshSigError):
        verify_sshsig(public.to_text(), armored, MSG, NS)  # type: ignore[arg-type]
    with pytest.raises(SshSigError):
        SshPublicKey.from_text(b"ssh-ed25519 AAAA")  # type: ignore[arg-type]


# --- fuzzing: nothing but SshSigError ------------------------------------------------------

_SK_GOOD = {"ed": sk_sign(ED_PRIV), "ec": sk_sign(EC_PRIV)}


def _only_sshsig_errors(armored: str) -> None:
    with contextlib.suppress(SshSigError):
        sshsig_key(armored)
    for priv in (ED_PRIV, EC_PRIV):
        with pytest.raises(SshSigError):
            verify_sshsig(sk_public(priv), armored, MSG, NS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_in_an_armor_raise_only_sshsig_errors(data: bytes, magic: bool) -> None:
    _only_sshsig_errors(armor((b"SSHSIG\0\0\0\x01" if magic else b"") + data))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(_SK_GOOD)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=3),
    st.integers(0, 10_000) | st.none(),
)
def test_mutated_signatures_raise_only_sshsig_errors(
    which: str, flips: list[tuple[int, int]], cut: int | None
) -> None:
    original = dearmor(_SK_GOOD[which])
    raw = bytearray(original)
    for at, xor in flips:
        raw[at % len(raw)] ^= xor
    if cut is not None:
        del raw[cut % len(raw) :]
    assume(bytes(raw) != original)  # two flips of one byte may cancel out
    _only_sshsig_errors(armor(bytes(raw)))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_key_lines_raise_only_sshsig_errors(line: str) -> None:
    with contextlib.suppress(SshSigError):
        SshPublicKey.from_text(line)
