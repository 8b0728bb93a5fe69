"""Task references (``deploy push --task REF``, issue 21): what each kind parses to, and
the ones refused with the forms a reference may take."""

from __future__ import annotations

import pytest

from ashat.errors import InvalidInput
from ashat.workflow.tasks import MAX_TASKS, parse_task, parse_tasks

GH, GL = "https://github.com/acme/shop", "https://gitlab.example.com"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("SHOP-142", {"kind": "jira", "key": "SHOP-142"}),
        (f"{GH}/issues/7", {"kind": "github", "repo": "acme/shop", "number": 7}),
        (f"{GH}/pull/8", {"kind": "github", "repo": "acme/shop", "number": 8}),
        ("acme/shop.web#9", {"kind": "github", "repo": "acme/shop.web", "number": 9}),
        (
            f"{GL}/g/sub/shop/-/issues/3",
            {"kind": "gitlab", "host": GL, "project": "g/sub/shop", "iid": 3},
        ),
        ("RT:4711", {"kind": "other"}),
    ],
)  # fmt: skip
def test_each_kind_of_reference(ref: str, expected: dict[str, object]) -> None:
    assert parse_task(ref) == {"ref": ref, **expected}


@pytest.mark.parametrize(
    "ref",
    ["SHOP-", "SHOP-0", "shop 142", "acme/shop#x", "acme/shop", "https://github.com/acme",
     "https://example.com/x", "https://gitlab.example.com/g/shop/issues/3", "", "#4"],
)  # fmt: skip
def test_a_reference_that_does_not_parse_is_refused_naming_the_forms(ref: str) -> None:
    with pytest.raises(InvalidInput, match="Jira key"):
        parse_task(ref)


def test_duplicates_go_and_there_is_a_limit() -> None:
    assert [t["ref"] for t in parse_tasks(["A-1", "A-1", "B-2"])] == ["A-1", "B-2"]
    with pytest.raises(InvalidInput, match=f"at most {MAX_TASKS}"):
        parse_tasks([f"A-{i}" for i in range(1, MAX_TASKS + 2)])
