"""The one rule for a rollout's waves, which the control side (``[distribution] waves``)
and OMEGA (the rollout request, :mod:`ashat.fleet.rollout`) both apply. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_waves(waves: Sequence[Any]) -> tuple[int, ...]:
    """``waves`` if they are increasing integer percentages ending at 100, else ValueError."""
    if (
        not waves
        or not all(isinstance(w, int) and not isinstance(w, bool) for w in waves)
        or not all(0 < w <= 100 for w in waves)
        or list(waves) != sorted(set(waves))
        or waves[-1] != 100
    ):
        raise ValueError(f"waves must be increasing percentages ending at 100, not {waves!r}")
    return tuple(waves)
