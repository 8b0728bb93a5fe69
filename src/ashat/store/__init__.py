"""Persistence of the control side: deployments, servers, leases and the audit chain.

``db.py`` is the one module that knows SQL dialects; ``store.py`` is the repository the
workflow services use (through the Protocol in ``workflow/ports.py``); ``audit.py`` is the
pure hash-chain logic.
"""
