"""The HTTP client that talks to ashat agents: auth, TLS, timeouts, retries, delta upload.

Every httpx error is turned into one of our own at this boundary (``errors.py``).
"""
