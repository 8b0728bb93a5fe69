"""What the chain of trust adds to an install, on a mainframe and on OMEGA (issue 14).

Run: ``python bench/chain.py`` (a few seconds). It builds a release of 2,000 files signed by
a releaser, PUBLIC's verification statement and k = 3 approvals (ashat Ed25519 keys, and
OpenSSH ``ssh-ed25519`` keys signed by the real ``ssh-keygen -Y sign`` when it is
installed), a root of trust naming them, and OMEGA's directive; then times, in the same
run, the mainframe's ``check_install`` as it was (the release and OMEGA signatures: the
peer) and with the root (the whole chain), and OMEGA's ``check_chain`` alone. Goal: the
chain adds under 10 ms per install for k = 3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ashat.bundle.keys import SigningKey
from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest
from ashat.bundle.sign import sign_manifest
from ashat.fleet.directive import KIND, check_install
from ashat.fleet.envelope import seal
from ashat.trust.chain import check_chain
from ashat.trust.keys import TrustKey, sign_ed25519
from ashat.trust.root import ROOT_NAMESPACE, RoleKeys, Root, load_trusted
from ashat.trust.statements import (
    APPROVAL_NAMESPACE,
    VERIFICATION_NAMESPACE,
    approval_signed,
    digest,
    sign,
    verification_signed,
)

GOAL_MS = 10.0
K = 3
FILES = 2000
NOW = dt.datetime.now(dt.UTC)
SIX = ("health", "modules", "api", "database", "performance", "security")


def ed25519_signer(key: SigningKey) -> Callable[[str, bytes], tuple[str, str]]:
    return lambda ns, msg: (key.keyid, sign_ed25519(key, ns, msg))


def approvers(kind: str, tmp: Path) -> list[tuple[TrustKey, Callable[..., Any]]]:
    out = []
    for i in range(K):
        name = f"approver{i}"
        if kind == "ed25519":
            key = SigningKey.generate()
            out.append((TrustKey.ed25519(key.public, name), ed25519_signer(key)))
        else:
            from ashat.trust.signers import ssh_public_line, ssh_signer

            path = tmp / name
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
            )
            signer, _ = ssh_signer(path)
            out.append((TrustKey.ssh(ssh_public_line(path), name), signer))
    return out


def build(kind: str, tmp: Path) -> dict[str, Any]:
    alpha, verifier, omega, rootkey = (SigningKey.generate() for _ in range(4))
    people = approvers(kind, tmp)
    files = tuple(
        FileEntry(f"src/f{i:05d}.py", hashlib.sha256(str(i).encode()).hexdigest(), 100 + i, 0o644)
        for i in range(FILES)
    )
    m = Manifest(
        schema=SCHEMA, update_id="bench-002", sequence=2, description="bench",
        created_at="2030-01-01T12:00:00+00:00", source={"kind": "dir", "path": "."}, app={},
        files=files,
    )  # fmt: skip
    m = sign_manifest(m, alpha)
    results = [{"name": n, "status": "passed", "summary": "ok"} for n in SIX]
    v = sign(
        verification_signed(
            update_id=m.update_id, sequence=m.sequence, manifest_digest=m.digest(),
            results=results, required=list(SIX), settings={}, verifier="public",
            at="2030-01-01T12:00:00Z",
        ),
        VERIFICATION_NAMESPACE,
        ed25519_signer(verifier),
    )  # fmt: skip
    approvals = [
        sign(
            approval_signed(
                update_id=m.update_id, sequence=m.sequence, manifest_digest=m.digest(),
                verification_digest=digest(v), approver=key.name, at="2030-01-01T12:00:00Z",
                comment=None,
            ),
            APPROVAL_NAMESPACE,
            signer,
        )
        for key, signer in people
    ]  # fmt: skip
    evidence = {"verification": v, "approvals": approvals}
    m = sign_manifest(m, omega, "approval", {"update_id": m.update_id, "evidence": evidence})
    keys = {
        t.keyid: t
        for t in [
            TrustKey.ed25519(rootkey.public, "root"),
            TrustKey.ed25519(alpha.public, "alice"),
            TrustKey.ed25519(verifier.public, "public"),
            TrustKey.ed25519(omega.public, "omega"),
            *(t for t, _ in people),
        ]
    }
    root = Root(
        version=1,
        expires=NOW + dt.timedelta(days=30),
        keys=keys,
        roles={
            "root": RoleKeys((rootkey.keyid,), 1),
            "releasers": RoleKeys((alpha.keyid,), 1),
            "verifiers": RoleKeys((verifier.keyid,), 1),
            "approvers": RoleKeys(tuple(t.keyid for t, _ in people), K),
            "omega": RoleKeys((omega.keyid,), 1),
            "license_issuers": RoleKeys((omega.keyid,), 1),
        },
    )
    root = root.with_signature(
        rootkey.keyid, sign_ed25519(rootkey, ROOT_NAMESPACE, root.signed_bytes())
    )
    root = load_trusted(root.to_bytes(), NOW)
    token = seal(
        KIND,
        {
            "mainframe_id": "mf-1", "rollout_id": "ro-1", "action": "install",
            "update_id": m.update_id, "sequence": m.sequence, "manifest_digest": m.digest(),
            "issued_at": NOW.isoformat(), "expires_at": (NOW + dt.timedelta(minutes=5)).isoformat(),
        },
        omega,
    )  # fmt: skip
    return {
        "manifest": m,
        "bytes": m.to_bytes(),
        "token": token,
        "root": root,
        "alpha": {alpha.keyid: alpha.public},
        "omega": {omega.keyid: omega.public},
        "evidence": evidence,
    }


def median_ms(fn: Callable[[], Any], n: int) -> float:
    fn()  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs of each (median)")
    args = parser.parse_args()
    kinds = ["ed25519"] + (["ssh"] if shutil.which("ssh-keygen") else [])
    ok = True
    with tempfile.TemporaryDirectory(prefix="ashat-bench-chain-") as tmp:
        for kind in kinds:
            (Path(tmp) / kind).mkdir()
            r = build(kind, Path(tmp) / kind)

            def install(root: Root | None, r: dict[str, Any] = r) -> Any:
                return check_install(
                    r["token"], r["bytes"], mainframe_id="mf-1", release_keys=r["alpha"],
                    omega_keys=r["omega"], running=None, now=NOW, root=root,
                )  # fmt: skip

            peer = median_ms(lambda r=r: install(None, r), args.runs)
            full = median_ms(lambda r=r: install(r["root"], r), args.runs)
            omega = median_ms(
                lambda r=r: check_chain(r["root"], r["manifest"], r["evidence"]), args.runs
            )
            added = full - peer
            ok = ok and added < GOAL_MS
            print(
                f"k={K} {kind:<8} mainframe install check: {full:7.2f} ms with the chain, "
                f"{peer:7.2f} ms without (the peer: release + OMEGA signatures), "
                f"+{added:5.2f} ms; OMEGA's chain check {omega:5.2f} ms "
                f"({FILES} files; goal +{GOAL_MS:g} ms: {'met' if added < GOAL_MS else 'MISSED'})"
            )
    if "ssh" not in kinds:
        print("ssh-keygen not installed: the OpenSSH approvers were not measured")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
