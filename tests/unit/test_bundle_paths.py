"""Which manifest paths and symlink targets are safe (ashat.bundle.paths), by example and by
property."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ashat.bundle.errors import BundleError, UnsafePath
from ashat.bundle.paths import (
    MAX_SYMLINK_HOPS,
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
