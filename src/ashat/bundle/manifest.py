"""The release manifest: what a bundle contains, as one canonical, signable JSON document.

A manifest lists every file of a release tree (path, SHA-256, size, permission bits, and
for symlinks the target) plus the release's identity (update id, sequence, source, the
``[app]`` table). Its canonical JSON without ``signatures`` is what ALPHA signs; blobs are
fetched and stored by the SHA-256 it names.

Values are validated at construction, so a :class:`Manifest` in hand is always well formed
(paths safe, no duplicates, symlinks inside the tree); :func:`parse_manifest` adds the
checks only raw bytes need (size limit first, UTF-8, duplicate JSON keys, unknown fields).
It does not check signatures — that is :mod:`ashat.bundle.sign`. Files are kept sorted by
path, so the signed bytes depend only on the tree, not on the order entries arrived in.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NoReturn, cast

from ashat.bundle.errors import (
    BundleError,
    DuplicatePath,
    ManifestInvalid,
    ManifestTooLarge,
    UnsafePath,
)
from ashat.bundle.paths import (
    casefold_collisions,
    escaping_symlinks,
    symlink_target_ok,
    validate_rel_path,
)
from ashat.canonical import canonical_json, canonical_object
from ashat.ids import UPDATE_ID_RE

SCHEMA = 1
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # bytes, checked before parsing
MAX_DESCRIPTION_CHARS = 64 * 1024
MAX_SEQUENCE = 2**63 - 1  # fits a signed 64-bit database column
MAX_SIZE = 2**63 - 1  # bytes
MAX_MODE = 0o7777
MAX_SIG_CHARS = 1024  # an Ed25519 signature is 88 base64 characters

EntryKind = Literal["file", "symlink"]
KINDS: tuple[EntryKind, ...] = ("file", "symlink")

SHA256_RE = re.compile(r"[0-9a-f]{64}")
KEYID_RE = re.compile(r"[0-9a-f]{16}")
ROLE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
GIT_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

_TOP_REQUIRED = frozenset(
    {"schema", "update_id", "sequence", "description", "created_at", "source", "app", "files"}
)
_TOP_OPTIONAL = frozenset({"signatures"})
_ENTRY_REQUIRED = frozenset({"path", "sha256", "size", "mode", "kind"})
_SIG_REQUIRED = frozenset({"role", "keyid", "sig"})
_SOURCE_KEYS = {"dir": frozenset({"kind", "path"}), "git": frozenset({"kind", "commit", "ref"})}
# Who asked for the push, when the releaser key is a server's (``ashat serve``): the user it
# authenticated, a person the chain's no-self-approval rule then knows (trust/chain.py).
_SOURCE_OPTIONAL = frozenset({"pushed_by"})


def _tname(v: Any) -> str:
    return type(v).__name__


def _invalid(message: str, fld: str) -> NoReturn:
    raise ManifestInvalid(message, field=fld)


def _check_int(v: Any, fld: str, lo: int, hi: int, where: str = "manifest") -> int:
    # bool is an int subclass; JSON true must not pass for 1.
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        _invalid(f"{where}: {fld} must be an integer in {lo}..{hi}, got {_tname(v)} {v!r}", fld)
    return v


def _check_str(v: Any, fld: str, where: str = "manifest", max_chars: int = 1024) -> str:
    if not isinstance(v, str):
        _invalid(f"{where}: {fld} must be a string, got {_tname(v)}", fld)
    if len(v) > max_chars:
        _invalid(f"{where}: {fld} is longer than {max_chars} characters", fld)
    return v


def _json_copy(v: Any, fld: str, where: str = "manifest") -> Any:
    """A deep copy of ``v`` as JSON would give it back, so equal manifests compare equal."""
    try:
        return json.loads(canonical_json(v))
    except (ValueError, TypeError, RecursionError) as e:
        _invalid(f"{where}: {fld} is not representable as canonical JSON ({e})", fld)


def _check_keys(obj: Any, required: frozenset[str], optional: frozenset[str], where: str) -> None:
    if type(obj) is dict and obj.keys() == required:
        return  # exactly the required keys: the common case, one set comparison
    if not isinstance(obj, dict):
        _invalid(f"{where} must be a JSON object, got {_tname(obj)}", where)
    missing = sorted(required - obj.keys())
    unknown = sorted(obj.keys() - required - optional)
    if missing:
        _invalid(f"{where} is missing {', '.join(map(repr, missing))}", missing[0])
    if unknown:
        _invalid(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}", unknown[0])


@dataclass(frozen=True)
class FileEntry:
    """One path of the release tree.

    For a regular file ``sha256``/``size`` describe its content (the blob). For a symlink
    they describe the UTF-8 bytes of ``target`` (which is not a blob), so every entry is
    bound by a digest. ``mode`` holds the permission bits only (0..0o7777).
    """

    path: str
    sha256: str
    size: int
    mode: int
    kind: EntryKind = "file"
    target: str | None = None

    def __post_init__(self) -> None:
        validate_rel_path(self.path)
        if (
            self.kind == "file"
            and self.target is None
            and type(self.sha256) is str
            and SHA256_RE.fullmatch(self.sha256)
            and type(self.size) is int
            and 0 <= self.size <= MAX_SIZE
            and type(self.mode) is int
            and 0 <= self.mode <= MAX_MODE
        ):
            return  # a regular file, all well (the common case; the checks below say why not)
        where = f"file {self.path!r}"
        if self.kind not in KINDS:
            _invalid(f"{where}: kind must be 'file' or 'symlink', got {self.kind!r}", "kind")
        if not isinstance(self.sha256, str) or not SHA256_RE.fullmatch(self.sha256):
            _invalid(f"{where}: sha256 must be 64 lowercase hex digits", "sha256")
        _check_int(self.size, "size", 0, MAX_SIZE, where)
        _check_int(self.mode, "mode", 0, MAX_MODE, where)
        if self.kind == "file":
            if self.target is not None:
                _invalid(f"{where}: a regular file has no target", "target")
            return
        if not isinstance(self.target, str):
            _invalid(f"{where}: a symlink needs a string target", "target")
        if not symlink_target_ok(self.path, self.target):
            raise UnsafePath(
                f"symlink {self.path!r} -> {self.target!r} points outside the tree",
                path=self.path,
                target=self.target,
            )
        raw = self.target.encode("utf-8")
        if self.sha256 != hashlib.sha256(raw).hexdigest() or self.size != len(raw):
            _invalid(f"{where}: sha256/size do not match the symlink target", "sha256")

    @classmethod
    def symlink(cls, path: str, target: str, mode: int = 0o777) -> FileEntry:
        """A symlink entry, its digest and size computed from ``target``."""
        try:
            raw = target.encode("utf-8")
        except UnicodeEncodeError as e:
            raise UnsafePath(
                f"symlink {path!r} has an undecodable target", path=path, target=target
            ) from e
        return cls(path, hashlib.sha256(raw).hexdigest(), len(raw), mode, "symlink", target)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "mode": self.mode,
            "kind": self.kind,
        }
        if self.target is not None:
            d["target"] = self.target
        return d

    @classmethod
    def from_dict(cls, obj: Any) -> FileEntry:
        if type(obj) is dict and obj.keys() == _ENTRY_REQUIRED:
            return cls(**obj)  # no target: a regular file (a symlink's kind is refused then)
        _check_keys(obj, _ENTRY_REQUIRED, frozenset({"target"}), "file entry")
        if obj["kind"] == "file" and "target" in obj:
            _invalid(f"file {obj['path']!r}: a regular file has no target", "target")
        return cls(**obj)


@dataclass(frozen=True)
class Signature:
    """One signature over a manifest. ``sig`` is base64 and only checked when verifying.

    ``payload`` (a JSON object) is what an approval signature carries, e.g. the approval
    record; what exactly is signed is :func:`ashat.bundle.sign.signed_message`.
    """

    role: str
    keyid: str
    sig: str
    payload: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or not ROLE_RE.fullmatch(self.role):
            _invalid(f"signature role {self.role!r} must match {ROLE_RE.pattern}", "role")
        if not isinstance(self.keyid, str) or not KEYID_RE.fullmatch(self.keyid):
            _invalid(f"signature keyid {self.keyid!r} must be 16 lowercase hex digits", "keyid")
        _check_str(self.sig, "sig", f"signature by {self.keyid}", MAX_SIG_CHARS)
        if self.payload is not None:
            if not isinstance(self.payload, dict):
                _invalid(f"signature by {self.keyid}: payload must be an object or null", "payload")
            object.__setattr__(self, "payload", _json_copy(self.payload, "payload", "signature"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "keyid": self.keyid, "sig": self.sig}
        if self.payload is not None:
            d["payload"] = copy.deepcopy(self.payload)
        return d

    @classmethod
    def from_dict(cls, obj: Any) -> Signature:
        _check_keys(obj, _SIG_REQUIRED, frozenset({"payload"}), "signature")
        return cls(**obj)


def _check_created_at(v: Any) -> str:
    _check_str(v, "created_at", max_chars=64)
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        _invalid(f"manifest: created_at {v!r} is not an ISO 8601 timestamp", "created_at")
    if t.tzinfo is None:
        _invalid(f"manifest: created_at {v!r} has no timezone", "created_at")
    return v


def _check_source(v: Any) -> None:
    if (
        not isinstance(v, dict)
        or not isinstance(v.get("kind"), str)
        or v["kind"] not in _SOURCE_KEYS
    ):
        _invalid("manifest: source must be an object with kind 'dir' or 'git'", "source")
    _check_keys(v, _SOURCE_KEYS[v["kind"]], _SOURCE_OPTIONAL, "source")
    if "pushed_by" in v:
        _check_str(v["pushed_by"], "source.pushed_by", max_chars=100)
    if v["kind"] == "dir":
        _check_str(v["path"], "source.path", max_chars=4096)
    else:
        if not isinstance(v["commit"], str) or not GIT_COMMIT_RE.fullmatch(v["commit"]):
            _invalid("manifest: source.commit must be a full lowercase hex commit id", "source")
        _check_str(v["ref"], "source.ref", max_chars=1024)


def _check_tree(files: tuple[FileEntry, ...]) -> None:
    """Checks that need the whole list: duplicates, case collisions, parents, symlink chains."""
    by_path: dict[str, FileEntry] = {}
    for e in files:
        if e.path in by_path:
            raise DuplicatePath(f"path {e.path!r} appears more than once", path=e.path)
        by_path[e.path] = e
    for e in files:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            parent = by_path.get("/".join(parts[:i]))
            if parent is None:
                continue
            if parent.kind == "symlink":
                raise UnsafePath(
                    f"path {e.path!r} lies under symlink {parent.path!r}",
                    path=e.path,
                    target=parent.target,
                )
            _invalid(f"path {parent.path!r} is a file but also the parent of {e.path!r}", "files")
    for first, other in casefold_collisions(by_path):
        raise DuplicatePath(
            f"paths {first!r} and {other!r} differ only in case or Unicode normalization "
            "(they collide on case-insensitive filesystems)",
            path=other,
            other=first,
        )
    links = {e.path: e.target for e in files if e.target is not None}
    for p in escaping_symlinks(links):
        raise UnsafePath(
            f"symlink {p!r} -> {links[p]!r} leaves the tree (or loops) when followed",
            path=p,
            target=links[p],
        )


# id -> [a files tuple checked (kept alive), its canonical JSON once asked for, else None]
_CHECKED: dict[int, list[Any]] = {}
_CHECKED_KEPT = 4
_CHECKED_LOCK = threading.Lock()  # an agent builds manifests on several threads


# The paths and symlink targets of the file list checked last: the next release's are most
# often the same (a change of content), and so is then what _check_tree finds (~3 ms of
# 2,000 paths, issue 20).
_LAST_SHAPE: tuple[tuple[str, str | None], ...] = ()


def _slot(files: object) -> list[Any] | None:
    """What is remembered of ``files`` if it is a tuple :func:`_checked_files` returned
    lately (a live object's id is its own); call under ``_CHECKED_LOCK``."""
    slot = _CHECKED.get(id(files))
    return slot if slot is not None and slot[0] is files else None


def _checked_files(given: Any) -> tuple[FileEntry, ...]:
    """``given`` as the sorted, checked tuple a manifest holds. A tuple this function
    returned lately is that already: ``dataclasses.replace`` of a manifest (a new sequence,
    signatures) need not check 2,000 paths again (issue 20)."""
    if type(given) is tuple:
        with _CHECKED_LOCK:
            if _slot(given) is not None:
                return given
    files = tuple(given)
    for e in files:
        if not isinstance(e, FileEntry):
            _invalid(f"manifest: files must hold FileEntry values, got {_tname(e)}", "files")
    files = tuple(sorted(files, key=lambda e: e.path))
    global _LAST_SHAPE
    shape = tuple([(e.path, e.target) for e in files])  # all _check_tree reads (kind: target)
    if shape != _LAST_SHAPE:
        _check_tree(files)
        _LAST_SHAPE = shape
    with _CHECKED_LOCK:
        while len(_CHECKED) >= _CHECKED_KEPT:
            del _CHECKED[next(iter(_CHECKED))]
        _CHECKED[id(files)] = [files, None]
    return files


def _remember_json(files: tuple[FileEntry, ...], data: bytes) -> None:
    """Remember ``data`` as the canonical JSON of ``files`` (a checked tuple)."""
    with _CHECKED_LOCK:
        slot = _slot(files)
        if slot is not None:
            slot[1] = data


def _files_json(files: tuple[FileEntry, ...]) -> bytes:
    """The canonical JSON of ``files`` (a checked tuple), made once per tuple while it is
    remembered: a push signs, replaces and writes one manifest several times, and its 2,000
    entries were most of each serialization (issue 20). An entry read last (the very object,
    :func:`file_entry`) brings its JSON along."""
    with _CHECKED_LOCK:
        slot = _slot(files)
        if slot is not None and slot[1] is not None:
            return cast(bytes, slot[1])
    known = _LAST_ENTRIES
    parts: list[bytes | None] = []
    for e in files:
        hit = known.get((e.path, e.sha256, e.size, e.mode))
        parts.append(hit[1] if hit is not None and hit[0] is e else None)
    unknown = parts.count(None)
    if unknown * 4 > len(parts):  # one serialization of them all is faster then
        data = canonical_json([e.to_dict() for e in files])
    else:
        made = (
            p if p is not None else canonical_json(e.to_dict())
            for p, e in zip(parts, files, strict=True)
        )
        data = b"[" + b",".join(made) + b"]"
    _remember_json(files, data)
    return data


@dataclass(frozen=True)
class Manifest:
    """A release manifest (schema 1). Construction validates; see the module docstring."""

    schema: int
    update_id: str
    sequence: int
    description: str
    created_at: str
    source: dict[str, Any]
    app: dict[str, Any]
    files: tuple[FileEntry, ...]
    signatures: tuple[Signature, ...] = ()
    _signing: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.schema) is not int or self.schema != SCHEMA:
            _invalid(f"manifest: unsupported schema {self.schema!r} (expected {SCHEMA})", "schema")
        if not isinstance(self.update_id, str) or not UPDATE_ID_RE.fullmatch(self.update_id):
            _invalid(f"manifest: invalid update_id {self.update_id!r}", "update_id")
        _check_int(self.sequence, "sequence", 1, MAX_SEQUENCE)
        _check_str(self.description, "description", max_chars=MAX_DESCRIPTION_CHARS)
        _check_created_at(self.created_at)
        _check_source(self.source)
        if not isinstance(self.app, dict):
            _invalid(f"manifest: app must be an object, got {_tname(self.app)}", "app")
        object.__setattr__(self, "source", _json_copy(self.source, "source"))
        object.__setattr__(self, "app", _json_copy(self.app, "app"))

        object.__setattr__(self, "files", _checked_files(self.files))

        sigs = tuple(self.signatures)
        seen: set[tuple[str, str]] = set()
        for s in sigs:
            if not isinstance(s, Signature):
                _invalid(f"manifest: signatures must be Signature values, got {_tname(s)}", "sig")
            if (s.role, s.keyid) in seen:
                _invalid(f"manifest: two {s.role!r} signatures by key {s.keyid}", "signatures")
            seen.add((s.role, s.keyid))
        object.__setattr__(self, "signatures", sigs)

        try:
            signing = canonical_object(self._signing_members())
        except ValueError as e:  # e.g. a lone surrogate in the description
            _invalid(f"manifest is not representable as canonical JSON ({e})", "manifest")
        object.__setattr__(self, "_signing", signing)

    def _signing_members(self) -> dict[str, bytes]:
        """:meth:`signing_dict`'s members, each as canonical JSON."""
        return {
            "schema": canonical_json(self.schema),
            "update_id": canonical_json(self.update_id),
            "sequence": canonical_json(self.sequence),
            "description": canonical_json(self.description),
            "created_at": canonical_json(self.created_at),
            "source": canonical_json(self.source),
            "app": canonical_json(self.app),
            "files": _files_json(self.files),
        }

    def signing_dict(self) -> dict[str, Any]:
        """Everything but ``signatures``: the object whose canonical JSON is signed."""
        return {
            "schema": self.schema,
            "update_id": self.update_id,
            "sequence": self.sequence,
            "description": self.description,
            "created_at": self.created_at,
            "source": copy.deepcopy(self.source),
            "app": copy.deepcopy(self.app),
            "files": [e.to_dict() for e in self.files],
        }

    def to_dict(self) -> dict[str, Any]:
        d = self.signing_dict()
        d["signatures"] = [s.to_dict() for s in self.signatures]
        return d

    def signing_bytes(self) -> bytes:
        return self._signing

    def to_bytes(self) -> bytes:
        """The canonical JSON of :meth:`to_dict`."""
        members = self._signing_members()
        members["signatures"] = canonical_json([s.to_dict() for s in self.signatures])
        return canonical_object(members)

    def digest(self) -> str:
        """SHA-256 hex of :meth:`signing_bytes`: the manifest's identity, signatures aside."""
        return hashlib.sha256(self._signing).hexdigest()

    @property
    def total_size(self) -> int:
        """Bytes of regular-file content (symlinks are not counted)."""
        return sum(e.size for e in self.files if e.kind == "file")

    def blob_digests(self) -> frozenset[str]:
        """The distinct SHA-256 digests of regular files: the blobs a server must hold."""
        return frozenset(e.sha256 for e in self.files if e.kind == "file")

    def with_signature(self, sig: Signature) -> Manifest:
        """A copy with ``sig`` added, replacing any signature of the same role and key."""
        kept = [s for s in self.signatures if (s.role, s.keyid) != (sig.role, sig.keyid)]
        return dataclasses.replace(self, signatures=(*kept, sig))

    def without_signatures(self) -> Manifest:
        return dataclasses.replace(self, signatures=())


