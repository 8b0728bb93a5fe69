"""The command-line front ends: ``deploy`` (the seed's verbs) and ``ashat`` (servers, keys, demo).

Heavy modules (httpx, starlette, cryptography, rich) are imported inside the verbs that need
them, so ``deploy status`` starts fast.
"""
