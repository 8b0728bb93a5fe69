"""Which manifest paths and symlink targets are safe (ashat.bundle.paths), by example and by
property."""

from __future__ import annotations

import os
import posixpath
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ashat.bundle.errors import BundleError, UnsafePath
from ashat.bundle.paths import (
    MAX_SYMLINK_HOPS,
    _check_rel_path,
    casefold_collisions,
    escaping_symlinks,
    resolve_in_tree,
    symlink_target_ok,
    validate_rel_path,
)


@pytest.mark.parametrize(
    "p",
    ["a", "a/b/c.txt", ".hidden", "a/.b", "..a", "a..", "dir/é", "e\u0301", "日本/語", "a b", "~"],
)
def test_valid_paths_are_returned(p: str) -> None:
    assert validate_rel_path(p) == p


@pytest.mark.parametrize(
    "p",
    [
        "",
        "/",
        "/etc/passwd",
        "..",
        "../x",
        "a/../../x",
        "a/..",
        ".",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "a\\b",
        "..\\x",
        "a\0b",
        "a\nb",
        "a\x7fb",
        "a\x85b",
        "\ud800",
        "x" * 256,
        "a/" * 2048 + "a",
    ],
)
def test_unsafe_paths_are_refused(p: str) -> None:
    with pytest.raises(UnsafePath) as ei:
        validate_rel_path(p)
    assert isinstance(ei.value, BundleError)
    assert ei.value.exit_code == 2


def test_non_string_path_is_refused() -> None:
    with pytest.raises(UnsafePath):
        validate_rel_path(3)  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_any_accepted_path_is_inside_and_plain(p: str) -> None:
    try:
        validate_rel_path(p)
    except UnsafePath:
        return
    assert not posixpath.isabs(p)
    norm = posixpath.normpath(p)
    assert norm == p  # nothing to normalize away: no '.', '..', '//' or trailing '/'
    assert not norm.startswith("..")
    assert all(ord(c) >= 32 and c != "\x7f" for c in p)


@pytest.mark.parametrize(
    ("link", "target", "ok"),
    [
        ("a", "b", True),
        ("a", "./b", True),
        ("d/a", "../b", True),
        ("d/e/a", "../../b", True),
        ("a", ".", True),
        ("a", "..", False),
        ("a", "../b", False),
        ("d/a", "../../b", False),
        ("d/a", "x/../../../b", False),
        ("a", "/etc/passwd", False),
        ("a", "", False),
        ("a", "b\0c", False),
        ("a", "b\\..\\..", False),
    ],
)
def test_symlink_target_ok(link: str, target: str, ok: bool) -> None:
    assert symlink_target_ok(link, target) is ok


def test_resolve_follows_links_like_the_kernel() -> None:
    # d -> . is harmless alone, but x -> d/.. climbs out of the root through it.
    links = {"d": ".", "x": "d/../etc"}
    assert symlink_target_ok("x", links["x"])  # lexically fine...
    assert resolve_in_tree("x", links) is None  # ...but followed, it escapes
    assert escaping_symlinks(links) == ["x"]


def test_resolve_inside_chains_and_dangling_targets() -> None:
    links = {"a": "b/c", "b": "real", "dangling": "nowhere/x"}
    assert resolve_in_tree("a", links) == "real/c"
    assert resolve_in_tree("dangling", links) == "nowhere/x"
    assert escaping_symlinks(links) == []


def test_loops_and_long_chains_are_refused() -> None:
    assert escaping_symlinks({"a": "b", "b": "a"}) == ["a", "b"]
    chain = {f"l{i}": f"l{i + 1}" for i in range(MAX_SYMLINK_HOPS + 5)}
    assert "l0" in escaping_symlinks(chain)


def test_casefold_collisions() -> None:
    assert casefold_collisions(["a", "b", "c/d"]) == []
    assert casefold_collisions(["README", "readme"]) == [("README", "readme")]
    # Through parent directories, and through Unicode normalization.
    assert casefold_collisions(["A/x", "a/y"]) == [("A", "a")]
    assert casefold_collisions(["\u00e9", "e\u0301"]) == [("e\u0301", "\u00e9")]
    assert casefold_collisions(["same", "same"]) == []


# --- property: what the pure resolution accepts, the kernel keeps inside the tree ---------

_part = st.sampled_from(["a", "b", "c", "d", ".", ".."])
_target = st.lists(_part, min_size=1, max_size=4).map("/".join)
_links = st.dictionaries(st.sampled_from(["a", "b", "d/c", "d/e"]), _target, min_size=1)


@settings(max_examples=150, deadline=None)
@given(_links)
def test_accepted_symlinks_stay_inside_when_the_kernel_follows_them(links: dict[str, str]) -> None:
    """Build the links for real (``d`` a directory) and ask the kernel where each leads: a
    link :func:`escaping_symlinks` lets through never lands outside the root."""
    escaping = set(escaping_symlinks(links))
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.realpath(tmp)
        os.mkdir(os.path.join(root, "d"))
        for path, target in links.items():
            os.symlink(target, os.path.join(root, path))
        for path in links:
            if path in escaping:
                continue
            try:
                landed = os.path.realpath(os.path.join(root, path), strict=False)
            except OSError:  # a loop the kernel gives up on: refused above, never here
                raise AssertionError(f"{path} loops but was accepted: {links}") from None
            assert landed == root or landed.startswith(root + "/"), (path, links, landed)
            inside = resolve_in_tree(path, links)
            assert inside is not None
            assert landed == os.path.normpath(os.path.join(root, inside)), (path, links)


@given(st.text(max_size=40), st.sampled_from(["/srv/r", "/srv/r/", "relative/root"]))
def test_an_accepted_path_joined_under_any_root_stays_under_it(p: str, root: str) -> None:
    try:
        validate_rel_path(p)
    except UnsafePath:
        return
    joined = posixpath.normpath(posixpath.join(root, p))
    assert joined.startswith(posixpath.normpath(root) + "/")


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_an_ascii_path_folds_as_the_unicode_rule_would(p: str) -> None:
    import unicodedata

    from ashat.bundle.paths import _fold

    assert _fold(p) == unicodedata.normalize("NFC", unicodedata.normalize("NFD", p).casefold())


@given(st.text(alphabet="ab./_-+\\\x00é", max_size=24) | st.text(max_size=40))
def test_the_fast_path_accepts_only_what_each_rule_accepts(p: str) -> None:
    """A plain ASCII path is accepted at sight (issue 20); never one a rule refuses."""
    try:
        _check_rel_path(p)
        ruled_ok = True
    except UnsafePath:
        ruled_ok = False
    try:
        validate_rel_path(p)
        ok = True
    except UnsafePath:
        ok = False
    assert ok == ruled_ok
