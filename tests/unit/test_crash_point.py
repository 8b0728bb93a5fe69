"""The crash-point helper: the spec it accepts, the hit it acts on, and the no-op it is unset."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from ashat import faults


def test_unset_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_PLAN", {})
    for _ in range(3):
        faults.crash_point("blob.write")


def test_enospc_on_the_nth_hit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_PLAN", faults._parse("blob.write:2:enospc"))
    monkeypatch.setattr(faults, "_HITS", {})
    faults.crash_point("blob.write")
    faults.crash_point("other.point")
    with pytest.raises(OSError) as info:
        faults.crash_point("blob.write")
    assert info.value.errno == errno.ENOSPC
    faults.crash_point("blob.write")  # the third hit goes through


def test_a_point_named_for_several_hits_acts_at_each(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the last entry for a point was kept: "blob.write:1:enospc,blob.write:3:enospc"
    # failed the third write alone.
    monkeypatch.setattr(faults, "_PLAN", faults._parse("p:1:enospc,q:1,p:3:enospc"))
    monkeypatch.setattr(faults, "_HITS", {})
    failed = []
    for i in range(1, 5):
        try:
            faults.crash_point("p")
        except OSError:
            failed.append(i)
    assert failed == [1, 3]


@pytest.mark.parametrize("spec", ["x", "x:0", "x:-1", "x:1:explode", ":1", "x:one", "x:2,x:2:slow"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="ASHAT_CRASH_AT"):
        faults._parse(spec)


def test_kill_is_sigkill_at_the_named_hit() -> None:
    code = (
        "from ashat.faults import crash_point\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    crash_point('p')\n"
    )
    env = {**os.environ, "ASHAT_CRASH_AT": "q:1,p:3"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9
    assert proc.stdout.split() == ["0", "1", "2"]
