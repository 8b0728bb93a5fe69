"""How an upload is cut into packs (ashat.transport.client._plan_packs): every blob once, in
the order of its path, in packs no bigger than the target unless one blob is."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ashat.transport import client
from ashat.transport.client import BlobRef, _plan_packs

sizes = st.lists(st.integers(min_value=0, max_value=300), max_size=60)


@given(sizes=sizes, target=st.integers(min_value=1, max_value=500))
def test_packs_hold_every_blob_once_in_path_order_and_no_more_than_the_target(
    sizes: list[int], target: int
) -> None:
    blobs = [BlobRef(f"{i:064x}", size, Path(f"/tree/f{i:03d}")) for i, size in enumerate(sizes)]
    packs = _plan_packs(list(reversed(blobs)), target)
    assert [b for p in packs for b in p] == blobs and all(packs)
    for i, pack in enumerate(packs):
        size = sum(b.size for b in pack)
        assert size <= target or len(pack) == 1  # a bigger blob goes alone
        if i + 1 < len(packs):  # a pack is cut only where the next blob would not fit
            assert size + packs[i + 1][0].size > target


def test_a_small_upload_is_one_pack_and_a_big_blob_is_a_pack_of_its_own() -> None:
    small = [BlobRef(f"{i:064x}", 1000, Path(f"/t/{i}")) for i in range(3)]
    assert _plan_packs(small, 64 << 20) == [small]
    big = BlobRef("f" * 64, 100 << 20, Path("/t/1a"))
    assert _plan_packs([*small, big], 64 << 20) == [small[:2], [big], small[2:]]


def test_the_meter_counts_a_pack_sent_again_from_zero_and_can_be_silenced() -> None:
    seen: list[tuple[int, int]] = []
    meter = client._Meter(3 * client.PROGRESS_STEP, lambda sent, of: seen.append((sent, of)))
    one, two = meter.counter(0), meter.counter(1)
    assert one is not None and two is not None
    step = client.PROGRESS_STEP
    one(-1)
    one(step)
    two(-1)
    two(step // 2)
    two(-1)  # its request was sent again: its bytes count from 0
    two(step)
    assert seen == [(step, meter.total), (2 * step, meter.total)]  # not 2.5 MiB
    two(step)
    assert seen[-1] == (3 * step, meter.total)
    meter.silence()  # Ctrl-C: a stream still running reports nothing more
    one(step)
    assert len(seen) == 3
    assert client._Meter(10, None).counter(0) is None  # nobody asked: nothing counted
