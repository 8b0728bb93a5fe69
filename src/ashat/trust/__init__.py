"""The chain of trust: root of trust, signed statements, and the keys people sign with."""
