"""``SEQ:HASH``: an audit event's hash recorded outside the store (``deploy audit verify
--at``), so that a rewrite of the chain by a writer of the store is found."""

from __future__ import annotations

import re

from ashat.errors import InvalidInput

_ANCHOR_RE = re.compile(r"([0-9]{1,18}):([0-9a-f]{64})")


def parse_anchor(text: str) -> tuple[int, str]:
    """``(seq, hash)`` of ``SEQ:HASH``. Raises :class:`InvalidInput`."""
    m = _ANCHOR_RE.fullmatch(text.strip())
    if m is None or int(m.group(1)) < 1:
        raise InvalidInput(
            f"--at must be SEQ:HASH, an event's number and its 64-hex hash as an earlier "
            f"`deploy audit verify` printed them, not {text[:90]!r}"
        )
    return int(m.group(1)), m.group(2)