def _reject_constant(name: str) -> NoReturn:
    _invalid(f"manifest contains {name}, which is not JSON", "manifest")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            # A second value for a key is how parser differentials hide a field; refuse.
            _invalid(f"manifest has duplicate JSON key {k!r}", k)
        out[k] = v
    return out


def _list(v: Any, fld: str) -> list[Any]:
    if not isinstance(v, list):
        _invalid(f"manifest: {fld} must be a list, got {_tname(v)}", fld)
    return v


def parse_manifest(data: bytes, max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
    """Parse and validate manifest bytes. Signatures are carried, not checked.

    Raises :class:`ManifestTooLarge` (before reading), :class:`ManifestInvalid`,
    :class:`UnsafePath` or :class:`DuplicatePath` — all :class:`BundleError`.
    """
    if len(data) > max_bytes:
        raise ManifestTooLarge(
            f"manifest is {len(data)} bytes, over the limit of {max_bytes}",
            size=len(data),
            limit=max_bytes,
        )
    return _parse(bytes(data))


@functools.lru_cache(maxsize=8)
def _parse(data: bytes) -> Manifest:
    """:func:`parse_manifest` of bytes within the limit, remembered: a mainframe parses the
    same manifest to check a directive and again to stage it (a Manifest is immutable; a
    refusal is not remembered, it is raised each time).

    Canonical bytes (what every ashat writes) are read by the C parser alone: they hold no
    duplicate key, as the canonical form of what it read is the very bytes, and that form
    of its file list is the manifest's own (not made again). Other bytes are read again key
    by key, which refuses a duplicate key and says what else is wrong (a Python hook on
    each of 2,000 entries cost a stage ~5 ms, issue 20)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestInvalid(f"manifest is not UTF-8 (byte {e.start})", field="manifest") from e
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
        members = {k: canonical_json(v) for k, v in obj.items() if k != "files"}
        read = _entries(_list(obj["files"], "files"))
        members["files"] = b"[" + b",".join(read[1]) + b"]"
        if canonical_object(members) == data:
            return _from_object(obj, read, files_json=members["files"])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, BundleError):
        pass  # said below, the careful way
    try:
        obj = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ManifestInvalid(f"manifest is not valid JSON ({e})", field="manifest") from e
    return _from_object(obj)


# The regular-file entries of the manifest read last, by (path, sha256, size, mode), with
# their canonical JSON: the next release shares most of them, and an entry is immutable
# (checking 2,000 entries anew was ~6 ms of each stage, and serializing them again to see
# that the bytes are canonical ~4 ms, issue 20).
_LAST_ENTRIES: dict[tuple[str, str, int, int], tuple[FileEntry, bytes]] = {}


def file_entry(path: str, sha256: str, size: int, mode: int) -> FileEntry:
    """``FileEntry(path, sha256, size, mode)``: the entry read last, if it is that one (a
    build of a tree that changed little need not check 2,000 entries again, nor make their
    JSON; the warm helper reads the manifest last pushed after each push, issue 20)."""
    hit = _LAST_ENTRIES.get((path, sha256, size, mode))
    if hit is not None and type(path) is str and type(size) is int and type(mode) is int:
        return hit[0]
    return FileEntry(path, sha256, size, mode)


_json_str = json.encoder.encode_basestring  # a str as json.dumps(ensure_ascii=False) writes it


def _file_json(d: dict[str, Any]) -> bytes:
    """``canonical_json(d)`` of a regular file's entry whose five members the caller checked
    (the keys of :data:`_ENTRY_REQUIRED`; path and digest a ``str``, size and mode an
    ``int``), written directly: ``json.dumps`` for each of 2,000 entries was ~10 ms of a
    first stage (issue 20). Raises ``ValueError`` where ``canonical_json`` does."""
    path, sha = _json_str(d["path"]).encode(), _json_str(d["sha256"]).encode()
    return b'{"kind":"file","mode":%d,"path":%s,"sha256":%s,"size":%d}' % (
        d["mode"],
        path,
        sha,
        d["size"],
    )


def _entries(given: list[Any]) -> tuple[list[FileEntry], list[bytes]]:
    """``given`` (JSON objects) as entries, and each one's canonical JSON; one equal to an
    entry read last is that entry."""
    known = _LAST_ENTRIES
    out: list[FileEntry] = []
    parts: list[bytes] = []
    for d in given:
        hit = None
        if (
            type(d) is dict
            and d.keys() == _ENTRY_REQUIRED
            and d["kind"] == "file"
            and type(d["path"]) is str
            and type(d["sha256"]) is str
            and type(d["size"]) is int
            and type(d["mode"]) is int
        ):
            hit = known.get((d["path"], d["sha256"], d["size"], d["mode"]))
            if hit is None:
                hit = (FileEntry.from_dict(d), _file_json(d))
        if hit is None:
            hit = (FileEntry.from_dict(d), canonical_json(d))
        out.append(hit[0])
        parts.append(hit[1])
    return out, parts


def _from_object(
    obj: Any,
    read: tuple[list[FileEntry], list[bytes]] | None = None,
    files_json: bytes | None = None,
) -> Manifest:
    """The manifest ``obj`` (parsed JSON) holds. ``read``: :func:`_entries` of its files,
    if made already; ``files_json``: the canonical JSON of ``obj["files"]``, if known."""
    global _LAST_ENTRIES
    _check_keys(obj, _TOP_REQUIRED, _TOP_OPTIONAL, "manifest")
    if type(obj["schema"]) is not int or obj["schema"] != SCHEMA:
        _invalid(f"manifest: unsupported schema {obj['schema']!r} (expected {SCHEMA})", "schema")
    entries, parts = read if read is not None else _entries(_list(obj["files"], "files"))
    sigs = [Signature.from_dict(s) for s in _list(obj.get("signatures", []), "signatures")]
    files = _checked_files(entries)
    if files_json is not None and all(a is b for a, b in zip(files, entries, strict=True)):
        _remember_json(files, files_json)  # in the order given: the very entries' JSON
    m = Manifest(
        schema=obj["schema"],
        update_id=obj["update_id"],
        sequence=obj["sequence"],
        description=obj["description"],
        created_at=obj["created_at"],
        source=obj["source"],
        app=obj["app"],
        files=files,
        signatures=tuple(sigs),
    )
    _LAST_ENTRIES = {
        (e.path, e.sha256, e.size, e.mode): (e, part)
        for e, part in zip(entries, parts, strict=True)
        if e.kind == "file"
    }
    return m
