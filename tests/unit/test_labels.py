"""Issue 19: labels and selectors (ashat/labels.py), pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ashat.labels import (
    LabelError,
    labels_of,
    parse_assignments,
    parse_selector,
)

MF = labels_of(
    {"id": "mf-7", "customer": "ACME", "channel": ["stable", "beta"], "os": "linux"},
    {"ring": "pilot", "site": "paris"},
    {"site": "berlin", "gpu": "yes"},
)


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("*", True),
        ("ring=pilot", True),
        ("ring==pilot", True),
        ("ring=early", False),
        ("ring!=early", True),
        ("ring!=pilot", False),
        ("site=berlin", True),  # set on OMEGA: wins over the license's
        ("site=paris", False),
        ("site in (paris, berlin)", True),
        ("site notin (berlin)", False),
        ("gpu", True),
        ("!gpu", False),
        ("tpu", False),
        ("!tpu", True),
        ("tpu!=x", True),  # a label it does not have is never equal
        ("channel=beta", True),
        ("channel=stable,ring=pilot,os=linux", True),
        ("channel=stable,ring=early", False),
        ("customer=ACME", True),
        ("id in (mf-1,mf-7)", True),
    ],
)
def test_selectors_match_as_documented(selector: str, matches: bool) -> None:
    assert parse_selector(selector).matches(MF) is matches


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        ("ring=", "is not KEY=VALUE"),
        ("Ring=pilot", "label key 'Ring'"),
        ("ring=pi lot", "is not KEY=VALUE"),
        ("site in (berlin", "a '(' without its ')'"),
        ("site in berlin)", "a ')' without its '('"),
        ("site in (a,,b)", "an empty value"),
        ("ring=pilot,", "selector term '' is not"),
        ("ring=-x", "label ring='-x'"),
        ("x" * 1001, "at most 1000"),
    ],
)
def test_a_bad_selector_is_refused_naming_the_term(selector: str, fragment: str) -> None:
    with pytest.raises(LabelError) as e:
        parse_selector(selector)
    assert fragment in str(e.value)


def test_assignments_set_and_remove_but_never_facts() -> None:
    assert parse_assignments(["ring=pilot", "site-"]) == ({"ring": "pilot"}, ["site"])
    for bad, fragment in (
        (["customer=x"], "a fact of the mainframe"),
        (["ring"], "KEY=VALUE to set"),
        (["os-"], "a fact"),
    ):
        with pytest.raises(LabelError, match=fragment):
            parse_assignments(bad)


KEYS = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
VALUES = st.from_regex(r"[A-Za-z0-9]{1,6}", fullmatch=True)


@given(
    st.lists(
        st.tuples(KEYS, st.sampled_from(["in", "notin", "exists", "absent"]),
                  st.frozensets(VALUES, min_size=1, max_size=3)),
        min_size=1, max_size=4,
    ),
    st.dictionaries(KEYS, VALUES, max_size=5),
)  # fmt: skip
def test_a_selector_reads_back_from_its_text(
    terms: list[tuple[str, str, frozenset[str]]], have: dict[str, str]
) -> None:
    from ashat.labels import Requirement, Selector

    sel = Selector(
        tuple(
            Requirement(k, op, vals if op in ("in", "notin") else frozenset())
            for k, op, vals in terms
        )
    )
    again = parse_selector(str(sel))
    labels = labels_of({}, have, {})
    assert again.matches(labels) == sel.matches(labels)
    assert str(parse_selector(str(again))) == str(again)  # one canonical spelling


def test_a_selector_has_one_spelling_whatever_the_order_of_its_terms() -> None:
    one = parse_selector("site in (paris,berlin),ring=pilot,!gpu")
    other = parse_selector("!gpu , ring=pilot, site in (berlin, paris)")
    assert one == other and str(one) == "!gpu,ring=pilot,site in (berlin,paris)"
