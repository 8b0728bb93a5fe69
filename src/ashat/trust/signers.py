"""Making trust signatures on the signer's own machine: an ashat key file, or OpenSSH.

A signer is ``(namespace, message) -> (key id, signature)`` (:data:`.statements.Signer`).

- :func:`ed25519_signer` reads an ashat private key (``ashat keys generate --approver``).
- :func:`ssh_signer` runs the real ``ssh-keygen -Y sign -n NAMESPACE -f KEY`` with the
  message on standard input, as ``git`` does for SSH-signed commits. ``KEY`` may be a
  private key file, or a ``.pub`` whose private half sits in ``ssh-agent`` (then the agent
  signs, and a FIDO ``sk-`` key asks for its touch). The key id comes from the public key.

These are the only parts of :mod:`ashat.trust` that touch files or processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ashat.errors import InvalidInput, OperationFailed
from ashat.trust.keys import TrustKey, sign_ed25519
from ashat.trust.statements import Signer

SSH_SIGN_TIMEOUT_S = 120  # a FIDO key waits for a touch


class SignerError(InvalidInput):
    """A signing key that cannot be used (missing, unreadable, of an unknown kind)."""

    kind = "signer"


def ed25519_signer(path: Path) -> tuple[Signer, str]:
    """A signer for an ashat private key file, and its key id. Raises SignerError."""
    from ashat.bundle.errors import KeyFileError
    from ashat.bundle.keys import load_private_key

    try:
        key = load_private_key(path)
    except KeyFileError as e:
        raise SignerError(f"cannot sign with {path}: {e.message}") from e

    def sign(namespace: str, message: bytes) -> tuple[str, str]:
        return key.keyid, sign_ed25519(key, namespace, message)

    return sign, key.keyid


def ssh_public_line(path: Path) -> str:
    """The public key line of an OpenSSH key: ``path`` if it is a ``.pub``, else
    ``path.pub``. Raises SignerError."""
    pub = path if path.suffix == ".pub" else path.with_name(path.name + ".pub")
    try:
        return pub.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SignerError(
            f"cannot read the public half of SSH key {path} ({pub}): "
            "ssh-keygen writes it beside the private key"
        ) from e


def ssh_signer(path: Path) -> tuple[Signer, str]:
    """A signer that runs ``ssh-keygen -Y sign`` with ``path``, and its key id."""
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise SignerError("ssh-keygen is not installed (Debian: openssh-client)")
    keyid = TrustKey.ssh(ssh_public_line(path), "x").keyid
    if not path.exists():
        raise SignerError(f"SSH key {path} does not exist")

    def sign(namespace: str, message: bytes) -> tuple[str, str]:
        try:
            done = subprocess.run(
                [exe, "-q", "-Y", "sign", "-n", namespace, "-f", str(path)],
                input=message,
                capture_output=True,
                timeout=SSH_SIGN_TIMEOUT_S,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise OperationFailed(f"ssh-keygen could not sign with {path}: {e}") from e
        if done.returncode != 0:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OperationFailed(
                f"ssh-keygen could not sign with {path}: {why[-1] if why else 'no reason given'}"
            )
        return keyid, done.stdout.decode("ascii").strip() + "\n"

    return sign, keyid


def signer_for(path: Path) -> tuple[Signer, str]:
    """An ashat key (PEM ``PRIVATE KEY``) or an OpenSSH key (``.pub`` or private file)."""
    try:
        head = path.read_bytes()[:64]
    except OSError as e:
        raise SignerError(f"cannot read signing key {path}: {e.strerror}") from e
    if head.startswith(b"-----BEGIN PRIVATE KEY-----"):
        return ed25519_signer(path)
    if head.startswith((b"-----BEGIN OPENSSH PRIVATE KEY-----", b"ssh-", b"sk-", b"ecdsa-")):
        return ssh_signer(path)
    raise SignerError(
        f"{path} is neither an ashat key (ashat keys generate --approver) nor an OpenSSH key"
    )
