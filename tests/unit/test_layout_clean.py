"""Start-up removes what a crash left half-made: temporary files of atomic writes too."""

from __future__ import annotations

from pathlib import Path

from ashat.agent.layout import Layout


def test_clean_tmp_removes_half_written_state_manifest_and_links(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    leftovers = [
        layout.manifests / ".r7.json.nw77bcm1",  # a manifest being written (write_private)
        layout.root / ".state.json.x1y2z3",
        layout.root / ".fleet.json.a1b2c3",
        layout.tmp / "stage-r7-abcdef",
    ]
    for path in leftovers:
        path.write_text("half")
    (layout.root / ".link-current-abc").symlink_to("releases/r7")
    kept = [layout.manifests / "r6.json", layout.root / "state.json", layout.partial / "ab"]
    layout.partial.mkdir()
    for path in kept:
        path.write_text("whole")
    removed = layout.clean_tmp()
    assert sorted(removed) == sorted(
        [".fleet.json.a1b2c3", ".link-current-abc", ".state.json.x1y2z3",
         "manifests/.r7.json.nw77bcm1", "stage-r7-abcdef"]
    )  # fmt: skip
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in kept)
