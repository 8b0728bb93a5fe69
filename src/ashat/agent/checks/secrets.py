"""Secrets in text: what the Security Scan looks for in each file of a release. No I/O.

Kinds found: ``private_key`` (a PEM ``-----BEGIN … PRIVATE KEY-----`` header),
``aws_access_key_id`` (``AKIA``/``ASIA`` + 16), ``github_token`` (``ghp_``, ``gho_``, ``ghu_``,
``ghs_``, ``ghr_``, ``github_pat_``), ``slack_token`` (``xoxb-``, ``xoxp-``, …), and
``assignment``: a name ending in password, secret, api key, access key or token given a
literal of at least 8 characters — quoted anywhere (``password = "…"``, ``"token": "…"``,
``api_key="…"``), unquoted only in configuration files (``.env``, ``.ini``, YAML, …), where
``SECRET=value`` is a literal rather than an expression.

False positives are kept low on purpose: placeholders (``changeme``, ``<your-token>``,
``${VAR}``, ``{{ var }}``, ``xxxx``, ``****``, the AWS documentation's ``…EXAMPLE`` key),
environment variable names, prose with spaces, single words (one character class, like
``"configured"``) and expressions (``os.environ[...]``) are not literals. A finding carries
the kind, line and a masked ``match`` — never the secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ashat.bundle.keys import PRIVATE_KEY_PEM

MIN_LITERAL_CHARS = 8
MASK = "****"

_PEM = re.compile(PRIVATE_KEY_PEM)
_AWS = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")
_GITHUB = re.compile(
    r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"
    r"(?![A-Za-z0-9_])"
)
_SLACK = re.compile(r"(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,250}")

# A name that ends in one of the secret words (``db_password``, ``SECRET_KEY``, ``apiKey``).
_KEY = (
    r"(?P<key>[A-Za-z0-9_.-]*?"
    r"(?:password|passwd|passphrase|secret|secret[_-]?key|api[_-]?key|access[_-]?key|token))"
    r"(?![A-Za-z0-9_])"
)
_SP = r"[^\S\n]*"  # blanks within one line
_ANNOTATION = rf"(?::{_SP}[A-Za-z_][\w\[\]., |]*?{_SP})?"  # python ``password: str = "..."``
_QUOTED = re.compile(
    rf"""(?<![A-Za-z0-9_.-]){_KEY}["']?{_SP}{_ANNOTATION}[:=]{_SP}"""
    r"""(?:"(?P<dq>[^"\n]*)"|'(?P<sq>[^'\n]*)')""",
    re.IGNORECASE,
)
_BARE = re.compile(
    rf"""^{_SP}(?:export{_SP})?{_KEY}["']?{_SP}[:=]{_SP}(?P<bare>[^\s"'#;,]+){_SP}(?:[#;].*)?$""",
    re.IGNORECASE | re.MULTILINE,
)

CONFIG_SUFFIXES = frozenset(
    {".env", ".ini", ".cfg", ".conf", ".properties", ".yaml", ".yml", ".toml", ".envrc"}
)
_PLACEHOLDER_WORDS = (
    "changeme", "change_me", "change-me", "example", "placeholder", "your", "dummy",
    "redacted", "xxxx", "****", "sample", "fake", "replace", "insert", "...", "{{", "}}",
    "${", "%(", "#{", "<", ">", "environ", "getenv", "process.env",
)  # fmt: skip
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    match: str  # masked: the non-secret prefix or the name, never the value

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "kind": self.kind, "match": self.match}


def is_config_file(path: str) -> bool:
    """Files where ``NAME=value`` without quotes is a literal (dotenv, ini, YAML, …)."""
    p = PurePosixPath(path)
    return p.suffix.lower() in CONFIG_SUFFIXES or p.name.lower().startswith(".env")


def is_placeholder(value: str) -> bool:
    """True for values that are not real secrets: short, templated, example or env names."""
    v = value.strip()
    if len(v) < MIN_LITERAL_CHARS or any(ch.isspace() for ch in v):
        return True
    low = v.lower()
    if any(word in low for word in _PLACEHOLDER_WORDS):
        return True
    if v[0] in "$%{@!&*/~." or len(set(v)) <= 2 or _ENV_NAME.fullmatch(v):
        return True
    # Real secrets mix character classes; one class alone is a word ("configured").
    classes = (str.islower, str.isupper, str.isdigit, lambda ch: not ch.isalnum())
    return sum(any(test(ch) for ch in v) for test in classes) < 2


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def scan_text(text: str, path: str) -> list[Finding]:
    """Every secret in ``text`` (the file at ``path``), one per kind and line, in line order."""
    found: dict[tuple[int, str], Finding] = {}

    def add(offset: int, kind: str, match: str) -> None:
        line = _line_of(text, offset)
        found.setdefault((line, kind), Finding(path, line, kind, match))

    for m in _PEM.finditer(text):
        add(m.start(), "private_key", m.group())  # the header names the key type only
    for m in _AWS.finditer(text):
        if not m.group().endswith("EXAMPLE"):
            add(m.start(), "aws_access_key_id", m.group()[:4] + MASK)
    for m in _GITHUB.finditer(text):
        token = m.group()
        if not is_placeholder(token):
            keep = len("github_pat_") if token.startswith("github_pat_") else 4
            add(m.start(), "github_token", token[:keep] + MASK)
    for m in _SLACK.finditer(text):
        if not is_placeholder(m.group()):
            add(m.start(), "slack_token", m.group()[:5] + MASK)
    token_lines = {line for line, _ in found}
    patterns = (_QUOTED, _BARE) if is_config_file(path) else (_QUOTED,)
    for pattern in patterns:
        for m in pattern.finditer(text):
            groups = m.groupdict()
            value = next(v for v in (groups.get(g) for g in ("dq", "sq", "bare")) if v is not None)
            # ``token = "ghp_…"`` is one secret, already found by its kind.
            if not is_placeholder(value) and _line_of(text, m.start()) not in token_lines:
                add(m.start(), "assignment", f"{m.group('key')}={MASK}")
    return sorted(found.values(), key=lambda f: (f.line, f.kind))
