"""hello-service: a small JSON web service on the Python standard library alone.

It is the sample application that ashat deploys in its demo and its tests: a health
route, a tiny items API backed by SQLite, and the usual HTTP security headers.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SERVICE_DIR", "read_version"]

#: The service directory (the release directory when ashat runs it): holds ``VERSION``.
SERVICE_DIR = Path(__file__).resolve().parent.parent


def read_version(service_dir: Path = SERVICE_DIR) -> str:
    """The first line of ``VERSION`` in ``service_dir``, or ``"unknown"`` if unreadable."""
    try:
        text = (service_dir / "VERSION").read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text.splitlines()[0].strip() if text else "unknown"
